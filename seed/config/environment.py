"""Load and validate one environment file into a typed `Environment`.

Only the selected file is read, so a broken `production.yml` never breaks
`fab local ...`. Every problem is collected and reported at once, each naming
the file and the key; unknown keys are errors (a typo such as `pasword` must
not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import pwd
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from seed.checks.spec import Check, CheckParser, Invariants
from seed.config import schema
from seed.config.yaml12 import YamlError, line_of, load_yaml12, merge, set_source
from seed.errors import ConfigError

ENV_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
SECRET_NAME_RE = re.compile(r"(?i)secret|passw|token|key|credential|private|auth|salt|dsn")
_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Secret:
    """A string that never shows itself in repr/str, logs or reports."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Host:
    """One SSH target: `[user@]name[:port]` in a role list, defaults from `ssh:`."""

    name: str
    user: str
    port: int
    # taken from `ssh:` defaults (not written in the host entry or in ssh:): an
    # ~/.ssh/config entry for the host may then set them
    user_default: bool = field(default=False, compare=False)
    port_default: bool = field(default=False, compare=False)
    # an app host's own settings (a mapping in roles.app), over app.*: several app
    # instances on one machine, a host that differs (Ansible's host_vars)
    deploy_to: str | None = field(default=None, compare=False)
    env: Mapping[str, Secret] = field(default_factory=dict, compare=False)
    health_url: str | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        return f"{self.user}@{self.name}:{self.port}"


@dataclass(frozen=True)
class SshConfig:
    user: str
    port: int
    key: Path | None
    known_hosts: Path
    gateway: str | None
    connect_timeout: float
    accept_new: bool = False
    config_file: Path | None = None  # an OpenSSH client config read for each host
    user_given: bool = True
    port_given: bool = True  # first contact: add an unknown host's key (never a changed one)
    alive_interval: float = 15.0  # a liveness probe on every connection this often
    alive_count: int = 3  # unanswered probes: the link is dead
    command_timeout: float = 300.0  # a remote command not marked long-running

    @property
    def dead_after(self) -> float:
        """Seconds of silence after which a connection counts as dead."""
        return self.alive_interval * self.alive_count


@dataclass(frozen=True)
class Roles:
    app: tuple[Host, ...]
    migrate: Host
    db: Host
    backup: Host | None = None  # the pgBackRest repository host (backup.pgbackrest.repo_host)
    copy: Host | None = None  # where dumps are copied (backup.copy: {host, dir})

    def all_hosts(self) -> tuple[Host, ...]:
        seen: dict[tuple[str, str, int], Host] = {}
        extra = tuple(h for h in (self.backup, self.copy) if h is not None)
        for host in (*self.app, self.migrate, self.db, *extra):
            seen.setdefault((host.user, host.name, host.port), host)
        return tuple(seen.values())


@dataclass(frozen=True)
class Health:
    url: str
    status: int
    text: str | None
    timeout: float
    release_header: str | None = None  # names the release that answered (its folder name)


