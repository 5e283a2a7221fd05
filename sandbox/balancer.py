"""The sandbox's load balancer: Debian's HAProxy in front of the app hosts.

`sandbox up` writes `<root>/lb/haproxy.cfg` — a frontend on 127.0.0.1:<lb_port> and one
server per app host (named by its address, e.g. `127.0.0.2`, health-checked on the app's
health path) — and starts HAProxy as a daemon; `sandbox down` stops it. Its runtime API
(`<root>/lb/admin.sock`, 0600) is what `<root>/lb/lbctl` drives: the drain and undrain
hooks of environments/local.yml, as a team's hooks would drive their own balancer.

The balancer is strict on purpose: no retries on another server, no redispatch. A request
sent to a host that cannot answer fails, so a deploy that leaves a host in traffic while
it cannot serve shows up as failed requests (bench/zero_downtime.py, tests/e2e).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from seed.errors import ConfigError

HAPROXY = Path("/usr/sbin/haproxy")
BACKEND = "app"
START_TIMEOUT = 10.0


def haproxy_path() -> Path:
    found = shutil.which("haproxy")
    if found:
        return Path(found)
    if HAPROXY.is_file():
        return HAPROXY
    raise ConfigError(
        "haproxy not found (Debian package haproxy), needed for the sandbox's load "
        "balancer: run `make install-system`"
    )


def backend_address(bind: str) -> str:
    """`host:port` of an APP_BIND value (`127.0.0.2:8765`), checked."""
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"sandbox app host bind {bind!r} is not host:port (APP_BIND)")
    return f"{host}:{port}"


def health_path(url: str) -> str:
    """The path (and query) HAProxy checks, from the app's health URL."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def config_text(lb_port: int, backends: tuple[str, ...], check_path: str, admin: Path) -> str:
    servers = [
        f"    server {addr.rpartition(':')[0]} {addr} check" for addr in sorted(set(backends))
    ]
    return "\n".join(
        [
            "# Written by Seed on every `sandbox up`; edit sandbox/balancer.py instead.",
            "global",
            f"    stats socket {admin} mode 600 level admin",
            "    maxconn 4096",
            "",
            "defaults",
            "    mode http",
            "    timeout connect 5s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout queue 10s",
            "    # a busy app answers its health check late rather than not at all",
            "    timeout check 5s",
            "    # strict: a failed connection is the client's failure, never retried elsewhere",
            "    retries 0",
            "",
            "frontend site",
            f"    bind 127.0.0.1:{lb_port}",
            f"    default_backend {BACKEND}",
            "",
            f"backend {BACKEND}",
            "    balance roundrobin",
            "    option httpchk",
            f"    http-check send meth GET uri {check_path} ver HTTP/1.1 hdr Host localhost",
            "    http-check expect status 200",
            "    # a started app is in within ~0.3 s; a stopped one refuses connections at once",
            "    # (its requests fail: no retries) and is out after three refused checks",
            "    default-server inter 1s fastinter 300ms downinter 300ms rise 1 fall 3",
            *servers,
            "",
        ]
    )


