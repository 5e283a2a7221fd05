"""The environment file's schema, declared once: keys, types, enums, bounds, defaults.

seed.config.environment reads every setting through it (`_Parser.field("backup.format")`
takes the type, the allowed values, the bounds, the default and whether it is required
from here), seed.checks.spec takes its allowed keys from it, and the JSON Schema shipped
for editors (`environments/environment.schema.json`, regenerated with
`.venv/bin/python -m seed.config.schema > environments/environment.schema.json`, checked by
the tests with a real JSON Schema validator) is this same declaration, so the three cannot
drift. Values may be `${VAR}` strings wherever a number or boolean is expected
(interpolated before they are checked). A default that depends on other settings (the
environment's name, `protected`) is written in the parser and said in the description.
"""

from __future__ import annotations

import json
import sys
from typing import Any

VAR = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}


NO_DEFAULT = object()


def _with_default(out: dict[str, Any], default: Any) -> dict[str, Any]:
    if default is not NO_DEFAULT:
        out["default"] = default
    return out


def _s(desc: str, enum: list[str] | None = None, default: Any = NO_DEFAULT) -> dict[str, Any]:
    """A string; null (`key:` with no value) means unset, like leaving the key out."""
    out: dict[str, Any] = {"type": ["string", "null"], "description": desc}
    if enum:
        out["enum"] = [*enum, None]
    return _with_default(out, default)


def _i(
    desc: str,
    minimum: int | None = None,
    default: Any = NO_DEFAULT,
    maximum: int | None = None,
) -> dict[str, Any]:
    num: dict[str, Any] = {"type": "integer"}
    if minimum is not None:
        num["minimum"] = minimum
    if maximum is not None:
        num["maximum"] = maximum
    return _with_default({"description": desc, "anyOf": [num, VAR]}, default)


def _n(desc: str, default: Any = NO_DEFAULT) -> dict[str, Any]:
    """A positive number (seconds, budgets)."""
    num = {"type": "number", "exclusiveMinimum": 0}
    return _with_default({"description": desc, "anyOf": [num, VAR]}, default)


def _b(desc: str, default: Any = NO_DEFAULT) -> dict[str, Any]:
    return _with_default({"description": desc, "anyOf": [{"type": "boolean"}, VAR]}, default)


