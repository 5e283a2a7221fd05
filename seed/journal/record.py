"""The record of one run: the journal entry on the state host, its copies on the control
machine and the JSON report CI reads (docs/report.md) are this one type.

Every module that writes or reads a run's record uses its typed fields; `to_json`
writes the document and `from_json` reads any record Seed ever wrote:

- version 1 (before this type; no `record_version`): the writes rule's counters were
  `after_migrate.write_counters` (or `after.write_counters`): read as one handover;
- version 2: `record_version: 2`, the readings in `counter_readings`.

Keys this version does not know (a newer Seed's) are kept in `extra` and written back
as they were, so rewriting someone else's record (`rolled_back_by`, `recovered_by`)
loses nothing. The parts other modules own (a before-state's figures, a verification,
the lint result, a rehearsal) stay JSON objects: their producers define them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import seed
from seed.run.report import StepRecord, iso, who

RECORD_VERSION = 2

# -- the writes rule's readings (seed.undo.database reads them) ------------------------------------

FREEZE = "freeze"  # the app is stopped and its sessions ended
HANDOVER = "handover"  # the app may write from here on
BACKUP = "backup"  # a backup of a serving database (before its snapshot was taken)
# the before-state fingerprinted while serving (backup.strategy pitr), before its snapshot:
# which tables were written until the freeze; not a backup's moment (the writes rule skips it)
SERVING = "serving"


@dataclass
class Reading:
    """The write counters of every table at one moment (`event`) of a run."""

    event: str
    at: str = ""
    database: str = ""  # "<oid>/<stats_reset>": readings compare only within one ("" unknown)
    counters: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)  # table -> relfilenode
    error: str = ""  # the reading failed: nothing compares with it

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.event, "at": self.at, "database": self.database}
        if self.error:
            data["error"] = self.error
        else:
            data["counters"] = self.counters
            data["files"] = self.files
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reading:
        return cls(
            event=str(data.get("event", "")),
            at=str(data.get("at", "")),
            database=str(data.get("database", "")),
            counters={str(k): int(v) for k, v in (data.get("counters") or {}).items()},
            files={str(k): int(v) for k, v in (data.get("files") or {}).items()},
            error=str(data.get("error", "")) if "counters" not in data else "",
        )


# -- the typed parts ------------------------------------------------------------------------


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass
class Control:
    """The `fab` process of the run (how a later run tells whether it still lives)."""

    host: str
    pid: int | None

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid}

    @classmethod
    def from_json(cls, data: Any) -> Control | None:
        if not isinstance(data, dict):
            return None
        pid = data.get("pid")
        return cls(str(data.get("host", "")), pid if isinstance(pid, int) else None)


@dataclass
class BackupRef:
    """The backup a run took or used: which, where, its sha256; the rest the run recorded
    about it (manifest path, how it was verified, a full manifest) in `details`."""

    id: str
    path: str = ""
    sha256: str = ""
    size: int | None = None
    seconds: float | None = None
    deploy_id: str | None = None  # a deploy's backup: the deploy that took it
    copy: str | None = None  # an off-host copy (backup.copy: download)
    details: dict[str, Any] = field(default_factory=dict)

    _KNOWN = ("id", "path", "sha256", "size", "seconds", "deploy_id", "copy")

    @property
    def run(self) -> str:
        """The run that took it: the writes rule counts the app's writes from there."""
        return self.deploy_id or self.id

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "path": self.path, "sha256": self.sha256}
        for name in ("size", "seconds", "deploy_id", "copy"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return {**data, **self.details}

    @classmethod
    def from_json(cls, data: Any) -> BackupRef | None:
        if not isinstance(data, dict) or not data.get("id"):
            return None
        size, seconds = data.get("size"), data.get("seconds")
        return cls(
            id=str(data["id"]),
            path=str(data.get("path") or ""),
            sha256=str(data.get("sha256") or ""),
            size=int(size) if isinstance(size, int | float) else None,
            seconds=float(seconds) if isinstance(seconds, int | float) else None,
            deploy_id=_opt_str(data.get("deploy_id")),
            copy=_opt_str(data.get("copy")),
            details={k: v for k, v in data.items() if k not in cls._KNOWN},
        )


@dataclass
class Migrations:
    """A deploy's migrations: the plan from pre-flight, then what migrate did."""

    applied_before: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    plan: list[dict[str, Any]] = field(default_factory=list)  # seed.deploy.plan's per migration
    applied: list[str] = field(default_factory=list)
    output: str | None = None  # Django's
    attempts: int | None = None  # lock-timeout retries

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "applied_before": self.applied_before,
            "planned": self.planned,
            "plan": self.plan,
            "applied": self.applied,
        }
        if self.output is not None:
            data["output"] = self.output
        if self.attempts is not None:
            data["attempts"] = self.attempts
        return data

    @classmethod
    def from_json(cls, data: Any) -> Migrations | None:
        if not isinstance(data, dict):
            return None
        attempts = data.get("attempts")
        return cls(
            applied_before=[str(m) for m in data.get("applied_before") or []],
            planned=[str(m) for m in data.get("planned") or []],
            plan=list(data.get("plan") or []),
            applied=[str(m) for m in data.get("applied") or []],
            output=_opt_str(data.get("output")),
            attempts=attempts if isinstance(attempts, int) else None,
        )