@dataclass(frozen=True)
class AppConfig:
    repo: str
    ref: str
    deploy_to: str
    python: str
    settings: str
    env: Mapping[str, Secret]
    keep_releases: int
    pip_args: tuple[str, ...]
    restart: str | None
    maintenance_on: str | None
    maintenance_off: str | None
    health: Health | None
    parallel: int = 8  # app hosts worked on at once (release, switch, restart, health)
    reload: str | None = None  # graceful reload (code-only deploys); None: restart
    build: str | None = None  # in the new release's folder, before anything switches
    drain: str | None = None  # takes one app host out of traffic
    undrain: str | None = None  # puts it back
    rolling_batch: str = "1"  # hosts per batch of a code-only deploy: "N" or "N%"
    shared_dirs: tuple[str, ...] = ()  # release-relative folders linked to shared/<dir>
    root: str = ""  # the repository folder deployed as the release (manage.py's); "" = top

    def batch_size(self, hosts: int) -> int:
        """Hosts per batch of a rolling switch over `hosts` hosts (at least 1)."""
        if self.rolling_batch.endswith("%"):
            return max(1, hosts * int(self.rolling_batch[:-1]) // 100)
        return max(1, int(self.rolling_batch))


# the steps hooks attach to, and where each one's hooks run by default
HOOK_POINTS = {
    "backup": "db",
    "migrate": "migrate",
    "switch": "app",
    "restart": "app",
    "build": "app",
    "maintenance_on": "app",
    "maintenance_off": "app",
}
HOOK_PLACES = ("app", "migrate", "db", "local")


@dataclass(frozen=True)
class Hook:
    """One user command around a step: where it runs and how long it may take."""

    run: str
    timeout: float
    on: str  # app (every app host the step works on) | migrate | db | local (control machine)


@dataclass(frozen=True)
class Hooks:
    """`hooks:` of the environment file: before/after commands per step, and notify."""

    before: Mapping[str, tuple[Hook, ...]] = field(default_factory=dict)
    after: Mapping[str, tuple[Hook, ...]] = field(default_factory=dict)
    notify: tuple[Hook, ...] = ()

    def of(self, when: str, point: str) -> tuple[Hook, ...]:
        return (self.before if when == "before" else self.after).get(point, ())

    def configured(self) -> dict[str, list[str]]:
        """`before_switch: [command, ...]`, for plan and the report."""
        out: dict[str, list[str]] = {}
        for when, table in (("before", self.before), ("after", self.after)):
            for point, hooks in table.items():
                out[f"{when}_{point}"] = [h.run for h in hooks]
        if self.notify:
            out["notify"] = [h.run for h in self.notify]
        return out


@dataclass(frozen=True)
class DbConfig:
    host: str
    port: int
    name: str
    user: str
    password: Secret | None
    admin_user: str
    admin_password: Secret | None
    access: str  # "tunnel" (through the state host) or "direct"
    lock_timeout: str
    lock_retries: int
    statement_timeout: str
    drain_timeout: float
    fingerprint_sessions: int = 1  # sessions computing table checksums in parallel


@dataclass(frozen=True)
class PgBackRestConfig:
    """`backup.pgbackrest:` (strategy pitr): where pgBackRest runs and how (seed.backup.pitr)."""

    stanza: str
    repo_host: Host
    stop: str  # the cluster's service on the db host
    start: str
    cipher: str = "aes-256-cbc"
    command: str = "pgbackrest"  # on the db host, as the cluster's owner
    repo_command: str = "pgbackrest"
    as_owner: str = "sudo -u postgres"  # the scratch cluster of backup --verify-restore
    verify_dir: str = "/var/tmp"
    max_age_hours: float = 24.0
    type: str = "diff"
    archive_timeout: float = 60.0
    rewind: tuple[str, ...] = ()
    allow_replicas: bool = False


@dataclass(frozen=True)
class BackupConfig:
    dir: str
    format: str
    compression: int
    jobs: int
    keep: int
    lock_wait_timeout: str
    pg_bin: str | None = None  # directory of pg_dump/pg_restore on the state host; None: PATH
    copy: str = "none"  # none | download | host: an off-host copy of every dump, sha256-checked
    copy_host: Host | None = None  # copy "host": where (its dir: copy_dir)
    copy_dir: str = ""
    allow_replication: bool = False  # restore (rename swap) despite slots/subscriptions/replicas
    strategy: str = "dump"  # dump | snapshot+dump (a TEMPLATE copy as well) | pitr (pgBackRest)
    snapshot_copy: str = "file_copy"  # file_copy (little WAL, checkpoints) | wal_log
    code_only: str = "skip"  # a deploy without migrations: skip the backup | online
    pgbackrest: PgBackRestConfig | None = None  # strategy pitr

    def tool(self, name: str) -> str:
        """The command for a PostgreSQL client program on the state host."""
        return f"{self.pg_bin.rstrip('/')}/{name}" if self.pg_bin else name


@dataclass(frozen=True)
class Waiver:
    """Let `rule` through for `migration` (`app.name`); `rule` `*` waives every rule."""

    migration: str
    rule: str
    reason: str


@dataclass(frozen=True)
class LintConfig:
    """`lint:` — the migration safety gate (seed/rehearse/lint.py)."""

    enabled: bool = True  # also as a pre-flight step of upgradedb
    big_table_rows: int = 100_000
    exclude: tuple[str, ...] = ()
    block: tuple[str, ...] = ()
    waivers: tuple[Waiver, ...] = ()


@dataclass(frozen=True)
class RehearseConfig:
    """`rehearse:` — budgets that make a rehearsal a gate (seed/rehearse/rehearsal.py)."""

    max_lock_seconds: float | None = None  # a write-blocking lock, predicted at scale
    max_total_seconds: float | None = None  # all pending migrations, predicted at scale
    scale_from: str | None = None  # default --scale-from (e.g. production)
    before_upgradedb: bool = False  # rehearse in upgradedb's pre-flight (over budget: exit 4)
    # another PostgreSQL for the scratch database (host, port as the state and migrate
    # hosts see it; same roles and passwords as db:), so that a rehearsal of production
    # writes no WAL to its replicas and takes no I/O from it
    cluster: tuple[str, int] | None = None


@dataclass(frozen=True)
class ImportsConfig:
    """`imports:` — legacy imports (seed/commands/import_legacy.py)."""

    # an environment whose last import into the same table this one's is compared
    # with before loading (production: staging); without one on record: exit 4
    compare_with: str | None = None


@dataclass(frozen=True)
class DigestsConfig:
    """`digests:` — the key of the digests reports and import records hold instead of
    values read from the app's rows (seed/run/digests.py)."""

    secret: Secret | None = None  # unset: a random key kept on the state host


@dataclass(frozen=True)
class CopyConfig:
    """`copy:` of a source environment: how copies of its database are masked."""

    rules: Path | None = None
    secret: Secret | None = None
    sample: int = 50


@dataclass(frozen=True)
class Environment:
    name: str
    path: Path
    description: str
    protected: bool
    ssh: SshConfig
    roles: Roles
    app: AppConfig
    db: DbConfig
    backup: BackupConfig
    state_dir: str
    checks: tuple[Check, ...] = field(default_factory=tuple)
    invariants: Invariants = field(default_factory=Invariants)
    hooks: Hooks = field(default_factory=Hooks)
    rollback_method: str = "auto"  # auto | reverse | restore (seed/undo/reverse.py)
    deploy_mode: str = "auto"  # auto | code-only | maintenance (seed/deploy/plan.py)
    copy: CopyConfig = field(default_factory=CopyConfig)
    lint: LintConfig = field(default_factory=LintConfig)
    rehearse: RehearseConfig = field(default_factory=RehearseConfig)
    imports: ImportsConfig = field(default_factory=ImportsConfig)
    # the `${VAR}`s that commands (hooks, app.restart, ...) refer to, with their values
    # here: passed to the command's shell on its host privately (Remote.run `private_env`)
    command_env: Mapping[str, Secret | None] = field(default_factory=dict)
    # values the process environment gave that are secrets (see `is_secret`)
    env_secrets: tuple[Secret, ...] = ()
    digests: DigestsConfig = field(default_factory=DigestsConfig)

    @property
    def state_host(self) -> Host:
        return self.roles.db

    def deploy_to_of(self, host: Host) -> str:
        """Where the deployment lives on `host` (its own deploy_to, else app.deploy_to)."""
        return host.deploy_to or self.app.deploy_to

    def app_env_of(self, host: Host) -> dict[str, Secret]:
        """app.env with `host`'s own values over it."""
        return {**self.app.env, **host.env}

    def health_url_of(self, host: Host) -> str:
        """The health URL as `host` itself fetches it."""
        assert self.app.health is not None
        return host.health_url or self.app.health.url

    def command_values(self) -> dict[str, str | None]:
        """The variables commands refer to, with their values, None for one unset here
        (for `Remote.run(private_env=...)`)."""
        return {k: None if v is None else v.reveal() for k, v in self.command_env.items()}

    def secrets(self) -> list[str]:
        """Every secret value, for scrubbing output (longest first).

        Database passwords, and `app.env` values whose name says secret
        (SECRET_KEY, *_PASSWORD, *_TOKEN, ...): the others (ALLOWED_HOSTS) are settings.
        """
        envs = [self.app.env, *(h.env for h in self.roles.app)]
        values = [v.reveal() for e in envs for k, v in e.items() if SECRET_NAME_RE.search(k)]
        given = (
            self.db.password,
            self.db.admin_password,
            self.copy.secret,
            self.digests.secret,
            *self.env_secrets,
        )
        for secret in given:
            if secret is not None:
                values.append(secret.reveal())
                values.append(quote(secret.reveal(), safe=""))  # as in DATABASE_URL
                values.append(shlex.quote(secret.reveal()))  # as in a shell line
        return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


# settings whose text is a shell command run on a host (hooks are too: `hooks.…`)
COMMAND_SETTINGS = frozenset(
    {
        "app.restart",
        "app.reload",
        "app.build",
        "app.drain",
        "app.undrain",
        "app.maintenance.on",
        "app.maintenance.off",
        "backup.pgbackrest.stop",
        "backup.pgbackrest.start",
        "backup.pgbackrest.command",
        "backup.pgbackrest.repo_command",
        "backup.pgbackrest.as_owner",
    }
)
# settings that name places and people (hosts, ports, users, paths, names): a value the
# process environment gave them is shown, as scrubbing it would blank every message
_PLACE_RE = re.compile(
    r"^(ssh\.|roles\.(?!.*\.env\.)|db\.(host|port|name|user|admin_user|access)$|state_dir$|"
    r"backup\.dir$|backup\.pgbackrest\.(stanza|repo_host)$|app\.(deploy_to|python|settings|ref|root|shared_dirs|pip_args|parallel)$|"
    r"description$)"
)


def is_command_setting(where: str) -> bool:
    return where in COMMAND_SETTINGS or (
        where.startswith("hooks.") and where.endswith(("]", "].run"))
    )


def is_secret(where: str, var: str, value: str) -> bool:
    """Whether a value the process environment gave a setting is a secret to the scrubber:
    every one (a token in a hook or in app.repo, a password, an app.env value), except
    what names a place — a host, port, user or path setting, or a number or absolute
    path anywhere — unless its variable's name says secret (…_TOKEN, …_PASSWORD)."""
    if SECRET_NAME_RE.search(var):
        return True
    if _PLACE_RE.match(where):
        return False
    return not (value.isdigit() or value.startswith("/"))


def local_user() -> str | None:
    """The control machine's user name from the uid (not $USER, which CI may not set);
    None for a uid without a passwd entry (a container run with an arbitrary uid)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None


def environments_dir(root: Path | None = None) -> Path:
    """The directory holding `<env>.yml` files: `SEED_ENVIRONMENTS` or `./environments`."""
    override = os.environ.get("SEED_ENVIRONMENTS")
    if override:
        return Path(override)
    return (root or Path.cwd()) / "environments"


def list_environments(directory: Path) -> list[str]:
    """Environment names from file names only (no file is parsed)."""
    if not directory.is_dir():
        return []
    names = []
    for path in sorted(directory.glob("*.yml")):
        if ENV_NAME_RE.match(path.stem):
            names.append(path.stem)
    return names


DEFAULTS_FILE = "_defaults.yml"


def read_mapping(path: Path, what: str = "environment file") -> Any:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = load_yaml12(text)
    except YamlError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return set_source(raw, path.name)


def merged_mapping(name: str, directory: Path | None = None) -> tuple[Any, Path]:
    """`<directory>/<name>.yml` laid over what it extends and `_defaults.yml`, before any
    interpolation, each key keeping its file and line; and the file's path."""
    directory = directory or environments_dir()
    path = directory / f"{name}.yml"
    raw = read_mapping(path)
    layers, seen = [raw], [path.name]
    parent = raw.get("extends")
    while parent is not None:
        if not isinstance(parent, str) or not ENV_NAME_RE.match(parent):
            raise ConfigError(f"{directory / seen[-1]}: extends: expected an environment name")
        if f"{parent}.yml" in seen:
            chain = " -> ".join([*seen, f"{parent}.yml"])
            raise ConfigError(f"{path}: extends: a cycle ({chain})")
        layer = read_mapping(directory / f"{parent}.yml", f"file to extend (from {seen[-1]})")
        layers.append(layer)
        seen.append(f"{parent}.yml")
        parent = layer.get("extends")
    if (directory / DEFAULTS_FILE).is_file():
        layers.append(read_mapping(directory / DEFAULTS_FILE, "defaults file"))
    if len(layers) > 1:
        merged = layers[-1]
        for layer in reversed(layers[:-1]):
            merged = merge(merged, layer)
        raw = merged
        raw.pop("extends", None)
    return raw, path


def load_environment(
    name: str, directory: Path | None = None, unset_ok: bool = False
) -> Environment:
    """Read, interpolate and validate `<directory>/<name>.yml`; ConfigError lists every problem.

    The file is laid over `extends: <other>` (another file of the directory, itself
    possibly extending one) and over `_defaults.yml` when the directory has one:
    mappings merge key by key, lists and values are replaced. `unset_ok`: a `${VAR}` that
    is not set reads as empty instead of being a problem (to show a configuration whose
    secrets this machine does not have).
    """
    raw, path = merged_mapping(name, directory)
    parser = _Parser(path, unset_ok)
    env = parser.environment(name, raw)
    if parser.errors:
        errors = [with_line(raw, e, path.name) for e in parser.errors]
        if len(errors) == 1:
            raise ConfigError(f"{path}: {errors[0]}")
        listing = "; ".join(errors)
        raise ConfigError(f"{path}: {len(errors)} problems: {listing}")
    assert env is not None
    return env


def with_line(raw: Any, error: str, file: str) -> str:
    """`db.pasword: unknown key` → `line 71: db.pasword: unknown key` (the line of the
    deepest part of the key path that is in the file; `_defaults.yml line 3: ...` when
    that part comes from another file)."""
    where = error.split(": ", 1)[0]
    found = line_of(raw, where) if where and " " not in where.split("[")[0] else None
    if found is None:
        return error
    line, source = found
    return f"line {line}: {error}" if source in ("", file) else f"{source} line {line}: {error}"


def interpolate(value: str, lookup: Callable[[str], str | None] = os.environ.get) -> str:
    """Replace `${VAR}` / `${VAR:-default}`; `$$` is a literal `$`. KeyError names a missing VAR."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        var, default = match.group(1), match.group(2)
        found = lookup(var)
        if found is None or (found == "" and default is not None):
            if default is None:
                raise KeyError(var)
            return default
        return found

    return _VAR_RE.sub(replace, value)


T = TypeVar("T")
_MISSING = object()
_SCHEMA = object()  # the default the schema declares


class _Parser:
    """Walks the raw mapping, converting and validating; problems accumulate in `errors`.

    Every setting is read through `field()` (or `value()` for one inside a list), which
    takes its type, allowed values, bounds, default and whether it is required from
    seed.config.schema: the declaration is there once."""

    def __init__(self, path: Path, unset_ok: bool = False) -> None:
        self.path = path
        self.errors: list[str] = []
        self.unset_ok = unset_ok
        # (setting, variable, value) of every `${VAR}` the process environment filled
        self.from_env: list[tuple[str, str, str]] = []
        # the variables commands refer to, and their values (None: unset): they reach the
        # command's shell privately (never pasted into its text, which is argv on the host)
        self.command_vars: dict[str, str | None] = {}

    # -- primitives ---------------------------------------------------------------------------

    def field(self, mapping: dict[str, Any], path: str, default: Any = _SCHEMA) -> Any:
        """The setting at dotted `path` (`backup.format`) of its section `mapping`, checked
        as the schema declares it; `default` overrides the schema's (one that depends on
        other settings)."""
        key = path.rpartition(".")[2]
        return self.value(mapping, key, path, schema.node(path), default, schema.required(path))

    def value(
        self,
        mapping: dict[str, Any],
        key: str,
        where: str,
        spec: dict[str, Any],
        default: Any = _SCHEMA,
        required: bool = False,
    ) -> Any:
        """`mapping[key]` checked against the schema node `spec` (named `where` in errors)."""
        if default is _SCHEMA:
            default = _MISSING if required else spec.get("default")
        kind = schema.kind(spec)
        if kind != "string" and key not in mapping:
            if default is _MISSING:
                self.errors.append(f"{where}: required")
                return None
            return float(default) if kind == "number" and default is not None else default
        if kind == "integer":
            bounds = spec["anyOf"][0]
            return self._int(
                mapping, key, where, default, bounds.get("minimum", 0), bounds.get("maximum")
            )
        if kind == "number":
            return self._float(mapping, key, where, default)
        if kind == "boolean":
            return self._bool(mapping, key, where, default)
        if "enum" in spec:
            choices = tuple(v for v in spec["enum"] if v is not None)
            return self._choice(mapping, key, where, choices, default)
        return self._str(mapping, key, where, default)

    def _section(self, raw: Any, key: str, allowed: set[str], parent: str = "") -> dict[str, Any]:
        value = raw.get(key) if isinstance(raw, dict) else None
        if value is None:
            return {}
        where = f"{parent}.{key}" if parent else key
        if not isinstance(value, dict):
            self.errors.append(f"{where}: expected a mapping")
            return {}
        self._unknown(value, where, allowed)
        return value

    def _unknown(self, mapping: dict[str, Any], prefix: str, allowed: set[str]) -> None:
        for key in mapping:
            if key not in allowed:
                where = f"{prefix}.{key}" if prefix else str(key)
                hint = ", ".join(sorted(allowed))
                self.errors.append(f"{where}: unknown key (expected one of: {hint})")

    def _str(self, mapping: dict[str, Any], key: str, where: str, default: Any = _MISSING) -> Any:
        value = mapping.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                self.errors.append(f"{where}: required")
                return ""
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.errors.append(f"{where}: expected a string")
            return ""
        if is_command_setting(where):
            return self._command(str(value), where)
        return self._interp(str(value), where)

    def _command(self, value: str, where: str) -> str:
        """A shell command setting: its `${VAR}`s checked (an unset one without a default is
        a problem) and left for the host's shell to expand from the values passed with
        the command, `$$` made `$`. Pasted in, a token would be part of the command line,
        which `ps` shows on the host."""
        self._interp(value, where)
        for match in _VAR_RE.finditer(value):
            if match.group(1):  # unset here: unset there too (the host's own is not meant)
                self.command_vars[match.group(1)] = os.environ.get(match.group(1))
        return _VAR_RE.sub(lambda m: "$" if m.group(0) == "$$" else m.group(0), value)

    def _interp(self, value: str, where: str) -> str:
        def lookup(name: str) -> str | None:
            found = os.environ.get(name)
            if found:
                self.from_env.append((where, name, found))
            return "" if found is None and self.unset_ok else found

        try:
            return interpolate(value, lookup)
        except KeyError as exc:
            self.errors.append(
                f"{where}: environment variable {exc.args[0]} is not set "
                f"(export it, or write ${{{exc.args[0]}:-default}})"
            )
            return ""

    def _int(
        self,
        mapping: dict[str, Any],
        key: str,
        where: str,
        default: int,
        lo: int = 0,
        hi: int | None = None,
    ) -> int:
        value = mapping.get(key, default)
        if isinstance(value, str):
            value = self._interp(value, where)
            try:
                value = int(value)
            except ValueError:
                self.errors.append(f"{where}: expected an integer, got {value!r}")
                return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors.append(f"{where}: expected an integer")
            return default
        if value < lo:
            self.errors.append(f"{where}: must be >= {lo}")
            return default
        if hi is not None and value > hi:
            self.errors.append(f"{where}: must be <= {hi}")
            return default
        return int(value)

    def _float(self, mapping: dict[str, Any], key: str, where: str, default: float) -> float:
        value = mapping.get(key, default)
        if isinstance(value, str):
            value = self._interp(value, where)
            try:
                value = float(value)
            except ValueError:
                self.errors.append(f"{where}: expected a positive number, got {value!r}")
                return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            self.errors.append(f"{where}: expected a positive number")
            return default
        return float(value)

    def _bool(self, mapping: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = mapping.get(key, default)
        if isinstance(value, str):
            text = self._interp(value, where).strip().lower()
            if text in ("true", "false"):
                return text == "true"
            self.errors.append(f"{where}: expected true or false, got {value!r}")
            return default
        if not isinstance(value, bool):
            self.errors.append(f"{where}: expected true or false")
            return default
        return value

    def _choice(
        self, mapping: dict[str, Any], key: str, where: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = self._str(mapping, key, where, default)
        if value not in choices:
            self.errors.append(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
            return default
        return str(value)

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        if not path.is_absolute():
            # relative paths in an environment file are relative to the repository root
            path = self.path.parent.parent / path
        return path

    # -- sections -----------------------------------------------------------------------------

    def environment(self, name: str, raw: dict[str, Any]) -> Environment | None:
        if not ENV_NAME_RE.match(name):
            self.errors.append(f"environment name {name!r} must match {ENV_NAME_RE.pattern}")
        self._unknown(raw, "", schema.keys())
        ssh = self.ssh(raw)
        roles = self.roles(raw, ssh)
        app = self.app(raw)
        db = self.db(raw)
        backup = self.backup(raw, name, raw.get("protected") is True, ssh)
        parser = CheckParser(self.errors)
        checks = parser.checks(raw.get("checks"), source=str(self.path))
        invariants = parser.invariants(raw.get("invariants"))
        hooks = self.hooks(raw)
        rb = self._section(raw, "rollback", schema.keys("rollback"))
        method = self.field(rb, "rollback.method")
        dp = self._section(raw, "deploy", schema.keys("deploy"))
        mode = self.field(dp, "deploy.mode")
        copy = self.copy(raw)
        lint = self.lint(raw)
        rehearse = self.rehearse(raw)
        imports = self.imports(raw, name)
        digests = self._section(raw, "digests", schema.keys("digests"))
        digest_secret = self.field(digests, "digests.secret")
        state_dir = self.field(raw, "state_dir", f"/var/lib/seed/{name}")
        if state_dir and not str(state_dir).startswith("/"):
            self.errors.append("state_dir: must be an absolute path on the state host")
        if roles is None:
            return None
        if backup.pgbackrest is not None and backup.strategy == "pitr":
            roles = dataclasses.replace(roles, backup=backup.pgbackrest.repo_host)
        if backup.copy_host is not None:
            roles = dataclasses.replace(roles, copy=backup.copy_host)
        return Environment(
            name=name,
            path=self.path,
            description=str(self.field(raw, "description", name)),
            protected=self.field(raw, "protected"),
            ssh=ssh,
            roles=roles,
            app=app,
            db=db,
            backup=backup,
            state_dir=str(state_dir),
            checks=checks,
            invariants=invariants,
            hooks=hooks,
            rollback_method=method,
            deploy_mode=mode,
            copy=copy,
            lint=lint,
            rehearse=rehearse,
            imports=imports,
            command_env={k: None if v is None else Secret(v) for k, v in self.command_vars.items()},
            env_secrets=tuple(
                Secret(value) for where, var, value in self.from_env if is_secret(where, var, value)
            ),
            digests=DigestsConfig(Secret(str(digest_secret)) if digest_secret else None),
        )

    def imports(self, raw: dict[str, Any], name: str) -> ImportsConfig:
        section = self._section(raw, "imports", schema.keys("imports"))
        other = self.field(section, "imports.compare_with")
        if other is not None and (not ENV_NAME_RE.match(str(other)) or other == name):
            self.errors.append(
                "imports.compare_with: expected the name of another environment (e.g. staging)"
            )
            other = None
        return ImportsConfig(compare_with=str(other) if other else None)

    def rehearse(self, raw: dict[str, Any]) -> RehearseConfig:
        section = self._section(raw, "rehearse", schema.keys("rehearse"))
        budgets = {
            key: self.field(section, f"rehearse.{key}")
            for key in ("max_lock_seconds", "max_total_seconds")
        }
        scale_from = self.field(section, "rehearse.scale_from")
        if scale_from is not None and not ENV_NAME_RE.match(str(scale_from)):
            self.errors.append("rehearse.scale_from: expected an environment name")
            scale_from = None
        cluster = None
        spec = self._section(section, "cluster", schema.keys("rehearse", "cluster"), "rehearse")
        if spec:
            host = str(self.field(spec, "rehearse.cluster.host"))
            port = self.field(spec, "rehearse.cluster.port")
            cluster = (host, port)
        return RehearseConfig(
            cluster=cluster,
            max_lock_seconds=budgets["max_lock_seconds"],
            max_total_seconds=budgets["max_total_seconds"],
            scale_from=str(scale_from) if scale_from else None,
            before_upgradedb=self.field(section, "rehearse.before_upgradedb"),
        )

    def lint(self, raw: dict[str, Any]) -> LintConfig:
        section = self._section(raw, "lint", schema.keys("lint"))
        names: dict[str, tuple[str, ...]] = {}
        for key in ("exclude", "block"):
            value = section.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                self.errors.append(f"lint.{key}: expected a list of rule names")
                value = []
            names[key] = tuple(value)
        waivers = []
        waiver = schema.node("lint.waivers")["items"]
        items = section.get("waivers") or []
        if not isinstance(items, list):
            self.errors.append("lint.waivers: expected a list of {migration, rule, reason}")
            items = []
        for i, item in enumerate(items):
            where = f"lint.waivers[{i}]"
            if not isinstance(item, dict):
                self.errors.append(f"{where}: expected a mapping with migration, rule, reason")
                continue
            self._unknown(item, where, set(waiver["properties"]))
            values = [
                str(self.value(item, k, f"{where}.{k}", waiver["properties"][k], required=True))
                for k in ("migration", "rule", "reason")
            ]
            reason = values[2].strip()
            if not reason and "reason" in item:
                self.errors.append(f"{where}.reason: say why the rule may be broken here")
            waivers.append(Waiver(values[0], values[1], reason))
        return LintConfig(
            enabled=self.field(section, "lint.enabled"),
            big_table_rows=self.field(section, "lint.big_table_rows"),
            exclude=names["exclude"],
            block=names["block"],
            waivers=tuple(waivers),
        )

    def copy(self, raw: dict[str, Any]) -> CopyConfig:
        section = self._section(raw, "copy", schema.keys("copy"))
        rules = self.field(section, "copy.rules")
        secret = self.field(section, "copy.secret")
        return CopyConfig(
            rules=self._path(str(rules)) if rules else None,
            secret=Secret(str(secret)) if secret else None,
            sample=self.field(section, "copy.sample"),
        )

    def hooks(self, raw: dict[str, Any]) -> Hooks:
        h = self._section(raw, "hooks", schema.keys("hooks"))
        default_timeout = self.field(h, "hooks.timeout")
        before: dict[str, tuple[Hook, ...]] = {}
        after: dict[str, tuple[Hook, ...]] = {}
        for point, place in HOOK_POINTS.items():
            p = self._section(h, point, schema.keys("hooks", point), "hooks")
            for when, table in (("before", before), ("after", after)):
                items = self._hook_list(
                    p.get(when), f"hooks.{point}.{when}", place, default_timeout
                )
                if items:
                    table[point] = items
        notify = self._hook_list(h.get("notify"), "hooks.notify", "local", default_timeout)
        return Hooks(before, after, notify)

    def _hook_list(self, value: Any, where: str, place: str, timeout: float) -> tuple[Hook, ...]:
        if value is None:
            return ()
        if isinstance(value, str | dict):
            value = [value]
        if not isinstance(value, list):
            self.errors.append(f"{where}: expected a command or a list of commands")
            return ()
        out = []
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            if isinstance(item, str):
                out.append(Hook(self._command(item, at), timeout, place))
                continue
            if not isinstance(item, dict) or "run" not in item:
                self.errors.append(f"{at}: expected a command, or a mapping with `run:`")
                continue
            spec = schema.HOOK["anyOf"][1]["properties"]
            self._unknown(item, at, set(spec))
            out.append(
                Hook(
                    str(self.value(item, "run", f"{at}.run", spec["run"], required=True)),
                    self.value(item, "timeout", f"{at}.timeout", spec["timeout"], timeout),
                    self.value(item, "on", f"{at}.on", spec["on"], place),
                )
            )
        return tuple(out)

    def ssh(self, raw: dict[str, Any]) -> SshConfig:
        s = self._section(raw, "ssh", schema.keys("ssh"))
        user = self.field(s, "ssh.user") or local_user()
        if not user:
            self.errors.append(
                f"ssh.user: not set, and the local uid {os.getuid()} has no user name (no "
                "passwd entry, as in a container): set ssh.user"
            )
            user = ""
        key = self.field(s, "ssh.key")
        known = self.field(s, "ssh.known_hosts")
        config = self.field(s, "ssh.config")
        config_file = None if config == "none" else self._path(str(config))
        if config_file is not None and not config_file.is_file():
            if s.get("config") not in (None, ""):
                self.errors.append(f"ssh.config: {config_file} not found (or write `none`)")
            config_file = None
        return SshConfig(
            user=str(user),
            port=self.field(s, "ssh.port"),
            key=self._path(key) if key else None,
            known_hosts=self._path(str(known)),
            gateway=self.field(s, "ssh.gateway"),
            connect_timeout=self.field(s, "ssh.connect_timeout"),
            config_file=config_file,
            user_given=s.get("user") not in (None, ""),
            port_given=s.get("port") not in (None, ""),
            alive_interval=self.field(s, "ssh.alive_interval"),
            alive_count=self.field(s, "ssh.alive_count"),
            command_timeout=self.field(s, "ssh.command_timeout"),
        )

    def _host(self, value: Any, where: str, ssh: SshConfig) -> Host | None:
        if not isinstance(value, str) or not value.strip():
            self.errors.append(f"{where}: expected a host name like [user@]host[:port]")
            return None
        text = self._interp(value.strip(), where)
        user, user_default = ssh.user, not ssh.user_given
        if "@" in text:
            user, text = text.split("@", 1)
            user_default = False
        port, port_default = ssh.port, not ssh.port_given
        if text.count(":") == 1:
            text, port_text = text.split(":")
            if not port_text.isdigit():
                self.errors.append(f"{where}: bad port in {value!r}")
                return None
            port, port_default = int(port_text), False
        if not text:
            self.errors.append(f"{where}: empty host name")
            return None
        return Host(text, user, port, user_default=user_default, port_default=port_default)

    def roles(self, raw: dict[str, Any], ssh: SshConfig) -> Roles | None:
        r = self._section(raw, "roles", schema.keys("roles"))
        apps_raw = r.get("app")
        if isinstance(apps_raw, str | dict):
            apps_raw = [apps_raw]
        if not isinstance(apps_raw, list) or not apps_raw:
            self.errors.append("roles.app: required, a list of one or more hosts")
            apps_raw = []
        apps = [self._app_host(h, f"roles.app[{i}]", ssh) for i, h in enumerate(apps_raw)]
        first = apps_raw[0] if apps_raw else None
        migrate_raw = r.get("migrate", first.get("host") if isinstance(first, dict) else first)
        if isinstance(migrate_raw, list):
            self.errors.append("roles.migrate: exactly one host (migrations run once)")
            migrate_raw = None
        migrate = self._host(migrate_raw, "roles.migrate", ssh)
        db = self._host(r.get("db", migrate_raw), "roles.db", ssh)
        if migrate is None or db is None or any(h is None for h in apps):
            return None
        hosts = tuple(h for h in apps if h is not None)
        labels = [h.label for h in hosts]
        for label in sorted({x for x in labels if labels.count(x) > 1}):
            self.errors.append(f"roles.app: {label} is listed twice")
        # a migrate or db host that is also an app host is that host, its own settings too
        same = {h: h for h in hosts}
        return Roles(app=hosts, migrate=same.get(migrate, migrate), db=same.get(db, db))

    def _app_host(self, value: Any, where: str, ssh: SshConfig) -> Host | None:
        """`[user@]host[:port]`, or a mapping: `{host: ..., deploy_to: ..., env: {...},
        health_url: ...}` — that host's own settings over app.*."""
        if not isinstance(value, dict):
            return self._host(value, where, ssh)
        self._unknown(value, where, set(schema.APP_HOST["properties"]))
        host = self._host(value.get("host"), f"{where}.host", ssh)
        if host is None:
            return None
        spec = schema.APP_HOST["properties"]
        deploy_to = self.value(value, "deploy_to", f"{where}.deploy_to", spec["deploy_to"])
        if deploy_to and not deploy_to.startswith("/"):
            self.errors.append(f"{where}.deploy_to: must be an absolute path on the host")
        env = self._env(value.get("env"), f"{where}.env")
        url = self.value(value, "health_url", f"{where}.health_url", spec["health_url"])
        return dataclasses.replace(
            host, deploy_to=deploy_to.rstrip("/") if deploy_to else None, env=env, health_url=url
        )

    def _env(self, env_raw: Any, where: str) -> dict[str, Secret]:
        """A mapping of NAME: value (app.env, a host's env)."""
        env: dict[str, Secret] = {}
        if env_raw is None:
            return env
        if not isinstance(env_raw, dict):
            self.errors.append(f"{where}: expected a mapping of NAME: value")
            return env
        for key in env_raw:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
                self.errors.append(f"{where}.{key}: not a valid variable name")
                continue
            env[str(key)] = Secret(str(self._str(env_raw, key, f"{where}.{key}")))
        return env

    def app(self, raw: dict[str, Any]) -> AppConfig:
        a = self._section(raw, "app", schema.keys("app"))
        env = self._env(a.get("env") or {}, "app.env")
        maint = self._section(a, "maintenance", schema.keys("app", "maintenance"), "app")
        health = None
        h = self._section(a, "health", schema.keys("app", "health"), "app")
        if h:
            health = Health(
                url=str(self.field(h, "app.health.url")),
                status=self.field(h, "app.health.status"),
                text=self.field(h, "app.health.text"),
                timeout=self.field(h, "app.health.timeout"),
                release_header=self.field(h, "app.health.release_header"),
            )
        pip_args = a.get("pip_args") or []
        if not isinstance(pip_args, list):
            self.errors.append("app.pip_args: expected a list of arguments")
            pip_args = []
        deploy_to = str(self.field(a, "app.deploy_to"))
        if deploy_to and not deploy_to.startswith("/"):
            self.errors.append("app.deploy_to: must be an absolute path on the app hosts")
        return AppConfig(
            repo=str(self.field(a, "app.repo")),
            ref=str(self.field(a, "app.ref")),
            deploy_to=deploy_to.rstrip("/"),
            python=str(self.field(a, "app.python")),
            settings=str(self.field(a, "app.settings")),
            env=env,
            keep_releases=self.field(a, "app.keep_releases"),
            pip_args=tuple(self._interp(str(x), "app.pip_args") for x in pip_args),
            restart=self.field(a, "app.restart"),
            maintenance_on=self.field(maint, "app.maintenance.on"),
            maintenance_off=self.field(maint, "app.maintenance.off"),
            health=health,
            parallel=self.field(a, "app.parallel"),
            reload=self.field(a, "app.reload"),
            build=self.field(a, "app.build"),
            drain=self.field(a, "app.drain"),
            undrain=self.field(a, "app.undrain"),
            rolling_batch=self.rolling_batch(a),
            shared_dirs=self.shared_dirs(a),
            root=self.app_root(a),
        )

    def app_root(self, a: dict[str, Any]) -> str:
        """app.root: a folder of the repository (relative, inside it); "" for its top."""
        raw = str(self.field(a, "app.root") or "").strip()
        root = posixpath.normpath(raw) if raw else "."
        if raw.startswith("/") or root == ".." or root.startswith("../"):
            self.errors.append(
                f"app.root: {raw!r} must be a folder inside the repository (relative, no `..`)"
            )
            return ""
        return "" if root == "." else root

    def shared_dirs(self, a: dict[str, Any]) -> tuple[str, ...]:
        """app.shared_dirs: folders relative to a release, inside it, none a Seed folder."""
        value = a.get("shared_dirs") or []
        if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
            self.errors.append("app.shared_dirs: expected a list of folders (e.g. [media])")
            return ()
        out = []
        for raw in value:
            d = posixpath.normpath(self._interp(raw.strip(), "app.shared_dirs"))
            if d.startswith(("/", "..")) or d in (".", ".venv") or d.startswith(".seed"):
                self.errors.append(
                    f"app.shared_dirs: {raw!r} must be a folder inside the release "
                    "(relative, no `..`, not .venv)"
                )
                continue
            out.append(d)
        return tuple(out)

    def rolling_batch(self, a: dict[str, Any]) -> str:
        r = self._section(a, "rolling", schema.keys("app", "rolling"), "app")
        raw = r.get("batch", 1)
        text = self._interp(str(raw), "app.rolling.batch").strip()
        if not re.fullmatch(r"[0-9]+%?", text) or int(text.rstrip("%")) < 1:
            self.errors.append(
                f"app.rolling.batch: {raw!r} is not a number of hosts (N >= 1) or a share (N%)"
            )
            return "1"
        if text.endswith("%") and int(text[:-1]) > 100:
            self.errors.append(f"app.rolling.batch: {raw!r} is more than 100%")
            return "1"
        return text

    def db(self, raw: dict[str, Any]) -> DbConfig:
        d = self._section(raw, "db", schema.keys("db"))
        host = str(self.field(d, "db.host"))
        port = self.field(d, "db.port")
        name = str(self.field(d, "db.name"))
        user = str(self.field(d, "db.user"))
        admin = str(self.field(d, "db.admin_user"))
        passfile_raw = self.field(d, "db.passfile")
        passfile = self._path(passfile_raw) if passfile_raw else None

        def secret(key: str, role: str, dbname: str) -> Secret | None:
            # as libpq: the file's value, else PGPASSWORD, else the password file
            value = self.field(d, f"db.{key}")
            if value:
                return Secret(str(value))
            if os.environ.get("PGPASSWORD"):
                return Secret(os.environ["PGPASSWORD"])
            found = lookup_pgpass(host, port, dbname, role, passfile)
            return Secret(found) if found is not None else None

        return DbConfig(
            host=host,
            port=port,
            name=name,
            user=user,
            password=secret("password", user, name),
            admin_user=admin,
            admin_password=secret("admin_password", admin, "postgres"),
            access=self.field(d, "db.access"),
            lock_timeout=str(self.field(d, "db.lock_timeout")),
            lock_retries=self.field(d, "db.lock_retries"),
            statement_timeout=str(self.field(d, "db.statement_timeout")),
            drain_timeout=self.field(d, "db.drain_timeout"),
            fingerprint_sessions=self.field(d, "db.fingerprint_sessions"),
        )

    def backup(
        self, raw: dict[str, Any], env_name: str, protected: bool, ssh: SshConfig
    ) -> BackupConfig:
        b = self._section(raw, "backup", schema.keys("backup"))
        strategy = self.field(b, "backup.strategy")
        pgbackrest = self.pgbackrest(b, ssh)
        if strategy == "pitr" and pgbackrest is None and "pgbackrest" not in b:
            self.errors.append(
                "backup.pgbackrest: required with backup.strategy pitr (stanza, repo_host, "
                "stop, start)"
            )
        directory = str(self.field(b, "backup.dir", f"/var/backups/seed/{env_name}"))
        if directory and not directory.startswith("/"):
            self.errors.append("backup.dir: must be an absolute path on the state host")
        compression = self.field(b, "backup.compression")
        copy, copy_host, copy_dir = self.backup_copy(
            b, directory, protected, strategy, pgbackrest, ssh
        )
        return BackupConfig(
            dir=directory.rstrip("/"),
            format=self.field(b, "backup.format"),
            compression=compression,
            jobs=self.field(b, "backup.jobs"),
            keep=self.field(b, "backup.keep"),
            lock_wait_timeout=str(self.field(b, "backup.lock_wait_timeout")),
            pg_bin=self.field(b, "backup.pg_bin"),
            copy=copy,
            copy_host=copy_host,
            copy_dir=copy_dir,
            allow_replication=self.field(b, "backup.allow_replication"),
            strategy=strategy,
            code_only=self.field(b, "backup.code_only"),
            snapshot_copy=self.field(b, "backup.snapshot_copy"),
            pgbackrest=pgbackrest,
        )

    def backup_copy(
        self,
        b: dict[str, Any],
        directory: str,
        protected: bool,
        strategy: str,
        pgbackrest: PgBackRestConfig | None,
        ssh: SshConfig,
    ) -> tuple[str, Host | None, str]:
        """backup.copy: none | download | {host, dir}; unset: none, or when protected the
        pgBackRest repository host (strategy pitr) with backup.dir there, else download."""
        raw = b.get("copy")
        if isinstance(raw, dict):
            self._unknown(raw, "backup.copy", {"host", "dir"})
            host = self._host(raw.get("host"), "backup.copy.host", ssh)
            where = self._str(raw, "dir", "backup.copy.dir", directory)
            if where and not str(where).startswith("/"):
                self.errors.append("backup.copy.dir: must be an absolute path on that host")
            return "host", host, str(where).rstrip("/")
        if raw is None:
            if not protected:
                return "none", None, ""
            if strategy == "pitr" and pgbackrest is not None:
                return "host", pgbackrest.repo_host, directory
            return "download", None, ""
        value = self._str(b, "copy", "backup.copy", "none")
        if value not in ("none", "download"):
            self.errors.append(
                f"backup.copy: expected none, download or {{host, dir}}, got {value!r}"
            )
            return "none", None, ""
        return str(value), None, ""

    def pgbackrest(self, b: dict[str, Any], ssh: SshConfig) -> PgBackRestConfig | None:
        section = self._section(b, "pgbackrest", schema.keys("backup", "pgbackrest"), "backup")
        if not section:
            return None

        def get(key: str) -> Any:
            return self.field(section, f"backup.pgbackrest.{key}")

        stanza = str(get("stanza") or "")
        if stanza and not re.fullmatch(r"[A-Za-z0-9_.-]+", stanza):
            self.errors.append("backup.pgbackrest.stanza: letters, digits, _ . - only")
        repo = self._host(section.get("repo_host"), "backup.pgbackrest.repo_host", ssh)
        rewind = section.get("rewind") or []
        if not isinstance(rewind, list) or not all(isinstance(x, str) for x in rewind):
            self.errors.append("backup.pgbackrest.rewind: expected a list of database names")
            rewind = []
        max_age, timeout = get("max_age"), get("archive_timeout")
        if repo is None:
            return None
        return PgBackRestConfig(
            stanza=stanza,
            repo_host=repo,
            stop=str(get("stop") or ""),
            start=str(get("start") or ""),
            cipher=get("cipher"),
            command=get("command"),
            repo_command=get("repo_command"),
            as_owner=get("as_owner"),
            verify_dir=str(get("verify_dir")).rstrip("/") or "/",
            max_age_hours=float(max_age or 24),
            type=get("type"),
            archive_timeout=float(timeout or 60),
            rewind=tuple(rewind),
            allow_replicas=get("allow_replicas"),
        )


def lookup_pgpass(
    host: str, port: int, dbname: str, user: str, passfile: Path | None = None
) -> str | None:
    """The password for host:port:db:user from a libpq password file, like libpq does.

    Looks in `passfile`, else `PGPASSFILE`, else `~/.pgpass`. Returns None when no
    line matches (the server may use peer or trust authentication).
    """
    if passfile is None:
        env_file = os.environ.get("PGPASSFILE")
        if env_file:
            passfile = Path(env_file)
        else:
            try:
                passfile = Path.home() / ".pgpass"
            except RuntimeError:  # no HOME and no passwd entry: no ~/.pgpass to read
                return None
    try:
        lines = passfile.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{passfile}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    wanted = [host, str(port), dbname, user]
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _split_pgpass(line)
        if len(fields) != 5:
            continue
        if all(f == "*" or f == w for f, w in zip(fields[:4], wanted, strict=True)):
            return fields[4]
    return None


def _split_pgpass(line: str) -> list[str]:
    fields: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    return fields