def _obj(desc: str, props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "description": desc,
        "properties": props,
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    return out


HOST = _s("[user@]host[:port]")
APP_HOST: dict[str, Any] = {
    "type": "object",
    "description": "an app host with its own settings over app.*",
    "properties": {
        "host": HOST,
        "deploy_to": _s("absolute path on this host (default app.deploy_to)"),
        "env": {
            "type": "object",
            "description": "this host's values over app.env",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "health_url": _s("the health URL as this host fetches it (default app.health.url)"),
    },
    "additionalProperties": False,
    "required": ["host"],
}

EXPECT = _obj(
    "what the value must be: exactly one kind (or a plain value: equals)",
    {
        "equals": {"description": "equal to this value"},
        "not_equals": {"description": "different from this value"},
        "==": {"description": "equal to this value"},
        "!=": {"description": "different from this value"},
        "min": {"type": "number", "description": ">="},
        ">=": {"type": "number", "description": ">="},
        "max": {"type": "number", "description": "<="},
        "<=": {"type": "number", "description": "<="},
        "gt": {"type": "number", "description": ">"},
        ">": {"type": "number", "description": ">"},
        "lt": {"type": "number", "description": "<"},
        "<": {"type": "number", "description": "<"},
        "between": {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 2,
            "maxItems": 2,
            "description": "[low, high], inclusive",
        },
        "equals_before": {"const": True, "description": "equal to the before-state's value"},
        "tolerance_pct": {"type": "number", "minimum": 0, "description": "with equals_before"},
        "delta": {"type": "number", "description": "before-state's value plus this"},
        "rows": {"type": "integer", "minimum": 0, "description": "the query returns N rows"},
        "zero_rows": {"const": True, "description": "the query returns no row"},
        "exact_rows": {
            "type": "array",
            "items": {"type": "array"},
            "description": "the query returns exactly these rows",
        },
    },
)

CHECK = _obj(
    "one check: name, when, and exactly one of sql, count, checksum, sample",
    {
        "name": _s("unique name, shown in reports"),
        "when": _s("pre: in the before-state; post (default): after migrate", enum=["pre", "post"]),
        "required": {
            "type": "boolean",
            "default": False,
            "description": "the deploy may not skip this check: one that cannot run while the "
            "app writes (it compares with before) makes the deploy maintenance, not online",
        },
        "sql": _s("a read-only query; its first value (or its rows) is checked"),
        "count": {
            "description": "count(*) of a table, or of a query's rows",
            "anyOf": [
                {"type": "string"},
                _obj("", {"table": _s("schema.table"), "where": _s("SQL condition")}, ("table",)),
                _obj("", {"sql": _s("a query")}, ("sql",)),
            ],
        },
        "checksum": _obj(
            "count + checksum of the table equal to before (primary key included)",
            {
                "table": _s("schema.table"),
                "columns": {"type": "array", "items": {"type": "string"}},
                "except": {"type": "array", "items": {"type": "string"}},
            },
            ("table",),
        ),
        "sample": _obj(
            "random rows read before, the same keys compared after",
            {
                "table": _s("schema.table"),
                "key": _s("key column (default: the single-column primary key)"),
                "size": {"type": "integer", "minimum": 1, "maximum": 100000},
                "compare": {
                    "description": "columns, or {before_column: after SQL expression}",
                    "anyOf": [
                        {"type": "array", "items": {"type": "string"}},
                        {"type": "object", "additionalProperties": {"type": "string"}},
                    ],
                },
            },
            ("table", "compare"),
        ),
        "expect": {
            "description": "for sql and count",
            "anyOf": [EXPECT, {"not": {"type": "object"}}],
        },
    },
    ("name",),
)

INVARIANTS = _obj(
    "built-in post checks (all on by default)",
    {
        "invalid_indexes": {"type": "boolean"},
        "sequences": {"type": "boolean"},
        "not_valid_constraints": {"type": "boolean"},
        "migrate_check": {"type": "boolean"},
        "on_error": _s(
            "an invariant that cannot run (a query error or timeout, the Django checks not "
            "starting): warn (default) reports it as outcome `error` and goes on; fail fails "
            "the deploy (rolled back) and validate (exit 7)",
            enum=["warn", "fail"],
        ),
        "django_check": {
            "description": "manage.py check --deploy: true, false or its options",
            "anyOf": [
                {"type": "boolean"},
                _obj(
                    "",
                    {
                        "fail_level": _s(
                            "DEBUG, INFO, WARNING, ERROR (default), CRITICAL",
                            enum=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                        ),
                        "silence": {"type": "array", "items": {"type": "string"}},
                    },
                ),
            ],
        },
    },
)

HOOK: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "description": "a shell command"},
        _obj(
            "a shell command with its own timeout or place",
            {
                "run": _s("the shell command"),
                "timeout": _n("seconds (default hooks.timeout)"),
                "on": _s(
                    "where it runs: app hosts, the migrate host, the state (db) host, or the "
                    "control machine",
                    enum=["app", "migrate", "db", "local"],
                ),
            },
            ("run",),
        ),
    ]
}
HOOK_LIST = {"anyOf": [HOOK, {"type": "array", "items": HOOK}]}


def _hook_point(what: str) -> dict[str, Any]:
    return _obj(
        f"commands around {what}; a rollback runs them again around undoing it",
        {"before": HOOK_LIST, "after": HOOK_LIST},
    )


HOOKS = _obj(
    "commands before/after steps (SEED_* variables describe the run); a failing hook is a "
    "failed step",
    {
        "timeout": _n("seconds a hook may take; then it is killed and fails", default=300),
        "backup": _hook_point("the backup (on the state host)"),
        "migrate": _hook_point("migrate (on the migrate host)"),
        "switch": _hook_point("the switch of `current` (on every app host)"),
        "restart": _hook_point("the restart (on every app host)"),
        "build": _hook_point("the build (on every app host, before anything switches)"),
        "maintenance_on": _hook_point("maintenance on (on every app host)"),
        "maintenance_off": _hook_point("maintenance off (on every app host)"),
        "notify": {
            **HOOK_LIST,
            "description": "after every run, on the control machine, with SEED_OUTCOME, "
            "SEED_EXIT_CODE, SEED_MESSAGE and SEED_REPORT; a failure is only a warning",
        },
    },
)

