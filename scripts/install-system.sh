#!/usr/bin/env bash
# Install the Debian packages Seed's sandbox and tests need — only those missing.
# (DESIGN: Fresh-machine facts: no sshd, PostgreSQL server binaries off PATH,
# python3 without venv on a bare Debian 12.)
set -euo pipefail

need=()
for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
        need+=(python3-venv)
        break
    fi
done
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v pg_dump >/dev/null 2>&1 || need+=(postgresql-client)
command -v git >/dev/null 2>&1 || need+=(git)
# the sandbox's load balancer in front of its two app hosts
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
# backup.strategy pitr: WAL archiving and physical backups (sandbox.up --pitr)
command -v pgbackrest >/dev/null 2>&1 || need+=(pgbackrest)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "install-system: installing ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "install-system: need root or sudo to install: ${need[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The sandbox runs its own HAProxy; the package's service (where an init starts it) binds
# no port with Debian's default configuration.
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}"
