"""The code a deploy (or a plan, a lint, a rehearsal) is about: a ref resolved and
archived on the control machine, unpacked read-only on the migrate host to ask Django
what it would apply."""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from seed.checks import run as checkrun
from seed.checks.spec import Check
from seed.config.environment import Environment, Waiver
from seed.deploy import release as rel
from seed.deploy.plan import DeployPlan, plan_deploy
from seed.errors import SeedError
from seed.rehearse import lint as lintlib
from seed.remote.session import Session
from seed.remote.ssh import q
from seed.run.report import utcnow


@dataclass
class Target:
    """A ref resolved on the control machine: its sha, archive and requirements."""

    ref: str
    mirror: Path
    sha: str
    archive: Path
    requirements: bytes


def fetch_target(env: Environment, ref: str | None, local_root: Path) -> Target:
    """Resolve `ref` (default app.ref) in the local mirror of the app's repo and build its
    archive; PreflightFailed when it has no requirements (release.requirements_of)."""
    ref = ref or env.app.ref
    mirror = rel.repo_cache(env.app.repo, local_root / "cache" / "repos")
    sha = rel.resolve_ref(mirror, ref)
    archive = rel.build_archive(mirror, sha, local_root / "cache" / "archives", env.app.root)
    requirements = rel.requirements_of(mirror, sha, ref, env.app.root)
    return Target(ref, mirror, sha, archive, requirements)


def release_waivers(env: Environment, target: Target) -> list[Waiver]:
    """The lint waivers that apply to the target: the environment file's and the release's
    own `deploy/lint.yml` (read from the local mirror: no SSH)."""
    text = rel.file_at(target.mirror, target.sha, lintlib.REPO_WAIVERS)
    where = f"{lintlib.REPO_WAIVERS} at {target.ref} ({target.sha[:12]})"
    return [*env.lint.waivers, *lintlib.repo_waivers(text, where)]


def release_checks(env: Environment, target: Target) -> tuple[Check, ...]:
    """The checks a deploy of the target runs: the environment file's and the release's own
    `deploy/checks.yml`."""
    text = rel.file_at(target.mirror, target.sha, checkrun.REPO_CHECKS)
    where = f"{checkrun.REPO_CHECKS} at {target.ref} ({target.sha[:12]})"
    return env.checks + checkrun.repo_checks(text, where, env.checks)


@dataclass
class TargetRelease:
    """The target code unpacked in a temporary folder of the migrate host."""

    layout: rel.Layout
    path: str  # the release folder (manage.py, .venv)
    venv: str  # how its virtualenv came about


@contextlib.contextmanager
def target_release(
    env: Environment, session: Session, layout: rel.Layout, target: Target
) -> Iterator[TargetRelease]:
    """Unpack the target code into `mktemp -d` on the migrate host, with a virtualenv (the
    deployed one for the same requirements, read-only through a symlink, else a
    throw-away one) and an env file for `env` (its db.name is the database Django
    uses); the folder is removed at the end, whatever happens."""
    remote = session.migrator
    tmp = remote.check("mktemp -d /tmp/seed-plan-XXXXXXXX", "making a temporary folder")
    tmp_root = tmp.stdout.strip()
    try:
        scratch = rel.Layout(tmp_root)
        rid = rel.release_id(target.sha, f"{utcnow():%Y%m%d%H%M%S}")
        version = rel.upload_release_and_python(
            remote, scratch, rid, target.archive, target.sha, env.app.python
        )
        vhash = rel.venv_hash(target.requirements, version)
        deployed = layout.venv(vhash)
        if remote.exists(posixpath.join(deployed, ".seed-complete")):
            remote.check(f"ln -s {q(deployed)} {q(scratch.venv(vhash))}", "linking the venv")
            venv = "deployed (shared)"
        else:
            venv = "throw-away (requirements differ from every deployed release)"
        job = posixpath.join(tmp_root, "venv-job")
        rel.ensure_venv(env, remote, scratch, rid, vhash, job, target.requirements)
        rel.write_env_file(env, remote, scratch, rid)
        yield TargetRelease(scratch, scratch.release(rid), venv)
    finally:
        with contextlib.suppress(SeedError, OSError):
            remote.run(f"rm -rf {q(tmp_root)}", timeout=120)


def target_plan(
    env: Environment,
    session: Session,
    layout: rel.Layout,
    target: Target,
    app_name: str,
    with_sql: bool = False,
    mode: str | None = None,
) -> tuple[DeployPlan, str]:
    """The deploy plan of the target code (read in a temporary folder on the migrate
    host); and which venv it used."""
    with target_release(env, session, layout, target) as unpacked:
        plan = plan_deploy(
            session.migrator,
            unpacked.layout,
            unpacked.path,
            env,
            app_name,
            with_sql,
            mode,
            waivers=release_waivers(env, target),
            checks=release_checks(env, target),
        )
    return plan, unpacked.venv