ENVIRONMENT = _obj(
    "A Seed environment file (environments/<name>.yml)",
    {
        "extends": _s("another environment file of the directory to lay this one over"),
        "description": _s("shown in output (default: the environment's name)"),
        "protected": _b(
            "upgradedb, rollback, restore ask to type the name (or --yes)", default=False
        ),
        "state_dir": _s(
            "absolute path on the state host: journal, lock record, jobs "
            "(default: /var/lib/seed/<environment>)"
        ),
        "ssh": _obj(
            "how to reach the hosts",
            {
                "user": _s("the deploy user (default: your local user)"),
                "port": _i("default port for every host", 1, default=22),
                "key": _s("private key file (default: ssh-agent and ~/.ssh/id_*)"),
                "known_hosts": _s(
                    "host keys are checked against this file", default="~/.ssh/known_hosts"
                ),
                "gateway": _s(
                    "bastion: [user@]host[:port], or a chain `a,b` as in ProxyJump (each "
                    "hop looked up in ssh.config); wins over the config's ProxyJump"
                ),
                "connect_timeout": _n("seconds", default=10),
                "alive_interval": _n(
                    "seconds between liveness probes on every SSH connection (OpenSSH's "
                    "ServerAliveInterval); also the lock session's heartbeat",
                    default=15,
                ),
                "alive_count": _i(
                    "unanswered probes before a connection counts as dead (OpenSSH's "
                    "ServerAliveCountMax): a dead link is noticed after about "
                    "alive_interval x alive_count seconds",
                    1,
                    default=3,
                ),
                "command_timeout": _n(
                    "seconds a remote command may take unless it is a long one (pg_dump, "
                    "pg_restore, migrate, manage, builds and hooks have their own bounds)",
                    default=300,
                ),
                "config": _s(
                    "OpenSSH client config read per host (HostName, Port, User, IdentityFile, "
                    "ProxyJump, ProxyCommand), if present; `none` to ignore it",
                    default="~/.ssh/config",
                ),
            },
        ),
        "roles": _obj(
            "which host does what",
            {
                "app": {
                    "description": "app hosts: release, venv, restart, health",
                    "anyOf": [
                        HOST,
                        APP_HOST,
                        {"type": "array", "items": {"anyOf": [HOST, APP_HOST]}, "minItems": 1},
                    ],
                },
                "migrate": {**HOST, "description": "exactly one host runs manage.py migrate"},
                "db": {**HOST, "description": "the state host: pg_dump, backups, journal"},
            },
            ("app", "migrate", "db"),
        ),
        "app": _obj(
            "the Django application",
            {
                "repo": _s("any URL or path git can read from the control machine"),
                "ref": _s("default for --ref", default="main"),
                "deploy_to": _s("absolute path on the app hosts"),
                "python": _s("interpreter for the virtualenv", default="python3"),
                "settings": _s("DJANGO_SETTINGS_MODULE"),
                "env": {
                    "type": "object",
                    "description": "written to <deploy_to>/shared/env (0600)",
                    "additionalProperties": {"type": ["string", "number", "boolean"]},
                },
                "keep_releases": _i("old release folders kept", 2, default=5),
                "pip_args": {"type": "array", "items": {"type": "string"}},
                "root": _s(
                    "the repository folder holding manage.py, deployed as the release "
                    "(a project in a subdirectory); default: the repository's top"
                ),
                "shared_dirs": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "folders kept across releases (media, logs): "
                    "<deploy_to>/shared/<dir>, linked into every release",
                },
                "restart": _s("command run in deploy_to after the switch"),
                "reload": _s(
                    "graceful reload (no request lost): code-only deploys use it instead of restart"
                ),
                "build": _s(
                    "run in the new release's folder on every app host before anything "
                    "switches (collectstatic, compilemessages)"
                ),
                "drain": _s("takes this app host out of traffic (code-only deploys, per host)"),
                "undrain": _s("puts this app host back into traffic"),
                "rolling": _obj(
                    "code-only deploys switch the app hosts in batches",
                    {
                        "batch": {
                            "description": "hosts per batch: N, or N% of them (default 1)",
                            "anyOf": [
                                {"type": "integer", "minimum": 1},
                                {"type": "string", "pattern": r"^([0-9]+%?|\$\{.*\})$"},
                            ],
                        }
                    },
                ),
                "maintenance": _obj(
                    "stop/start writes",
                    {"on": _s("stops the app's writes"), "off": _s("starts them again")},
                ),
                "health": _obj(
                    "fetched from each app host after the switch",
                    {
                        "url": _s("http(s) URL as seen from the app host"),
                        "status": _i("expected HTTP status", 100, default=200),
                        "text": _s("expected in the body"),
                        "timeout": _n("seconds", default=10),
                        "release_header": _s(
                            "response header naming the release that answered (its folder "
                            "name): a host counts as switched only once it names the new one"
                        ),
                    },
                    ("url",),
                ),
                "parallel": _i("app hosts worked on at once", 1, default=8),
            },
            ("repo", "deploy_to", "settings"),
        ),
        "db": _obj(
            "the PostgreSQL database",
            {
                "host": _s("as seen from the db and migrate hosts", default="127.0.0.1"),
                "port": _i("port", 1, default=5432),
                "name": _s("database name"),
                "user": _s("the app's role: migrate, checks"),
                "password": _s("use ${VARIABLE}; else a password file"),
                "admin_user": _s("owner/superuser: dump, restore, lock", default="postgres"),
                "admin_password": _s("use ${VARIABLE}; else a password file"),
                "passfile": _s("libpq password file"),
                "access": _s(
                    "tunnel (through the state host) or direct",
                    enum=["tunnel", "direct"],
                    default="tunnel",
                ),
                "lock_timeout": _s("for migrate", default="5s"),
                "lock_retries": _i("migrate retries after a lock timeout", 0, default=3),
                "statement_timeout": _s("for checks", default="60s"),
                "drain_timeout": _n("seconds to wait for app sessions to end", default=10),
                "fingerprint_sessions": _i(
                    "sessions computing table checksums at once", 1, default=1
                ),
            },
            ("name", "user"),
        ),
        "backup": _obj(
            "verified backups",
            {
                "dir": _s("on the state host, 0700 (default: /var/backups/seed/<environment>)"),
                "format": _s("custom or directory", enum=["custom", "directory"], default="custom"),
                "compression": _i("gzip level", 0, default=1, maximum=9),
                "jobs": _i(
                    "parallel jobs (directory format; restores use every core)", 1, default=1
                ),
                "keep": _i("backups kept (never the last good deploy's)", 1, default=10),
                "lock_wait_timeout": _s("pg_dump --lock-wait-timeout", default="30s"),
                "pg_bin": _s("directory of pg_dump/pg_restore/vacuumdb on the state host"),
                "copy": {
                    "description": "an off-host copy of every dump, sha256-checked there, made "
                    "after maintenance off: none; download (to .seed/<env>/backups on the "
                    "control machine); or {host, dir} on another host over Seed's SSH. "
                    "Default when protected: the pgBackRest repository host (backup.dir "
                    "there) when there is one, else download",
                    "anyOf": [
                        {"type": ["string", "null"], "enum": ["none", "download", None]},
                        _obj(
                            "another host",
                            {
                                "host": _s("[user@]host[:port] over Seed's SSH"),
                                "dir": _s("absolute; 0700, files 0600 (default: backup.dir)"),
                            },
                            ("host",),
                        ),
                    ],
                },
                "allow_replication": _b(
                    "restore despite slots/subscriptions/replicas", default=False
                ),
                "strategy": _s(
                    "dump, snapshot+dump, or pitr (pgBackRest: a restore point in the window "
                    "instead of a dump, so the window does not grow with the database)",
                    enum=["dump", "snapshot+dump", "pitr"],
                    default="dump",
                ),
                "pgbackrest": _obj(
                    "pgBackRest for backup.strategy pitr: the stanza, the repository host and "
                    "how Seed runs pgBackRest and the cluster's service there",
                    {
                        "stanza": _s("the stanza of this cluster"),
                        "repo_host": _s(
                            "the repository host, [user@]host[:port] over Seed's SSH: "
                            "`backup` and `info` run there"
                        ),
                        "cipher": _s(
                            "the repository's encryption, checked with `info` at pre-flight",
                            enum=["aes-256-cbc"],
                            default="aes-256-cbc",
                        ),
                        "command": _s(
                            "pgBackRest on the db host, as the cluster's owner "
                            "(e.g. sudo -u postgres pgbackrest)",
                            default="pgbackrest",
                        ),
                        "repo_command": _s(
                            "pgBackRest on the repository host", default="pgbackrest"
                        ),
                        "as_owner": _s(
                            "runs a command as the cluster's owner on the db host, for the "
                            "scratch cluster of `backup --verify-restore`",
                            default="sudo -u postgres",
                        ),
                        "verify_dir": _s(
                            "where `backup --verify-restore` restores its scratch cluster on "
                            "the db host (room for the whole cluster)",
                            default="/var/tmp",
                        ),
                        "stop": _s(
                            "stops the cluster on the db host (e.g. sudo pg_ctlcluster 15 "
                            "main stop)"
                        ),
                        "start": _s(
                            "starts it (e.g. sudo pg_ctlcluster 15 main start): recovery "
                            "to the restore point runs then"
                        ),
                        "max_age": _n(
                            "hours: an older newest backup gets a new one before the window",
                            default=24,
                        ),
                        "type": _s(
                            "the backup taken then: diff, incr or full (full when none yet)",
                            enum=["diff", "incr", "full"],
                            default="diff",
                        ),
                        "archive_timeout": _n(
                            "seconds to wait for the restore point's WAL segment to be archived",
                            default=60,
                        ),
                        "rewind": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "other databases of the cluster a restore may "
                            "rewind with this one (* for any); else such a cluster is refused",
                        },
                        "allow_replicas": _b(
                            "restore although streaming replicas follow the cluster (they "
                            "must be cloned again afterwards)",
                            default=False,
                        ),
                    },
                    ("stanza", "repo_host", "stop", "start"),
                ),
                "snapshot_copy": _s(
                    "file_copy or wal_log", enum=["file_copy", "wal_log"], default="file_copy"
                ),
                "code_only": _s(
                    "deploys without migrations: skip (default) the backup, or take one "
                    "online (from an exported snapshot while the site serves)",
                    enum=["skip", "online"],
                    default="skip",
                ),
            },
        ),
        "checks": {"type": "array", "items": CHECK, "description": "data checks"},
        "invariants": INVARIANTS,
        "hooks": HOOKS,
        "imports": _obj(
            "legacy imports: `fab <env> import-legacy`",
            {
                "compare_with": _s(
                    "environment whose last import into the same table is compared with "
                    "before loading (production: staging); none on record refuses (exit 4)"
                ),
            },
        ),
        "rehearse": _obj(
            "budgets that make `fab <env> rehearse` a gate (over budget: exit 7; exit 4 in "
            "upgradedb's pre-flight)",
            {
                "max_lock_seconds": _n(
                    "longest write-blocking lock (SHARE or stronger) allowed, predicted at scale"
                ),
                "max_total_seconds": _n("all pending migrations, predicted at scale"),
                "scale_from": _s("environment whose row counts the timings are scaled to"),
                "before_upgradedb": _b("rehearse in upgradedb's pre-flight", default=False),
                "cluster": _obj(
                    "another PostgreSQL for the rehearsal's scratch database (same roles and "
                    "passwords as db:): no WAL to production's replicas, no I/O taken from it",
                    {
                        "host": _s("as the state and migrate hosts see it"),
                        "port": _i("port", 1, default=5432),
                    },
                    ("host",),
                ),
            },
        ),
        "lint": _obj(
            "the migration safety gate: `fab <env> lint`, and a pre-flight step of upgradedb",
            {
                "enabled": _b("run it before every upgradedb", default=True),
                "big_table_rows": _i(
                    "a table this big makes squawk's lock/rewrite findings block",
                    0,
                    default=100_000,
                ),
                "exclude": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "rules (squawk's or Seed's) not to check",
                },
                "block": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "rules that always block",
                },
                "waivers": {
                    "type": "array",
                    "description": "let a rule through for one migration, with a reason",
                    "items": _obj(
                        "a waiver",
                        {
                            "migration": _s("app.migration_name"),
                            "rule": _s("the rule's name, or * for every rule"),
                            "reason": _s("why, shown in the report"),
                        },
                        ("migration", "rule", "reason"),
                    ),
                },
            },
        ),
        "digests": _obj(
            "keyed digests (HMAC-SHA256) that stand in for values read from the app's rows "
            "in reports and import records (sampled rows, import keys)",
            {
                "secret": _s(
                    "the team secret keying them (e.g. ${SEED_DIGEST_KEY}): the same in "
                    "environments whose imports are compared; unset: a random key kept on "
                    "the state host (<state_dir>/digest.key, 0600), this environment's alone"
                ),
            },
        ),
        "copy": _obj(
            "anonymized copies of this environment's database (`fab <this> copy-to <target>`)",
            {
                "rules": _s(
                    "masking rules file (relative to the repository root): every table "
                    "classified, every column of a personal-data table masked or kept"
                ),
                "secret": _s(
                    "key of the keyed hash behind `hash` and `fake` (e.g. ${SEED_MASK_KEY}); "
                    "same key, same masked values in every copy"
                ),
                "sample": _i(
                    "original values sampled per masked column and searched for", 1, default=50
                ),
            },
        ),
        "deploy": _obj(
            "how upgradedb runs",
            {
                "mode": _s(
                    "auto (default): code-only when no migration is pending (no maintenance, "
                    "hosts switched in batches), online when every pending migration is "
                    "expand-only and exactly reversible (migrated while the site serves), "
                    "maintenance otherwise; online or maintenance: at least that much safety "
                    "(a mode with less safety than the plan's is refused, with the reason)",
                    enum=["auto", "code-only", "online", "maintenance"],
                    default="auto",
                )
            },
        ),
        "rollback": _obj(
            "how a deploy's database changes are undone",
            {
                "method": _s(
                    "auto (default): reverse the migrations of additive deploys with reversible "
                    "data migrations, restore the backup otherwise; reverse: also other "
                    "reversible operations; restore: always the backup",
                    enum=["auto", "reverse", "restore"],
                    default="auto",
                )
            },
        ),
    },
    ("roles", "app", "db"),
)