@dataclass
class Method:
    """How a database change is (or would be) undone, and why."""

    method: str
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "why": self.why}

    @classmethod
    def from_json(cls, data: Any) -> Method | None:
        if not isinstance(data, dict) or not data.get("method"):
            return None
        return cls(str(data["method"]), str(data.get("why", "")))


@dataclass
class RollbackRecord:
    """What a rollback did: the method, where each part stands, the verification."""

    method: str
    why: str = ""
    state: dict[str, str] | None = None  # the run's state, shared (updated as it goes)
    reverse_failed: str | None = None  # why a reverse fell back to the restore
    stopped_for_writes: bool = False  # the release wrote rows a restore would lose
    output: str | None = None  # Django's, of a reverse
    replaced_database: str | None = None
    sequences_moved_forward: list[str] | None = None
    verification: dict[str, Any] | None = None
    # a point-in-time restore: the backup it started from and seconds per part (stop,
    # restore, start, replay)
    point_in_time: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"method": self.method, "why": self.why}
        if self.state is not None:
            data["state"] = self.state
        if self.reverse_failed is not None:
            data["reverse_failed"] = self.reverse_failed
        if self.stopped_for_writes:
            data["stopped_for_writes"] = True
        for name in (
            "output",
            "replaced_database",
            "sequences_moved_forward",
            "verification",
            "point_in_time",
        ):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_json(cls, data: Any) -> RollbackRecord | None:
        if not isinstance(data, dict) or not data.get("method"):
            return None
        moved = data.get("sequences_moved_forward")
        return cls(
            method=str(data["method"]),
            why=str(data.get("why", "")),
            state=dict(data["state"]) if isinstance(data.get("state"), dict) else None,
            reverse_failed=_opt_str(data.get("reverse_failed")),
            stopped_for_writes=bool(data.get("stopped_for_writes")),
            output=_opt_str(data.get("output")),
            replaced_database=_opt_str(data.get("replaced_database")),
            sequences_moved_forward=[str(s) for s in moved] if isinstance(moved, list) else None,
            verification=data.get("verification"),
            point_in_time=data.get("point_in_time"),
        )


@dataclass
class Snapshot:
    """The database copy a deploy took in its window (backup.strategy: snapshot+dump)."""

    database: str
    strategy: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"database": self.database, "strategy": self.strategy, "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: Any) -> Snapshot | None:
        if not isinstance(data, dict) or not data.get("database"):
            return None
        return cls(
            str(data["database"]), str(data.get("strategy", "")), float(data.get("seconds") or 0)
        )


def _steps(data: Any) -> list[StepRecord]:
    return [
        StepRecord(
            name=str(s.get("name", "")),
            started_at=str(s.get("started_at", "")),
            seconds=float(s.get("seconds") or 0),
            outcome=str(s.get("outcome", "")),
            detail=str(s.get("detail", "")),
        )
        for s in data or []
        if isinstance(s, dict)
    ]


