"""One run of an environment's checks: plan at pre-flight, before-state, after-state.

Used by `upgradedb` (pre checks and baselines in the backup's snapshot, post checks
after migrate) and by `validate` (every check now, "before" = the journal's last
after-state). Never raises for a failing check: results say what failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from seed.checks import check as checklib
from seed.checks.check import CheckQueryError, CheckResult
from seed.checks.spec import Check, CheckParser
from seed.config.yaml12 import YamlError, load_yaml12
from seed.errors import PreflightFailed
from seed.run.digests import Digester

REPO_CHECKS = "deploy/checks.yml"


def repo_checks(
    text: bytes | None, source: str, env_checks: tuple[Check, ...]
) -> tuple[Check, ...]:
    """The checks of `deploy/checks.yml` in a release (`source` names it in errors)."""
    if text is None:
        return ()
    errors: list[str] = []
    try:
        raw = load_yaml12(text)
    except YamlError as exc:
        raise PreflightFailed(f"{source}: {exc}") from None
    checks: tuple[Check, ...] = ()
    if raw is not None:
        if not isinstance(raw, dict):
            errors.append("expected a mapping with `checks:`")
        else:
            parser = CheckParser(errors)
            parser.unknown(raw, "deploy/checks.yml", {"checks"})
            checks = parser.checks(raw.get("checks"), source=source)
    taken = {c.name for c in env_checks}
    errors += [
        f"checks[{c.name}]: the environment file has a check of the same name"
        for c in checks
        if c.name in taken
    ]
    if errors:
        n = len(errors)
        raise PreflightFailed(
            f"{source}: {n} problem{'s' if n > 1 else ''}: "
            + "; ".join(errors)
            + " (fix the file in the app repository)"
        )
    return checks


@dataclass
class CheckRun:
    checks: tuple[Check, ...]
    statement_timeout: str
    baselines: dict[str, Any] = field(default_factory=dict)
    no_baseline: dict[str, str] = field(default_factory=dict)
    results: list[CheckResult] = field(default_factory=list)
    # the key of the digests reports and records hold instead of row values: the
    # environment's (Operation.digester) where values outlive the run, else this process's
    digester: Digester | None = None

    def by_when(self, when: str) -> list[Check]:
        return [c for c in self.checks if c.when == when]

    def plan(self, conn: psycopg.Connection[Any]) -> None:
        """Pre-flight: EXPLAIN pre checks and the post checks that need a before-state.

        A post check whose table or column does not exist yet has no baseline (the
        migration may create it): it is skipped after migrate. Other post checks are
        EXPLAINed after migrate (they may use what the migration creates).
        """
        for check in self.checks:
            if check.when == "post" and not check.expect.needs_before:
                continue
            try:
                checklib.explain(conn, check, self.statement_timeout)
            except CheckQueryError as exc:
                if check.when == "post" and exc.missing_object:
                    self.no_baseline[check.name] = f"no baseline ({exc})"
                    continue
                raise PreflightFailed(f"check '{check.name}' does not plan: {exc}") from None

    def before_state(self, conn: psycopg.Connection[Any], snapshot: str | None) -> list[str]:
        """Run the pre checks and take the post checks' baselines (in `snapshot`).
        Returns what failed (empty: all good)."""
        failed = []
        for check in self.checks:
            if check.when == "pre":
                result = checklib.run_check(
                    conn, check, self.statement_timeout, snapshot=snapshot, digester=self.digester
                )
                self.results.append(result)
                if not result.passed:
                    failed.append(result.describe())
            elif check.expect.needs_before and check.name not in self.no_baseline:
                try:
                    self.baselines[check.name] = checklib.measure(
                        conn, check, self.statement_timeout, snapshot, digester=self.digester
                    )
                except CheckQueryError as exc:
                    failed.append(f"baseline of check '{check.name}' failed: {exc}")
        return failed

    def after_state(self, conn: psycopg.Connection[Any], when: tuple[str, ...] = ("post",)) -> None:
        """Run the checks of `when` against the baselines (missing → skipped)."""
        for check in self.checks:
            if check.when not in when:
                continue
            if check.name in self.no_baseline:
                result = checklib.skipped_check(check, self.no_baseline[check.name])
            else:
                result = checklib.run_check(
                    conn,
                    check,
                    self.statement_timeout,
                    self.baselines.get(check.name),
                    digester=self.digester,
                )
            self.results.append(result)

    def add(self, results: list[CheckResult]) -> None:
        self.results.extend(results)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def after_values(self) -> dict[str, Any]:
        """The measured value of every check that compares with before: the next run's
        baseline when `validate` has no fresher one."""
        wanted = {c.name: c for c in self.checks if c.expect.needs_before}
        return {
            r.name: checklib.recorded(wanted[r.name], r.value, self.digester)
            for r in self.results
            if r.name in wanted and r.error is None and not r.skipped and r.passed
        }

    def baselines_json(self) -> dict[str, Any]:
        """The baselines as the report holds them (no row values: digests)."""
        by_name = {c.name: c for c in self.checks}
        return {
            name: checklib.recorded(by_name[name], value, self.digester)
            for name, value in self.baselines.items()
        }