def node(path: str) -> dict[str, Any]:
    """The schema of one setting, by its dotted path (`backup.format`, `app.health.url`)."""
    spec = ENVIRONMENT
    for part in path.split("."):
        spec = spec["properties"][part]
    return spec


def required(path: str) -> bool:
    """Whether the setting at `path` must be given (when its section is)."""
    parent, _, key = path.rpartition(".")
    return key in (node(parent) if parent else ENVIRONMENT).get("required", [])


def kind(spec: dict[str, Any]) -> str:
    """string, integer, number or boolean: what a scalar setting holds (`${VAR}` aside)."""
    if "anyOf" in spec:
        return str(spec["anyOf"][0]["type"])
    return "string"


def keys(*path: str) -> set[str]:
    """The keys the schema allows at `path` (e.g. keys("app", "health"))."""
    node = ENVIRONMENT
    for part in path:
        node = node["properties"][part]
    return set(node["properties"])


def check_keys(kind: str | None = None) -> set[str]:
    """Keys of a check (kind None), or of its `count`/`checksum`/`sample` mapping."""
    if kind is None:
        return set(CHECK["properties"])
    node = CHECK["properties"][kind]
    if "anyOf" in node:
        return set().union(*(set(o.get("properties", {})) for o in node["anyOf"]))
    return set(node["properties"])


def expect_keys() -> set[str]:
    return set(EXPECT["properties"])


def document() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://seed.invalid/environment.schema.json",
        "title": "Seed environment file",
        **ENVIRONMENT,
    }


if __name__ == "__main__":
    json.dump(document(), sys.stdout, indent=2)
    sys.stdout.write("\n")