LBCTL = r'''#!/usr/bin/env python3
"""lbctl: the sandbox load balancer's app servers, through HAProxy's runtime API.

  lbctl [--timeout S] drain HOST     no new requests for HOST; returns once its requests
                                    have finished (at most S seconds, default 30)
  lbctl [--timeout S] undrain HOST   HOST back in traffic; returns once HAProxy counts it UP
  lbctl status                       each server: its state and the requests it answers

HOST is the server's name, the app host's address: $SEED_HOST in a Seed hook. drain keeps
a host that is the only one serving in traffic (draining it would take the site down; a
graceful reload keeps it answering) and says so. Exit 0 done, 1 failed, 2 usage.
Written by Seed's `sandbox up`; edit sandbox/balancer.py instead.
"""
import csv
import io
import socket
import sys
import time

SOCKET = __SOCKET__
BACKEND = __BACKEND__
TIMEOUT = [30.0]


def api(command):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        try:
            sock.connect(SOCKET)
        except OSError as exc:
            sys.exit(f"lbctl: the load balancer's API {SOCKET}: {exc} (is the sandbox up?)")
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(chunks).decode()
            chunks.append(data)


def servers():
    text = api("show stat").lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {
        r["svname"]: r
        for r in rows
        if r["pxname"] == BACKEND and r["svname"] not in ("FRONTEND", "BACKEND")
    }


def serving(row):
    return row["status"].startswith("UP") or row["status"] == "no check"


def server(host):
    rows = servers()
    if host not in rows:
        names = ", ".join(sorted(rows)) or "none"
        sys.exit(f"lbctl: no server {host!r} in backend {BACKEND} (servers: {names})")
    return rows


def set_state(host, state):
    answer = api(f"set server {BACKEND}/{host} state {state}").strip()
    if answer:
        sys.exit(f"lbctl: set server {BACKEND}/{host} state {state}: {answer}")


def drain(host):
    rows = server(host)
    if not any(serving(r) for name, r in rows.items() if name != host):
        print(f"lbctl: {host} kept in traffic: no other server is serving")
        return
    set_state(host, "drain")
    deadline = time.monotonic() + TIMEOUT[0]
    while True:
        row = servers()[host]
        if int(row["scur"] or 0) == 0 and int(row["qcur"] or 0) == 0:
            print(f"lbctl: {host} drained")
            return
        if time.monotonic() > deadline:
            sys.exit(f"lbctl: {host} still answers {row['scur']} request(s) after {TIMEOUT[0]:g} s")
        time.sleep(0.05)


def undrain(host):
    server(host)
    set_state(host, "ready")
    deadline = time.monotonic() + TIMEOUT[0]
    while True:
        row = servers()[host]
        if serving(row):
            print(f"lbctl: {host} in traffic")
            return
        if time.monotonic() > deadline:
            sys.exit(
                f"lbctl: {host} is not UP {TIMEOUT[0]:g} s after undrain (status "
                f"{row['status']}: HAProxy's health check fails)"
            )
        time.sleep(0.05)


def status():
    for name, row in sorted(servers().items()):
        print(f"{name:<16} {row['status']:<10} {row['scur']} request(s) now")


def main(argv):
    if argv[1:2] == ["--timeout"] and len(argv) > 2:
        try:
            TIMEOUT[0] = float(argv[2])
        except ValueError:
            print(f"lbctl: --timeout {argv[2]!r} is not a number of seconds", file=sys.stderr)
            return 2
        argv = argv[:1] + argv[3:]
    if argv[1:2] == ["status"] and len(argv) == 2:
        status()
    elif len(argv) == 3 and argv[1] in ("drain", "undrain"):
        (drain if argv[1] == "drain" else undrain)(argv[2])
    else:
        print("usage: lbctl [--timeout S] drain|undrain HOST | lbctl status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''


def lbctl_text(admin: Path) -> str:
    return LBCTL.replace("__SOCKET__", repr(str(admin))).replace("__BACKEND__", repr(BACKEND))


def _haproxy(haproxy: Path, *args: str) -> tuple[bool, str]:
    """Run haproxy with `args`: whether it succeeded, and its last line of output."""
    res = subprocess.run(
        [str(haproxy), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = (res.stderr or res.stdout).strip().splitlines()
    return res.returncode == 0, lines[-1] if lines else f"exit {res.returncode}"


def check_config(haproxy: Path, config: Path) -> None:
    ok, said = _haproxy(haproxy, "-c", "-q", "-f", str(config))
    if not ok:
        raise ConfigError(f"haproxy refused the sandbox balancer's config {config}: {said}")


def start(haproxy: Path, config: Path, pidfile: Path, port: int) -> None:
    """HAProxy as a daemon; returns once it accepts on 127.0.0.1:`port`."""
    pidfile.unlink(missing_ok=True)
    ok, said = _haproxy(haproxy, "-D", "-f", str(config), "-p", str(pidfile))
    if not ok:
        raise ConfigError(
            f"the sandbox's load balancer (haproxy -f {config}) did not start: {said}"
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0 and pidfile.exists():
                return
        time.sleep(0.05)
    raise ConfigError(f"the sandbox's load balancer did not come up on 127.0.0.1:{port}")