def _readings(data: Any) -> list[Reading]:
    return [Reading.from_json(r) for r in data or [] if isinstance(r, dict)]


def _dict(data: Any) -> dict[str, Any] | None:
    return dict(data) if isinstance(data, dict) else None


def _list(data: Any) -> list[Any]:
    return list(data) if isinstance(data, list) else []


def _opt_list(data: Any) -> list[Any] | None:
    return list(data) if isinstance(data, list) else None


def _float(data: Any) -> float | None:
    return float(data) if isinstance(data, int | float) and not isinstance(data, bool) else None


def _version(data: Any) -> int:
    return data if isinstance(data, int) else 1


def _previous(data: Any) -> dict[str, str | None] | None:
    if not isinstance(data, dict):
        return None
    return {str(k): _opt_str(v) for k, v in data.items()}


def _int(data: Any) -> int | None:
    return data if isinstance(data, int) and not isinstance(data, bool) else None


@dataclass
class RunRecord:
    """One run of any kind. Fields in the order the JSON document has them; a field that is
    None (or an empty list) is left out, except those `_NULL` names."""

    environment: str = ""
    command: str = ""
    deploy_id: str = ""
    kind: str = ""
    record_version: int = RECORD_VERSION
    seed_version: str = field(default_factory=lambda: seed.__version__)
    control: Control | None = None
    who: str = field(default_factory=who)
    started_at: str = field(default_factory=iso)
    finished_at: str | None = None
    outcome: str = "running"
    exit_code: int | None = None
    message: str = ""
    recovered_by: str | None = None  # a run that died: the run that recovered it
    rolled_back_by: str | None = None  # a deploy: the rollback that undid it
    # -- what a deploy (and a rehearsal) works on
    mode: str | None = None  # upgradedb: code-only | online | maintenance (seed.deploy.plan)
    mode_why: str | None = None
    # an online deploy: what it adds (seed.deploy.online), the indexes invalid before it, the
    # added columns' and tables' figures right after its migrate (seed.undo.online)
    online: dict[str, Any] | None = None
    downtime_seconds: float | None = None  # the site had no serving host (seed.deploy.availability)
    downtime: list[dict[str, Any]] | None = None  # those intervals: {from, to, seconds}
    ref: str | None = None
    sha: str | None = None  # rehearse: the sha rehearsed
    sha_before: str | None = None
    sha_after: str | None = None
    release_before: str | None = None
    release_after: str | None = None
    previous_releases: dict[str, str | None] | None = None  # host -> release
    database: dict[str, Any] | None = None  # {server_version, size_bytes}
    migrations: Migrations | None = None
    reverse: dict[str, Any] | None = None  # seed.undo.reverse.ReversePlan
    rollback_plan: Method | None = None
    lint: dict[str, Any] | None = None  # seed.rehearse.lint's result + summary
    resumes: str | None = None  # upgradedb --resume: the deploy this run finished
    before: dict[str, Any] | None = None  # the before-state (seed.backup.restore compares)
    backup: BackupRef | None = None
    newest_backup: dict[str, Any] | None = None  # code-only without a backup: the newest one
    snapshot: Snapshot | None = None
    after_checks: dict[str, Any] | None = None  # see from_json
    # -- going back
    counter_readings: list[Reading] = field(default_factory=list)
    writes_since: dict[str, Any] | None = None  # the writes rule: {since, tables, why}
    rollback: RollbackRecord | None = None
    target: str | None = None  # rollback: the deploy undone
    recovering: list[str] | None = None  # rollback: the dead runs it recovers
    replaced_database: str | None = None
    point_in_time: dict[str, Any] | None = None  # a restore to a restore point: its parts
    verification: dict[str, Any] | None = None
    state: dict[str, str] | None = None  # where each part stands
    # -- the command's own output (docs/report.md, per command)
    source: str | None = None  # copy: the source environment
    gate: dict[str, Any] | None = None  # copy, copy-rules
    masking: dict[str, Any] | None = None  # copy
    masked_dump: dict[str, Any] | None = None  # copy
    rehearsal: dict[str, Any] | None = None  # rehearse
    import_: dict[str, Any] | None = None  # import-legacy
    baseline: dict[str, Any] | None = None  # validate
    release: str | None = None  # validate: the release `current` points to
    reason: str | None = None  # unlock
    holder: dict[str, Any] | None = None  # unlock: the lock record
    holder_sessions: list[int] | None = None  # unlock
    # -- every run
    hosts: dict[str, dict[str, str]] | None = None  # host -> step -> outcome
    hooks_run: list[dict[str, Any]] = field(default_factory=list)
    hook_failures: list[str] = field(default_factory=list)
    accepted_host_keys: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer Seed, kept

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in _NAMES:
            value = getattr(self, name)
            unknown = value is None or (isinstance(value, list) and not value)
            if unknown and _NULL.get(name) not in ("always", self.kind):
                continue
            if name == "after_checks":
                value = {"checks": value}
            data[_JSON_NAME.get(name, name)] = _jsonable(value)
        return {**data, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """Any record Seed wrote (see the module's docstring); never raises on a field of
        the wrong shape (it reads as absent)."""
        known: dict[str, Any] = {}
        for name in _NAMES:
            raw = data.get(_JSON_NAME.get(name, name))
            if name == "after_checks":
                raw = raw.get("checks") if isinstance(raw, dict) else None
            decode: Callable[[Any], Any] = _DECODE.get(name, _opt_str)
            if raw is not None:
                known[name] = decode(raw)
        known.setdefault("record_version", 1)
        record = cls(**known)
        record.extra = {k: v for k, v in data.items() if k not in _KEYS}
        if not record.counter_readings:
            record.counter_readings = _legacy_readings(data)
        return record


def _legacy_readings(data: dict[str, Any]) -> list[Reading]:
    """A version-1 record's counters (before readings existed): the counters alone, read
    as a handover."""
    for key in ("after_migrate", "after"):
        part = data.get(key)
        counters = part.get("write_counters") if isinstance(part, dict) else None
        if isinstance(counters, dict):
            return [Reading(HANDOVER, counters={str(k): int(v) for k, v in counters.items()})]
    return []


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


# how each field is read from JSON (the default: a string or None)
_DECODE: dict[str, Callable[[Any], Any]] = {
    "environment": str,
    "command": str,
    "deploy_id": str,
    "kind": str,
    "record_version": _version,
    "seed_version": str,
    "control": Control.from_json,
    "who": str,
    "started_at": str,
    "outcome": str,
    "exit_code": _int,
    "message": str,
    "downtime_seconds": _float,
    "downtime": _opt_list,
    "previous_releases": _previous,
    "database": _dict,
    "migrations": Migrations.from_json,
    "reverse": _dict,
    "rollback_plan": Method.from_json,
    "lint": _dict,
    "online": _dict,
    "before": _dict,
    "backup": BackupRef.from_json,
    "snapshot": Snapshot.from_json,
    "newest_backup": _dict,
    "after_checks": _dict,
    "counter_readings": _readings,
    "writes_since": _dict,
    "rollback": RollbackRecord.from_json,
    "recovering": _opt_list,
    "point_in_time": _dict,
    "verification": _dict,
    "state": _dict,
    "gate": _dict,
    "masking": _dict,
    "masked_dump": _dict,
    "rehearsal": _dict,
    "import_": _dict,
    "baseline": _dict,
    "holder": _dict,
    "holder_sessions": _opt_list,
    "hosts": _dict,
    "hooks_run": _list,
    "hook_failures": _list,
    "accepted_host_keys": _list,
    "steps": _steps,
    "checks": _list,
}
# its key in the document, where not its name
_JSON_NAME = {"after_checks": "after", "import_": "import"}
# written as null while unknown: always, or in the records of one kind; else left out
_NULL = {
    "finished_at": "always",
    "exit_code": "always",
    "ref": "upgradedb",
    "sha_before": "upgradedb",
    "sha_after": "upgradedb",
    "release_before": "upgradedb",
    "release_after": "upgradedb",
    "steps": "always",
    "checks": "always",
}

_NAMES = [f.name for f in dataclasses.fields(RunRecord) if f.name != "extra"]
_KEYS = {_JSON_NAME.get(name, name) for name in _NAMES}
