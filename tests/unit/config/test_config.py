"""seed.config.environment: environment files written to tmp_path, parsed by the real loader
(no servers)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from seed.checks.spec import Expectation
from seed.config.environment import (
    Environment,
    Host,
    Secret,
    interpolate,
    is_secret,
    list_environments,
    load_environment,
    local_user,
    lookup_pgpass,
)
from seed.errors import ConfigError
from seed.remote.ssh import exports_text

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "environments"
LOCAL = (SHIPPED / "local.yml").read_text()
# the shipped roles.app block (two app hosts, the second with its own settings)
APP_ROLE = LOCAL[LOCAL.index("  app:  ") : LOCAL.index("  migrate: 127.0.0.1")]
SANDBOX_VARS = (
    "SEED_SANDBOX_DIR",
    "SEED_SANDBOX_SSH_PORT",
    "SEED_SANDBOX_PG_PORT",
    "SEED_SANDBOX_APP_PORT",
    "SEED_SANDBOX_LB_PORT",
    "SHOP_SECRET_KEY",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ambient variable, pgpass or home directory leaks into what a file means."""
    for var in (*SANDBOX_VARS, "PGPASSFILE", "SEED_ENVIRONMENTS"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


def edit(text: str, old: str, new: str) -> str:
    """Replace exactly one occurrence (so a test cannot silently stop editing anything)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def write(tmp_path: Path, text: str, name: str = "local") -> Path:
    """Write `<repo>/environments/<name>.yml` under tmp_path; returns the environments dir."""
    envdir = tmp_path / "repo" / "environments"
    envdir.mkdir(parents=True, exist_ok=True)
    (envdir / f"{name}.yml").write_text(text)
    return envdir


def load(tmp_path: Path, text: str, name: str = "local") -> Environment:
    return load_environment(name, write(tmp_path, text, name))


def problems(tmp_path: Path, text: str, name: str = "local") -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, name)
    assert info.value.code == 2
    return str(info.value)


# --------------------------------------------------------------------------- shipped files


def test_shipped_local_loads_with_sandbox_defaults(tmp_path: Path) -> None:
    env = load(tmp_path, LOCAL)
    assert env.name == "local"
    assert env.protected is False
    assert env.ssh.port == 2222
    assert env.ssh.user == local_user()
    assert env.ssh.key == Path("/var/tmp/seed-sandbox/ssh/id_ed25519")
    assert env.ssh.gateway is None
    host, second = Host("127.0.0.1", local_user(), 2222), Host("127.0.0.2", local_user(), 2222)
    assert env.roles.app == (host, second)
    assert env.roles.migrate == host
    assert env.roles.db == host
    assert env.roles.all_hosts() == (host, second)
    second = env.roles.app[1]  # with its own settings (not compared by ==)
    assert env.deploy_to_of(second) == "/var/tmp/seed-sandbox/server/host2/srv/shop"
    assert env.app_env_of(second)["APP_BIND"].reveal() == "127.0.0.2:8765"
    assert env.health_url_of(second) == "http://127.0.0.2:8765/health/"
    # commands keep their ${VAR}s for the host's shell, which gets the values privately
    assert env.app.drain == '${SEED_SANDBOX_DIR:-/var/tmp/seed-sandbox}/lb/lbctl drain "$SEED_HOST"'
    assert env.app.undrain == (
        '${SEED_SANDBOX_DIR:-/var/tmp/seed-sandbox}/lb/lbctl undrain "$SEED_HOST"'
    )
    assert env.command_values() == {"SEED_SANDBOX_DIR": None}
    assert env.db.port == 54329
    assert (env.db.name, env.db.user, env.db.admin_user) == ("shop", "shop", "postgres")
    assert env.app.ref == "main"
    assert env.app.pip_args == (
        "--no-index",
        "--find-links",
        "/var/tmp/seed-sandbox/wheels",
    )
    assert env.app.maintenance_on == "current/deploy/appctl stop"
    assert env.app.maintenance_off == "current/deploy/appctl start"
    assert (
        env.app.env["SECRET_KEY"].reveal()
        == "sandbox-only-secret-key-not-for-production-4f9c2e7a1b8d"
    )
    assert env.app.health is not None
    assert env.app.health.url == "http://127.0.0.1:8765/health/"
    assert env.app.health.timeout == 20.0
    assert [c.name for c in env.checks] == [
        "customers unchanged",
        "orders unchanged",
        "order totals unchanged",
        "no orphan orders",
    ]
    assert [c.expect.kind for c in env.checks] == ["equals_before"] * 3 + ["rows"]
    assert all(c.when == "post" for c in env.checks)


def test_shipped_local_follows_the_sandbox_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "sb"
    monkeypatch.setenv("SEED_SANDBOX_DIR", str(root))
    monkeypatch.setenv("SEED_SANDBOX_SSH_PORT", "40022")
    monkeypatch.setenv("SEED_SANDBOX_PG_PORT", "40432")
    monkeypatch.setenv("SHOP_SECRET_KEY", "from-the-environment")
    env = load(tmp_path, LOCAL)
    assert env.ssh.port == 40022
    assert env.roles.db.port == 40022
    assert env.db.port == 40432
    assert env.ssh.key == root / "ssh" / "id_ed25519"
    assert env.ssh.known_hosts == root / "ssh" / "known_hosts"
    assert env.state_dir == f"{root}/server/var/lib/seed/local"
    assert env.backup.dir == f"{root}/server/var/backups/shop"
    assert env.app.env["SECRET_KEY"].reveal() == "from-the-environment"


def test_shipped_staging_loads_with_its_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_STAGING_SECRET_KEY", "stg-secret-key")
    monkeypatch.setenv("SHOP_STAGING_DB_PASSWORD", "stg-db-pass")
    monkeypatch.setenv("SHOP_STAGING_PG_ADMIN_PASSWORD", "stg-admin-pass")
    env = load(tmp_path, (SHIPPED / "staging.yml").read_text(), "staging")
    assert env.protected is False
    assert env.ssh.gateway == "deploy@bastion.staging.example.com"
    assert [h.name for h in env.roles.app] == [
        "web1.staging.example.com",
        "web2.staging.example.com",
    ]
    assert env.roles.db == Host("db1.staging.example.com", "deploy", 22)
    assert env.db.password == Secret("stg-db-pass")
    assert env.db.admin_password == Secret("stg-admin-pass")
    assert env.app.env["SECRET_KEY"].reveal() == "stg-secret-key"
    # relative to the repository root: the parent of the environments directory
    assert env.ssh.known_hosts == tmp_path / "repo" / "environments" / "known_hosts"


def test_shipped_staging_without_its_variables_names_every_one(tmp_path: Path) -> None:
    message = problems(tmp_path, (SHIPPED / "staging.yml").read_text(), "staging")
    assert "3 problems" in message
    for var in (
        "SHOP_STAGING_SECRET_KEY",
        "SHOP_STAGING_DB_PASSWORD",
        "SHOP_STAGING_PG_ADMIN_PASSWORD",
    ):
        assert f"environment variable {var} is not set" in message


def test_shipped_production_loads_and_is_protected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_PRODUCTION_SECRET_KEY", "prod-secret-key")
    monkeypatch.setenv("SHOP_PRODUCTION_DB_PASSWORD", "prod-db-pass")
    monkeypatch.setenv("SHOP_PRODUCTION_PG_ADMIN_PASSWORD", "prod-admin-pass")
    env = load(tmp_path, (SHIPPED / "production.yml").read_text(), "production")
    assert env.protected is True
    assert env.description == "Production (EU)"
    assert len(env.roles.app) == 3
    assert env.roles.migrate.name == "web1.example.com"
    assert env.ssh.key == tmp_path / "home" / ".ssh" / "id_ed25519"  # ~ expanded
    assert env.app.keep_releases == 10
    assert env.db.lock_timeout == "3s"
    assert env.backup.keep == 20


def test_a_broken_file_does_not_affect_the_others(tmp_path: Path) -> None:
    envdir = write(tmp_path, "protected: [\n", "production")
    write(tmp_path, LOCAL, "local")
    assert load_environment("local", envdir).name == "local"
    with pytest.raises(ConfigError, match=r"production\.yml: line \d+"):
        load_environment("production", envdir)


def test_missing_file_and_bad_names(tmp_path: Path) -> None:
    envdir = write(tmp_path, LOCAL, "local")
    with pytest.raises(ConfigError, match=r"nope\.yml: no such environment file"):
        load_environment("nope", envdir)
    (envdir / "Local.yml").write_text(LOCAL)
    with pytest.raises(ConfigError, match="environment name 'Local' must match"):
        load_environment("Local", envdir)


def test_environments_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envdir = write(tmp_path, LOCAL, "elsewhere")
    monkeypatch.setenv("SEED_ENVIRONMENTS", str(envdir))
    assert load_environment("elsewhere").path == envdir / "elsewhere.yml"


# --------------------------------------------------------------------------- interpolation


def test_missing_variable_is_named(tmp_path: Path) -> None:
    text = edit(
        LOCAL,
        "SECRET_KEY: ${SHOP_SECRET_KEY:-sandbox-only-secret-key-not-for-production-4f9c2e7a1b8d}",
        "SECRET_KEY: ${SEED_UNIT_NOT_SET}",
    )
    message = problems(tmp_path, text)
    assert "app.env.SECRET_KEY: environment variable SEED_UNIT_NOT_SET is not set" in message
    assert "${SEED_UNIT_NOT_SET:-default}" in message  # tells how to give a default


def test_default_applies_when_unset_or_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = edit(LOCAL, "  name: shop\n", "  name: ${SEED_UNIT_DB:-shop_default}\n")
    assert load(tmp_path, text).db.name == "shop_default"
    monkeypatch.setenv("SEED_UNIT_DB", "")
    assert load(tmp_path, text).db.name == "shop_default"
    monkeypatch.setenv("SEED_UNIT_DB", "shop_from_env")
    assert load(tmp_path, text).db.name == "shop_from_env"


def test_int_keys_take_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEED_SANDBOX_PG_PORT", "15432")
    assert load(tmp_path, LOCAL).db.port == 15432
    monkeypatch.setenv("SEED_SANDBOX_PG_PORT", "fifteen")
    assert "db.port: expected an integer, got 'fifteen'" in problems(tmp_path, LOCAL)


def test_double_dollar_is_a_literal_dollar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEED_UNIT_X", "expanded")
    text = edit(
        LOCAL,
        "restart: current/deploy/appctl restart",
        "restart: echo $$HOME $${SEED_UNIT_X} ${SEED_UNIT_X} costs 5$$",
    )
    env = load(tmp_path, text)
    assert env.app.restart == "echo $HOME ${SEED_UNIT_X} ${SEED_UNIT_X} costs 5$"
    assert env.command_values()["SEED_UNIT_X"] == "expanded"
    # as the host's shell runs it: the values arrive by `eval` of exports_text on stdin
    script = exports_text(env.command_values()) + env.app.restart
    ran = subprocess.run(
        ["bash", "-c", script], env={"HOME": "/h"}, capture_output=True, text=True, check=True
    )
    assert ran.stdout == "/h expanded expanded costs 5$\n"


def test_a_variable_in_a_command_stays_out_of_its_text_and_is_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token pasted into a hook would be on the host's command line (`ps`): the hook
    keeps `${VAR}`, the value travels apart and is scrubbed from output. A variable unset
    here is unset there, whatever the host has."""
    monkeypatch.setenv("SEED_UNIT_TOKEN", "t0k'en value")
    monkeypatch.setenv("SEED_UNIT_WEBHOOK", "https://hooks.example/T1/B2/xyz")
    monkeypatch.delenv("SEED_UNIT_UNSET", raising=False)
    text = LOCAL + (
        "hooks:\n"
        "  switch:\n"
        "    after: ['curl -H \"X-Token: ${SEED_UNIT_TOKEN}\" ${SEED_UNIT_UNSET:-x}']\n"
        "  notify: [{run: 'curl -d ok ${SEED_UNIT_WEBHOOK}', timeout: 5}]\n"
    )
    env = load(tmp_path, text)
    (hook,) = env.hooks.of("after", "switch")
    assert hook.run == 'curl -H "X-Token: ${SEED_UNIT_TOKEN}" ${SEED_UNIT_UNSET:-x}'
    assert env.hooks.notify[0].run == "curl -d ok ${SEED_UNIT_WEBHOOK}"
    values = env.command_values()
    assert values["SEED_UNIT_TOKEN"] == "t0k'en value"  # noqa: S105 - a test's token
    assert values["SEED_UNIT_UNSET"] is None
    secrets = env.secrets()
    assert "t0k'en value" in secrets and shlex.quote("t0k'en value") in secrets
    assert "https://hooks.example/T1/B2/xyz" in secrets  # any value a command was given
    # a port or a path the environment gave is a place, not a secret
    assert not any(s in ("/var/tmp/seed-sandbox", "54329") for s in secrets)


def test_what_counts_as_a_secret_from_the_environment() -> None:
    assert is_secret("app.repo", "GIT_TOKEN", "ghp_x")
    assert is_secret("app.repo", "CI_JOB_JWT", "eyJhbGciOi")  # in the repo URL: a credential
    assert is_secret("app.env.SENTRY_DSN", "SENTRY", "https://k@o1.ingest/2")
    assert is_secret("ssh.port", "DEPLOY_PASSWORD", "2222")  # the name says so
    assert not is_secret("roles.app[0]", "APP_HOST", "app1.example.com")
    assert not is_secret("db.port", "PGPORT", "5432")
    assert not is_secret("backup.dir", "BACKUPS", "/srv/backups")
    assert is_secret("roles.app[0].env.API_KEY", "K", "abcd")


def test_interpolate_directly() -> None:
    values = {"A": "1", "EMPTY": ""}
    assert interpolate("${A}-${B:-two}-${EMPTY:-three}-$$A-$A", values.get) == "1-two-three-$A-$A"
    assert interpolate("${EMPTY}", values.get) == ""
    with pytest.raises(KeyError, match="B"):
        interpolate("x ${B} y", values.get)


# --------------------------------------------------------------------------- errors


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    lines = LOCAL.splitlines()
    index = lines.index("  name: shop")
    lines[index] = "\tname: shop"  # a tab cannot indent YAML
    message = problems(tmp_path, "\n".join(lines) + "\n")
    assert f"line {index + 1}, column 1: invalid YAML" in message
    assert message.startswith(str(tmp_path / "repo" / "environments" / "local.yml"))


def test_a_key_written_twice_names_both_lines(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys silently: a setting typed twice is refused,
    naming both lines (a port set at the top and again 40 lines down is a real mistake)."""
    lines = LOCAL.splitlines()
    first = lines.index("  name: shop") + 1
    lines.insert(first, "  name: shop_typo")
    message = problems(tmp_path, "\n".join(lines) + "\n")
    assert message.startswith(str(tmp_path / "repo" / "environments" / "local.yml"))
    assert f"duplicate key 'name': at line {first} and line {first + 1}" in message


def test_keys_from_a_yaml_merge_are_overridden_not_duplicates(tmp_path: Path) -> None:
    """`<<:` brings keys in that the mapping may set again: legitimate overrides."""
    text = edit(LOCAL, "    status: 200\n", "    <<: {status: 204, timeout: 3}\n")
    env = load(tmp_path, text)
    assert env.app.health is not None
    assert (env.app.health.status, env.app.health.timeout) == (204, 20.0)  # own key wins


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping of settings at the top level" in problems(tmp_path, "- a\n- b\n")


def test_unknown_key_is_named(tmp_path: Path) -> None:
    text = edit(LOCAL, "  name: shop\n", "  name: shop\n  pasword: hunter22\n")
    message = problems(tmp_path, text)
    assert "db.pasword: unknown key" in message
    assert "password" in message  # the expected keys are listed


def test_errors_name_the_line(tmp_path: Path) -> None:
    """Each problem names the line of its key (or of the section a missing key belongs in)."""
    text = edit(LOCAL, "  name: shop\n", "  name: shop\n  pasword: x\n")
    text = edit(text, "  keep: 10\n", "  keep: ten\n")
    text = edit(text, "    expect: {rows: 0}\n", "    expect: {row: 0}\n")
    lines = text.splitlines()

    def line(needle: str) -> int:
        (found,) = [i + 1 for i, text in enumerate(lines) if needle in text]
        return found

    message = problems(tmp_path, text)
    assert f"line {line('pasword: x')}: db.pasword: unknown key" in message
    assert f"line {line('keep: ten')}: backup.keep: expected an integer" in message
    assert f"line {line('expect: {row: 0}')}: checks[no orphan orders].expect.row" in message
    missing = re.sub(r"(?m)^  repo: .*\n", "", LOCAL)
    assert f"line {LOCAL.splitlines().index('app:') + 1}: app.repo: required" in problems(
        tmp_path, missing
    )


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = problems(tmp_path, LOCAL + "colour: blue\n")
    assert re.search(r": colour: unknown key", message)


def test_several_problems_are_listed_at_once(tmp_path: Path) -> None:
    text = edit(LOCAL, "  name: shop\n", "  name: shop\n  pasword: x\n")
    text = edit(text, "protected: false", 'protected: "yes"')
    text = edit(text, "  keep: 10\n", "  keep: ten\n")
    message = problems(tmp_path, text)
    assert "3 problems" in message
    assert "db.pasword: unknown key" in message
    assert "protected: expected true or false" in message
    assert "backup.keep: expected an integer, got 'ten'" in message


def test_missing_required_keys(tmp_path: Path) -> None:
    text = re.sub(r"(?m)^  repo: .*\n", "", LOCAL)
    text = edit(text, "  name: shop\n", "")
    message = problems(tmp_path, text)
    assert "app.repo: required" in message
    assert "db.name: required" in message
    assert "2 problems" in message


def test_wrong_types(tmp_path: Path) -> None:
    text = edit(LOCAL, "  port: ${SEED_SANDBOX_PG_PORT:-54329}", "  port: abc")
    assert "db.port: expected an integer, got 'abc'" in problems(tmp_path, text)
    text = edit(LOCAL, "protected: false", 'protected: "yes"')
    assert "protected: expected true or false" in problems(tmp_path, text)
    # YAML 1.1 would read an unquoted yes as true; here it is the string "yes": refused too
    text = edit(LOCAL, "protected: false", "protected: yes")
    assert "protected: expected true or false" in problems(tmp_path, text)
    text = edit(LOCAL, "keep_releases: 5", "keep_releases: 1")
    assert "app.keep_releases: must be >= 2" in problems(tmp_path, text)
    text = edit(LOCAL, "  format: custom", "  format: tar")
    assert "backup.format: expected one of custom, directory, got 'tar'" in problems(tmp_path, text)
    text = edit(LOCAL, "  compression: 1 ", "  compression: 12 ")
    assert "backup.compression: must be <= 9" in problems(tmp_path, text)


def test_deploy_modes_and_rolling_settings(tmp_path: Path) -> None:
    env = load(tmp_path, LOCAL)
    assert (env.deploy_mode, env.backup.code_only, env.app.rolling_batch) == ("auto", "skip", "1")
    text = edit(LOCAL, "  mode: auto", "  mode: maintenance")
    text = edit(text, "  rolling: {batch: 1} ", "  rolling: {batch: 50%} ")
    env = load(tmp_path, text)
    assert (env.deploy_mode, env.app.rolling_batch) == ("maintenance", "50%")
    assert env.app.reload == "current/deploy/appctl reload"
    assert env.app.health is not None and env.app.health.release_header == "X-Release"
    assert load(tmp_path, edit(LOCAL, "  mode: auto", "  mode: online")).deploy_mode == "online"
    text = edit(LOCAL, "  mode: auto", "  mode: blue-green")
    assert (
        "deploy.mode: expected one of auto, code-only, online, maintenance, got 'blue-green'"
        in problems(tmp_path, text)
    )
    for bad in ("0", "150%", "two"):
        text = edit(LOCAL, "  rolling: {batch: 1} ", f"  rolling: {{batch: {bad}}} ")
        assert "app.rolling.batch:" in problems(tmp_path, text), bad
    text = edit(LOCAL, "  code_only: skip ", "  code_only: always ")
    assert "backup.code_only: expected one of skip, online" in problems(tmp_path, text)


def test_the_pitr_strategy_and_its_pgbackrest_section(tmp_path: Path) -> None:
    env = load(tmp_path, LOCAL)
    assert env.backup.strategy == "dump" and env.roles.backup is None  # no repository host
    assert env.backup.pgbackrest is not None and env.backup.pgbackrest.stanza == "shop"
    pitr = edit(LOCAL, "  strategy: dump\n", "  strategy: pitr\n")
    env = load(tmp_path, pitr)
    cfg = env.backup.pgbackrest
    assert env.backup.strategy == "pitr" and cfg is not None
    assert env.roles.backup is not None and env.roles.backup.name == "127.0.0.3"
    assert env.roles.backup in env.roles.all_hosts()  # pre-flight reaches it like any host
    assert (cfg.cipher, cfg.type, cfg.max_age_hours, cfg.rewind) == ("aes-256-cbc", "diff", 24, ())
    # its commands keep their variables for the host's shell (never pasted into argv)
    assert cfg.stop == "${SEED_SANDBOX_DIR:-/var/tmp/seed-sandbox}/server/bin/pgctl stop"
    start = pitr.index("  pgbackrest:\n")
    end = pitr.index("    # allow_replicas")
    text = pitr[:start] + pitr[end:]
    assert "backup.pgbackrest: required with backup.strategy pitr" in problems(tmp_path, text)
    text = edit(pitr, "    stop: ${SEED", "    # stop: ${SEED")
    text = edit(text, "    cipher: aes-256-cbc ", "    cipher: none ")
    text = edit(text, "    type: diff ", "    type: weekly ")
    text = edit(text, "    max_age: 24 ", "    max_age: 0 ")
    found = problems(tmp_path, text)
    for expected in (
        "backup.pgbackrest.stop: required",
        "backup.pgbackrest.cipher: expected one of aes-256-cbc",
        "backup.pgbackrest.type: expected one of diff, incr, full",
        "backup.pgbackrest.max_age: expected a positive number",
    ):
        assert expected in found, found


def test_an_app_host_may_have_its_own_settings(tmp_path: Path) -> None:
    """Several app instances on one machine (or a host that differs): a mapping in
    roles.app with its own deploy_to, env and health URL over app.*."""
    text = edit(
        LOCAL,
        APP_ROLE,
        "  app:\n    - 127.0.0.1\n    - {host: 127.0.0.2, deploy_to: /srv/two/, "
        "env: {APP_BIND: '127.0.0.1:9002', API_TOKEN: s3cret-token}, "
        "health_url: 'http://127.0.0.1:9002/health/'}\n",
    )
    env = load(tmp_path, text)
    one, two = env.roles.app
    assert env.deploy_to_of(one) == env.app.deploy_to and env.deploy_to_of(two) == "/srv/two"
    assert env.app_env_of(two)["APP_BIND"].reveal() == "127.0.0.1:9002"
    assert env.app_env_of(one)["APP_BIND"].reveal() != "127.0.0.1:9002"
    assert env.health_url_of(two) == "http://127.0.0.1:9002/health/"
    assert env.health_url_of(one) == env.app.health.url if env.app.health else False
    assert env.roles.migrate is one and "s3cret-token" in env.secrets()
    bad = edit(LOCAL, APP_ROLE, "  app: [{host: h, deploy_to: rel, port: 2}]\n")
    found = problems(tmp_path, bad)
    assert "roles.app[0].port: unknown key" in found
    assert "roles.app[0].deploy_to: must be an absolute path" in found
    twice = edit(LOCAL, APP_ROLE, "  app: [127.0.0.1, {host: 127.0.0.1}]\n")
    assert "is listed twice" in problems(tmp_path, twice)


def test_absolute_server_paths_are_required(tmp_path: Path) -> None:
    text = re.sub(r"(?m)^  deploy_to: .*$", "  deploy_to: srv/shop", LOCAL)
    assert "app.deploy_to: must be an absolute path" in problems(tmp_path, text)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("connect_timeout: 10 ", "connect_timeout: ${SEED_UNIT_T:-10} "),
        ("  drain_timeout: 10 ", "  drain_timeout: ${SEED_UNIT_T:-10} "),
        ("protected: false", "protected: ${SEED_UNIT_PROTECTED:-false}"),
    ],
    ids=["ssh.connect_timeout", "db.drain_timeout", "protected"],
)
def test_float_and_bool_keys_take_variables(tmp_path: Path, old: str, new: str) -> None:
    env = load(tmp_path, edit(LOCAL, old, new))
    assert env.ssh.connect_timeout == 10.0
    assert env.db.drain_timeout == 10.0
    assert env.protected is False


# --------------------------------------------------------------------------- YAML 1.2 scalars


def test_on_off_and_no_stay_strings(tmp_path: Path) -> None:
    text = edit(
        LOCAL,
        "    ALLOWED_HOSTS: 127.0.0.1,127.0.0.2,localhost\n",
        "    ALLOWED_HOSTS: 127.0.0.1,127.0.0.2,localhost\n"
        "    COUNTRY: NO\n    FLAG: off\n    ANSWER: Yes\n",
    )
    text = re.sub(
        r"(?m)^  maintenance:\n    on: .*\n    off: .*\n",
        '  maintenance: {on: "stop it", off: start it}\n',
        text,
    )
    assert "maintenance: {on:" in text
    env = load(tmp_path, text)
    assert env.app.maintenance_on == "stop it"
    assert env.app.maintenance_off == "start it"
    assert env.app.env["COUNTRY"].reveal() == "NO"
    assert env.app.env["FLAG"].reveal() == "off"
    assert env.app.env["ANSWER"].reveal() == "Yes"


def test_yaml_11_numbers_do_not_rewrite_env_values(tmp_path: Path) -> None:
    text = edit(
        LOCAL,
        "    ALLOWED_HOSTS: 127.0.0.1,127.0.0.2,localhost\n",
        "    ALLOWED_HOSTS: 127.0.0.1,127.0.0.2,localhost\n    ZIP: 01234\n    AT: 12:30\n",
    )
    env = load(tmp_path, text)
    assert env.app.env["ZIP"].reveal() in ("01234", "1234")  # YAML 1.2: decimal, never octal
    assert env.app.env["AT"].reveal() == "12:30"


# --------------------------------------------------------------------------- hosts and paths


def test_host_parsing(tmp_path: Path) -> None:
    text = re.sub(
        r"(?m)^roles:\n(  .*\n)+",
        "roles:\n  app: [deploy@web1:2200, web2, web1]\n  migrate: deploy@web1:2200\n"
        "  db: admin@db1\n",
        LOCAL,
    )
    env = load(tmp_path, text)
    me, port = local_user(), 2222
    assert env.roles.app == (
        Host("web1", "deploy", 2200),
        Host("web2", me, port),
        Host("web1", me, port),
    )
    assert env.roles.migrate == Host("web1", "deploy", 2200)
    assert env.roles.migrate.label == "deploy@web1:2200"
    assert env.roles.db == Host("db1", "admin", port)
    assert env.state_host == env.roles.db
    assert len(env.roles.all_hosts()) == 4  # deploy@web1:2200 listed twice, counted once


def test_bad_hosts(tmp_path: Path) -> None:
    text = edit(LOCAL, "  migrate: 127.0.0.1 ", "  migrate: [a, b] ")
    assert "roles.migrate: exactly one host" in problems(tmp_path, text)
    text = edit(LOCAL, "  db: 127.0.0.1 ", "  db: db1:ssh ")
    assert "roles.db: bad port in 'db1:ssh'" in problems(tmp_path, text)
    text = edit(LOCAL, APP_ROLE, "  app: []\n")
    assert "roles.app: required" in problems(tmp_path, text)


def test_migrate_and_db_default_to_the_first_app_host(tmp_path: Path) -> None:
    text = re.sub(r"(?m)^roles:\n(  .*\n)+", "roles:\n  app: [web1, web2]\n", LOCAL)
    env = load(tmp_path, text)
    assert env.roles.migrate.name == "web1"
    assert env.roles.db.name == "web1"


def test_relative_paths_resolve_against_the_repo_root(tmp_path: Path) -> None:
    text = re.sub(r"(?m)^  key: .*$", "  key: keys/deploy_ed25519", LOCAL)
    text = re.sub(r"(?m)^  known_hosts: .*$", "  known_hosts: environments/known_hosts", text)
    text = re.sub(r"(?m)^  passfile: .*$", "  passfile: secrets/pgpass", text)
    repo = tmp_path / "repo"
    (repo / "secrets").mkdir(parents=True)
    (repo / "secrets" / "pgpass").write_text("*:*:*:shop:app-pass\n*:*:*:postgres:admin-pass\n")
    env = load(tmp_path, text)
    assert env.ssh.key == repo / "keys" / "deploy_ed25519"
    assert env.ssh.known_hosts == repo / "environments" / "known_hosts"
    # the passfile was found there: the passwords came from it
    assert env.db.password == Secret("app-pass")
    assert env.db.admin_password == Secret("admin-pass")


def test_explicit_password_wins_over_passfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEED_UNIT_PW", "explicit-pw")
    text = re.sub(r"(?m)^  passfile: .*$", "  password: ${SEED_UNIT_PW}", LOCAL)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("*:*:*:*:from-file\n")
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    env = load(tmp_path, text)
    assert env.db.password == Secret("explicit-pw")
    assert env.db.admin_password == Secret("from-file")  # no admin_password: PGPASSFILE
    # PGPASSWORD comes before the password file (as in libpq), after the file's value
    monkeypatch.setenv("PGPASSWORD", "from-environment")
    env = load(tmp_path, text)
    assert env.db.password == Secret("explicit-pw")
    assert env.db.admin_password == Secret("from-environment")


# --------------------------------------------------------------------------- pgpass


def test_lookup_pgpass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(
        "# comment line\n"
        "\n"
        "otherhost:5432:shop:shop:wrong-host\n"
        "127.0.0.1:5433:shop:shop:wrong-port\n"
        "127.0.0.1:5432:shop:shop:p\\:w\\\\d\n"
        "127.0.0.1:5432:*:postgres:admin-any-db\n"
        "db\\:host:6000:shop:shop:escaped-host\n"
        "*:*:*:*:fallback\n"
    )
    assert lookup_pgpass("127.0.0.1", 5432, "shop", "shop", pgpass) == "p:w\\d"
    assert lookup_pgpass("127.0.0.1", 5432, "postgres", "postgres", pgpass) == "admin-any-db"
    assert lookup_pgpass("127.0.0.1", 5432, "other", "postgres", pgpass) == "admin-any-db"
    assert lookup_pgpass("otherhost", 5432, "shop", "shop", pgpass) == "wrong-host"
    assert lookup_pgpass("db:host", 6000, "shop", "shop", pgpass) == "escaped-host"
    assert lookup_pgpass("10.0.0.9", 1, "x", "y", pgpass) == "fallback"
    pgpass.write_text("127.0.0.1:5432:shop:shop:only-this\nbroken line without fields\n")
    assert lookup_pgpass("127.0.0.1", 5432, "shop", "other", pgpass) is None
    assert lookup_pgpass("127.0.0.1", 5432, "shop", "shop", tmp_path / "absent") is None
    # no passfile given: PGPASSFILE, then ~/.pgpass
    assert lookup_pgpass("127.0.0.1", 5432, "shop", "shop") is None
    (tmp_path / "home" / ".pgpass").write_text("*:*:*:shop:from-home\n")
    assert lookup_pgpass("127.0.0.1", 5432, "shop", "shop") == "from-home"
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    assert lookup_pgpass("127.0.0.1", 5432, "shop", "shop") == "only-this"


# --------------------------------------------------------------------------- secrets


def test_secret_never_shows_its_value() -> None:
    plain = "hunter2-value"
    secret = Secret(plain)
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret!s}",
        format(secret),
        repr([secret, {"k": secret}]),
    ]
    for text in shown:
        assert "hunter2" not in text
        assert "***" in text
    assert secret.reveal() == plain
    assert secret == Secret(plain)
    assert secret != Secret("other")
    assert secret != plain  # a Secret is not its text


def test_environment_repr_and_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_SECRET_KEY", "the-django-secret-key")
    text = re.sub(r"(?m)^  passfile: .*$", "  passfile: pgpass", LOCAL)
    text = edit(
        text,
        "    ALLOWED_HOSTS: 127.0.0.1,127.0.0.2,localhost\n",
        "    ALLOWED_HOSTS: 127.0.0.1,127.0.0.2,localhost\n    API_TOKEN: tok-123456\n",
    )
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "pgpass").write_text("*:*:*:shop:app-db-pw\n*:*:*:postgres:admin-db-pw\n")
    env = load(tmp_path, text)
    secrets = env.secrets()
    # copy.secret (the masking key) is one too; the sandbox's has a default
    masking_key = "sandbox-only-masking-key-not-for-production"
    assert set(secrets) == {
        "the-django-secret-key",
        "tok-123456",
        "app-db-pw",
        "admin-db-pw",
        masking_key,
    }
    assert secrets == sorted(secrets, key=len, reverse=True)
    assert "127.0.0.1,127.0.0.2,localhost" not in secrets  # ALLOWED_HOSTS is a setting
    assert "127.0.0.1:8765" not in secrets  # APP_BIND too
    shown = repr(env) + str(env)
    for value in secrets:
        assert value not in shown


# --------------------------------------------------------------------------- checks


CHECKS_AT = LOCAL.index("checks:\n")


def with_checks(block: str) -> str:
    return LOCAL[:CHECKS_AT] + "checks:\n" + block


def test_expectations_are_parsed(tmp_path: Path) -> None:
    env = load(
        tmp_path,
        with_checks(
            "  - {name: literal, sql: select 0, expect: 0, when: pre}\n"
            "  - {name: text, sql: select 'x', expect: x}\n"
            "  - {name: at least, sql: select 1, expect: {min: 1}}\n"
            "  - {name: at most, sql: select 1, expect: {max: 2.5}}\n"
            "  - {name: differs, sql: select 1, expect: {not_equals: 3}}\n"
            "  - {name: range, sql: select 1, expect: {between: [1, 5]}}\n"
            "  - {name: same, sql: select 1, expect: {equals_before: true, tolerance_pct: 2.5}}\n"
            "  - {name: grew, sql: select 1, expect: {delta: 3}}\n"
            "  - {name: none, sql: 'select 1 where false;', expect: {rows: 0}}\n"
        ),
    )
    got = {c.name: c.expect for c in env.checks}
    assert got == {
        "literal": Expectation("equals", 0),
        "text": Expectation("equals", "x"),
        "at least": Expectation("min", 1),
        "at most": Expectation("max", 2.5),
        "differs": Expectation("not_equals", 3),
        "range": Expectation("between", [1, 5]),
        "same": Expectation("equals_before", True, 2.5),
        "grew": Expectation("delta", 3),
        "none": Expectation("rows", 0),
    }
    assert env.checks[0].when == "pre"
    assert env.checks[1].when == "post"
    assert env.checks[-1].sql == "select 1 where false"  # the trailing ; is dropped
    assert got["same"].needs_before and got["grew"].needs_before
    assert not got["range"].needs_before
    assert got["same"].describe() == "equal to before ±2.5%"
    assert got["range"].describe() == "between 1 and 5"
    assert got["at least"].describe() == ">= 1"
    assert got["grew"].describe() == "before +3"


def test_bad_expectations(tmp_path: Path) -> None:
    message = problems(
        tmp_path,
        with_checks(
            "  - {name: two, sql: select 1, expect: {min: 1, max: 2}}\n"
            "  - {name: falsy, sql: select 1, expect: {equals_before: false}}\n"
            "  - {name: short, sql: select 1, expect: {between: [1]}}\n"
            "  - {name: word, sql: select 1, expect: {min: many}}\n"
            "  - {name: absent, sql: select 1}\n"
            "  - {name: typo, sql: select 1, expect: {equal: 1}}\n"
            "  - {name: nosql, expect: 1}\n"
            "  - {name: late, sql: select 1, expect: 1, when: later}\n"
        ),
    )
    assert "9 problems" in message
    assert "checks[two].expect: exactly one of" in message
    assert "checks[falsy].expect.equals_before: write `equals_before: true`" in message
    assert "checks[short].expect.between: expected [low, high]" in message
    assert "checks[word].expect.min: expected a number" in message
    assert "checks[absent].expect: required" in message
    assert "checks[typo].expect.equal: unknown key" in message
    assert "checks[nosql]: exactly one of sql, count, checksum, sample" in message
    assert "checks[late].when: expected pre or post, got 'later'" in message


def test_between_bounds_must_be_numbers(tmp_path: Path) -> None:
    message = problems(
        tmp_path, with_checks("  - {name: r, sql: select 1, expect: {between: [low, high]}}\n")
    )
    assert "checks[r].expect.between" in message


def test_pre_checks_cannot_compare_with_before(tmp_path: Path) -> None:
    message = problems(
        tmp_path,
        with_checks(
            "  - {name: a, when: pre, sql: select 1, expect: {equals_before: true}}\n"
            "  - {name: b, when: pre, sql: select 1, expect: {delta: 1}}\n"
        ),
    )
    assert "checks[a]: a pre check cannot compare with before" in message
    assert "checks[b]: a pre check cannot compare with before" in message


def test_duplicate_check_names_are_rejected(tmp_path: Path) -> None:
    message = problems(
        tmp_path,
        with_checks(
            "  - {name: same, sql: select 1, expect: 1}\n"
            "  - {name: other, sql: select 1, expect: 1}\n"
            "  - {name: same, sql: select 2, expect: 2}\n"
        ),
    )
    assert "checks[2].name: duplicate check name 'same'" in message


# --------------------------------------------------------------------------- listing


def test_list_environments_uses_valid_file_names_only(tmp_path: Path) -> None:
    envdir = tmp_path / "environments"
    envdir.mkdir()
    for name in (
        "local.yml",
        "prod-eu.yml",
        "staging_2.yml",
        "Prod.yml",
        "1st.yml",
        "my env.yml",
        ".hidden.yml",
        "-x.yml",
        "notes.yaml",
        "local.yml.bak",
        "README.md",
    ):
        (envdir / name).write_text("this: [is not parsed\n")
    assert list_environments(envdir) == ["local", "prod-eu", "staging_2"]
    assert list_environments(tmp_path / "absent") == []


# --------------------------------------------------------------------------- layering


def test_extends_and_defaults_layer_mappings_and_replace_the_rest(tmp_path: Path) -> None:
    envdir = write(tmp_path, LOCAL, "local")
    (envdir / "_defaults.yml").write_text(
        "backup:\n  keep: 3\n  compression: 5\ndb:\n  statement_timeout: 7s\n"
    )
    (envdir / "review.yml").write_text(
        "extends: local\n"
        "description: a review app\n"
        "db:\n  name: shop_review\n"
        "checks:\n  - {name: only this, sql: select 1, expect: 1}\n"
    )
    review = load_environment("review", envdir)
    local = load_environment("local", envdir)
    assert review.description == "a review app"
    assert review.db.name == "shop_review"  # replaced key by key ...
    assert review.db.user == local.db.user  # ... the rest of db comes from local.yml
    assert review.db.statement_timeout == local.db.statement_timeout  # local.yml beats defaults
    assert review.backup.keep == local.backup.keep == 10
    assert review.backup.compression == local.backup.compression  # local.yml sets it too
    assert [c.name for c in review.checks] == ["only this"]  # lists are replaced, not merged
    assert "review" in list_environments(envdir) and "_defaults" not in list_environments(envdir)
    # a key only the defaults set
    assert local.backup.copy == "none"
    (envdir / "_defaults.yml").write_text("backup:\n  copy: download\n")
    assert load_environment("local", envdir).backup.copy == "download"


def test_layering_errors_name_the_file_they_come_from(tmp_path: Path) -> None:
    envdir = write(tmp_path, LOCAL, "local")
    (envdir / "_defaults.yml").write_text("backup:\n  keepp: 3\n")
    message = problems(tmp_path, LOCAL)
    assert "_defaults.yml line 2: backup.keepp: unknown key" in message
    (envdir / "_defaults.yml").unlink()
    (envdir / "a.yml").write_text("extends: b\n")
    (envdir / "b.yml").write_text("extends: a\n")
    with pytest.raises(ConfigError, match=r"extends: a cycle \(a.yml -> b.yml -> a.yml\)"):
        load_environment("a", envdir)
    (envdir / "c.yml").write_text("extends: nowhere\n")
    with pytest.raises(ConfigError, match=r"nowhere.yml: no such file to extend \(from c.yml\)"):
        load_environment("c", envdir)
    (envdir / "d.yml").write_text("extends: [local]\n")
    with pytest.raises(ConfigError, match=r"d\.yml: extends: expected an environment name"):
        load_environment("d", envdir)


def test_ssh_config_file(tmp_path: Path) -> None:
    message = problems(tmp_path, edit(LOCAL, "  config: none", "  config: /nonexistent/ssh"))
    assert "ssh.config: /nonexistent/ssh not found (or write `none`)" in message
    env = load(tmp_path, LOCAL)
    assert env.ssh.config_file is None
    given = tmp_path / "ssh_config"
    given.write_text("Host *\n  User nobody\n")
    env = load(tmp_path, edit(LOCAL, "  config: none", f"  config: {given}"))
    assert env.ssh.config_file == given
    # local.yml sets ssh.port but not ssh.user: hosts take the port as given, the user
    # may come from the config
    host = env.roles.db
    assert (host.port_default, host.user_default) == (False, True)


HOOKS = """
hooks:
  timeout: 20
  backup:
    before: echo dump starts
  switch:
    before: [echo a, {run: echo b, timeout: 5, on: local}]
    after:
      - run: echo c
        on: migrate
  notify: curl -fsS https://chat.example.invalid/hook
"""


def test_hooks_parse_with_defaults_places_and_timeouts(tmp_path: Path) -> None:
    env = load(tmp_path, LOCAL + HOOKS)
    hooks = env.hooks
    (backup,) = hooks.of("before", "backup")
    assert (backup.run, backup.timeout, backup.on) == ("echo dump starts", 20.0, "db")
    a, b = hooks.of("before", "switch")
    assert (a.on, a.timeout) == ("app", 20.0)
    assert (b.run, b.timeout, b.on) == ("echo b", 5.0, "local")
    assert [h.on for h in hooks.of("after", "switch")] == ["migrate"]
    assert hooks.of("after", "restart") == ()
    assert hooks.notify[0].on == "local"
    assert hooks.configured()["before_switch"] == ["echo a", "echo b"]


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("hooks:\n  deploy: {before: x}\n", "hooks.deploy: unknown key"),
        ("hooks:\n  switch: {during: x}\n", "hooks.switch.during: unknown key"),
        ("hooks:\n  switch: {before: [{timeout: 3}]}\n", "hooks.switch.before[0]: expected"),
        ("hooks:\n  switch: {before: [{run: x, on: moon}]}\n", "hooks.switch.before[0].on:"),
        ("hooks:\n  switch: {before: 3}\n", "hooks.switch.before: expected a command"),
    ],
)
def test_bad_hooks_are_named(tmp_path: Path, snippet: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(tmp_path, LOCAL + snippet)


def test_unknown_keys_in_nested_sections_name_the_whole_path(tmp_path: Path) -> None:
    text = edit(LOCAL, "    status: 200\n", "    status: 200\n    retries: 3\n")
    with pytest.raises(ConfigError, match=re.escape("app.health.retries: unknown key")):
        load(tmp_path, text)


# --------------------------------------------------------------------------- copy


def test_copy_section_defaults_and_paths(tmp_path: Path) -> None:
    env = load(tmp_path, LOCAL)
    assert env.copy.rules == tmp_path / "repo" / "masking" / "shop.yml"
    assert env.copy.sample == 50 and env.copy.secret is not None
    bare = load(tmp_path, LOCAL[: LOCAL.index("copy:\n")] + LOCAL[LOCAL.index("\n# Hooks") :])
    assert bare.copy.rules is None and bare.copy.secret is None


def test_copy_section_problems_name_line_and_key(tmp_path: Path) -> None:
    text = edit(LOCAL, "  sample: 50 ", "  sample: 0 \n  samples: 3 ")
    found = problems(tmp_path, text)
    assert "copy.sample: must be >= 1" in found
    assert "copy.samples: unknown key (expected one of: rules, sample, secret)" in found


def test_production_copies_need_the_masking_key_only_for_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seed.copy.masking import copy_settings

    for var, value in (
        ("SHOP_PRODUCTION_SECRET_KEY", "k"),
        ("SHOP_PRODUCTION_DB_PASSWORD", "p"),
        ("SHOP_PRODUCTION_PG_ADMIN_PASSWORD", "a"),
    ):
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("SEED_MASK_KEY", raising=False)
    (tmp_path / "repo" / "masking").mkdir(parents=True)
    (tmp_path / "repo" / "masking" / "shop.yml").write_text(
        (SHIPPED.parent / "masking" / "shop.yml").read_text()
    )
    env = load(tmp_path, (SHIPPED / "production.yml").read_text(), "production")
    assert env.copy.secret is None  # every other command works without it
    with pytest.raises(ConfigError, match=r"copy\.secret is not set or empty.*export it"):
        copy_settings(env)
    monkeypatch.setenv("SEED_MASK_KEY", "the-key")
    env = load(tmp_path, (SHIPPED / "production.yml").read_text(), "production")
    rules, _ = copy_settings(env)
    assert "public.shop_customer" in rules.tables and "the-key" in env.secrets()


# --------------------------------------------------------------------------- lint


def test_lint_section(tmp_path: Path) -> None:
    env = load(tmp_path, LOCAL)
    assert env.lint.enabled and env.lint.big_table_rows == 100_000 and env.lint.waivers == ()
    text = LOCAL + (
        "lint:\n  big_table_rows: 5000\n  exclude: [ban-drop-column]\n"
        "  waivers:\n    - {migration: shop.0005_x, rule: '*', reason: approved in review}\n"
    )
    env = load(tmp_path, text)
    assert env.lint.big_table_rows == 5000 and env.lint.exclude == ("ban-drop-column",)
    assert env.lint.waivers[0].reason == "approved in review"


def test_lint_waiver_without_a_reason_is_refused(tmp_path: Path) -> None:
    text = LOCAL + "lint:\n  block: no-list\n  waivers:\n    - {migration: shop.0005_x, rule: r}\n"
    found = problems(tmp_path, text)
    assert "lint.block: expected a list of rule names" in found
    assert "lint.waivers[0].reason: required" in found


def test_rehearse_section(tmp_path: Path) -> None:
    env = load(tmp_path, LOCAL)
    assert env.rehearse.max_lock_seconds is None and not env.rehearse.before_upgradedb
    text = LOCAL + (
        "rehearse:\n  max_lock_seconds: 2.5\n  max_total_seconds: 600\n"
        "  scale_from: production\n  before_upgradedb: true\n"
    )
    env = load(tmp_path, text)
    assert env.rehearse.max_lock_seconds == 2.5 and env.rehearse.max_total_seconds == 600
    assert env.rehearse.scale_from == "production" and env.rehearse.before_upgradedb
    found = problems(tmp_path, LOCAL + "rehearse:\n  max_lock_seconds: -1\n  scale_from: Prod!\n")
    assert "rehearse.max_lock_seconds: expected a positive number" in found
    assert "rehearse.scale_from: expected an environment name" in found


def test_imports_compare_with_names_another_environment(tmp_path: Path) -> None:
    env = load(tmp_path, LOCAL + "imports: {compare_with: staging}\n")
    assert env.imports.compare_with == "staging"
    assert load(tmp_path, LOCAL).imports.compare_with is None
    assert "imports.compare_with: expected the name of another environment" in problems(
        tmp_path, LOCAL + "imports: {compare_with: local}\n"
    )
    assert "imports.comapre_with" in problems(
        tmp_path, LOCAL + "imports: {comapre_with: staging}\n"
    )


def test_invariants_on_error(tmp_path: Path) -> None:
    """`invariants.on_error`: warn (default) or fail; anything else is a one-line error."""
    assert load(tmp_path, LOCAL).invariants.on_error == "warn"
    text = edit(LOCAL, "invariants:\n", "invariants:\n  on_error: fail\n")
    env = load(tmp_path, text)
    assert env.invariants.on_error == "fail"
    assert env.invariants.django_check and env.invariants.django_check.fail_level == "WARNING"
    text = edit(LOCAL, "invariants:\n", "invariants:\n  on_error:\n")  # null: the default
    assert load(tmp_path, text).invariants.on_error == "warn"
    text = edit(LOCAL, "invariants:\n", "invariants:\n  on_error: ignore\n")
    line = LOCAL.splitlines().index("invariants:") + 2
    message = problems(tmp_path, text)
    assert f"line {line}: invariants.on_error: expected one of warn, fail, got 'ignore'" in message
    assert "\n" not in message.strip()
