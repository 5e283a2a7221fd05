"""seed.run.report: scrubbing, plain CI output with steps, the JSON report file."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

import seed
from seed.journal.record import RunRecord
from seed.run.report import Output, Scrubber, iso, throttled, write_json

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def test_scrubber_replaces_secrets_in_text() -> None:
    scrub = Scrubber(["hunter22", "hunter2222", "s3cr3t:with/chars"])
    assert scrub("pw=hunter2222 and hunter22.") == "pw=*** and ***."
    assert scrub("url postgres://u:s3cr3t:with/chars@h/db") == "url postgres://u:***@h/db"
    assert scrub("nothing here") == "nothing here"
    assert Scrubber()("hunter22") == "hunter22"


def test_scrubber_replaces_secrets_in_nested_data() -> None:
    scrub = Scrubber(["topsecret"])
    data = {
        "message": "failed: password topsecret rejected",
        "steps": [{"detail": "topsecret"}, {"detail": "fine", "seconds": 1.5}],
        "pair": ("a-topsecret-b", 3),
        "count": 7,
        "none": None,
    }
    assert scrub.data(data) == {
        "message": "failed: password *** rejected",
        "steps": [{"detail": "***"}, {"detail": "fine", "seconds": 1.5}],
        "pair": ["a-***-b", 3],
        "count": 7,
        "none": None,
    }
    assert data["message"] == "failed: password topsecret rejected"  # the input is untouched


def test_plain_output_lines_are_timestamped_and_scrubbed() -> None:
    stream = io.StringIO()
    out = Output("staging", Scrubber(["topsecret"]), stream=stream, plain=True)
    out.line("hello topsecret\nsecond line")
    out.detail("indented\n")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(STAMP + r" \[staging\] hello \*\*\*", lines[0])
    assert re.fullmatch(STAMP + r" \[staging\] second line", lines[1])
    assert re.fullmatch(STAMP + r" \[staging\]     indented", lines[2])


def test_output_without_a_tty_is_plain() -> None:
    assert Output("x", Scrubber(), stream=io.StringIO()).plain is True


def test_steps_record_outcome_and_duration() -> None:
    stream = io.StringIO()
    out = Output("local", Scrubber(), stream=stream, plain=True)
    report = RunRecord(environment="local", kind="upgradedb", deploy_id="d-1")
    with out.step(report, "lock"):
        time.sleep(0.05)
    with out.step(report, "backup") as record:
        record.detail = "12 MB"
    with out.step(report, "restart") as record:
        record.outcome = "skipped"
        record.detail = "no restart command"
    assert [(s.name, s.outcome) for s in report.steps] == [
        ("lock", "ok"),
        ("backup", "ok"),
        ("restart", "skipped"),
    ]
    assert 0.05 <= report.steps[0].seconds < 1
    assert re.fullmatch(STAMP, report.steps[0].started_at)
    text = stream.getvalue()
    assert re.search(r"\[local\] ▶ lock\n", text)
    assert re.search(r"\[local\] ✔ lock \(0\.\d\ds\)\n", text)
    assert re.search(r"✔ backup \(\d\.\d\ds\): 12 MB\n", text)
    assert re.search(r"- restart \(\d\.\d\ds\): no restart command\n", text)


def test_failing_step_reraises_and_records_failed() -> None:
    stream = io.StringIO()
    out = Output("local", Scrubber(["topsecret"]), stream=stream, plain=True)
    report = RunRecord(environment="local", kind="upgradedb", deploy_id="d-2")
    with (
        pytest.raises(RuntimeError, match="pg_dump: password topsecret"),
        out.step(report, "backup"),
    ):
        time.sleep(0.02)
        raise RuntimeError("pg_dump: password topsecret rejected")
    step = report.steps[0]
    assert step.outcome == "failed"
    assert step.detail == "pg_dump: password *** rejected"
    assert step.seconds >= 0.02
    assert re.search(r"✘ backup failed after \d\.\d\ds", stream.getvalue())
    assert "topsecret" not in stream.getvalue()


def test_summary_lists_every_step() -> None:
    stream = io.StringIO()
    out = Output("local", Scrubber(["topsecret"]), stream=stream, plain=True)
    report = RunRecord(environment="local", kind="validate", deploy_id="d-3")
    with out.step(report, "checks"):
        pass
    report.outcome, report.exit_code, report.message = "failed", 7, "1 check failed (topsecret)"
    out.summary(report)
    text = stream.getvalue()
    assert re.search(r"summary: checks +ok +\d+\.\d\ds", text)
    assert "result: failed (exit 7) 1 check failed (***)" in text


def test_report_json_shape() -> None:
    report = RunRecord(environment="local", command="upgradedb", deploy_id="d-4", sha_after="abc")
    data = report.to_json()
    assert data["seed_version"] == seed.__version__
    assert (data["environment"], data["command"], data["deploy_id"]) == (
        "local",
        "upgradedb",
        "d-4",
    )
    assert data["sha_after"] == "abc"
    assert re.fullmatch(STAMP, data["started_at"])
    assert "@" in data["who"]
    assert data["steps"] == [] and data["checks"] == []


def test_write_json_scrubs_and_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "r.json"
    scrub = Scrubber(["p@ss:word"])
    write_json(path, {"message": "login p@ss:word", "nested": {"x": ["p@ss:word"]}}, scrub)
    assert json.loads(path.read_text()) == {"message": "login ***", "nested": {"x": ["***"]}}
    assert "p@ss:word" not in path.read_text()
    write_json(path, {"second": True}, scrub)
    assert json.loads(path.read_text()) == {"second": True}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]  # no .tmp left


def test_iso() -> None:
    assert re.fullmatch(STAMP, iso())


def test_a_long_step_says_it_is_still_running_and_stops_when_it_ends() -> None:
    """CI kills a job whose log stays silent: a step quiet for `heartbeat` seconds (30 by
    default, SEED_HEARTBEAT_SECONDS) prints that it is still running, until it ends."""
    stream = io.StringIO()
    out = Output("prod", Scrubber(), stream=stream, plain=True)
    assert out.heartbeat == 30.0
    out.heartbeat = 0.05
    report = RunRecord(environment="prod", command="t", deploy_id="x", kind="backup")
    with out.step(report, "backup"):
        time.sleep(0.23)
    beats = stream.getvalue().count("… backup still running (0m00s)")
    assert beats >= 3
    time.sleep(0.15)
    assert stream.getvalue().count("still running") == beats
    assert (
        stream.getvalue().rstrip().endswith("✔ backup (0.23s)") or "✔ backup (" in stream.getvalue()
    )


def test_progress_figures_ride_on_the_heartbeat_in_a_ci_log() -> None:
    """Plain output has no bar: the heartbeat line says bytes done of the expected size and
    the rate; the figure goes with the progress block."""
    stream = io.StringIO()
    out = Output("prod", Scrubber(), stream=stream, plain=True)
    out.heartbeat = 0.05
    report = RunRecord(environment="prod", command="t", deploy_id="x", kind="backup")
    with out.step(report, "backup"):
        with out.progress("dumped", 40_000_000) as progress:
            progress(12_300_000)
            time.sleep(0.12)
        time.sleep(0.12)
    lines = [ln for ln in stream.getvalue().splitlines() if "still running" in ln]
    assert re.search(r"\(0m00s; 12\.3 MB of ~40\.0 MB dumped, [\d.]+ [KMG]B/s\)$", lines[0])
    assert lines[-1].endswith("still running (0m00s)")


def test_a_figure_past_a_low_estimate_says_so() -> None:
    """The estimate comes from the last backup's compression ratio: a database that grew
    with less compressible data dumps more. The line says so rather than "50 of ~40"."""
    stream = io.StringIO()
    out = Output("prod", Scrubber(), stream=stream, plain=True)
    out.heartbeat = 0.05
    report = RunRecord(environment="prod", command="t", deploy_id="x", kind="backup")
    with out.step(report, "backup"), out.progress("dumped", 40_000_000) as progress:
        progress(50_000_000)
        time.sleep(0.12)
    lines = [ln for ln in stream.getvalue().splitlines() if "still running" in ln]
    assert "50.0 MB dumped (over the ~40.0 MB expected), " in lines[0], lines


def test_throttled_measures_at_most_so_often_and_skips_nothing_to_say() -> None:
    figures = iter([None, 5, 7])
    seen: list[int] = []
    poll = throttled(0.05, lambda: next(figures), seen.append)
    poll()  # None: nothing reported
    poll()  # too soon: not even measured
    time.sleep(0.06)
    poll()
    time.sleep(0.06)
    poll()
    assert seen == [5, 7]


def test_passwords_written_into_urls_or_settings_are_redacted() -> None:
    scrub = Scrubber(["known-secret"])
    assert scrub(
        "fab local import-legacy --source postgresql://crm:p%40ss@db:5432/old "
        "and https://ci:ghp_token123@github.com/acme/shop.git, host=x password='a b' user=y, "
        "password=plain known-secret"
    ) == (
        "fab local import-legacy --source postgresql://crm:***@db:5432/old "
        "and https://ci:***@github.com/acme/shop.git, host=x password=*** user=y, "
        "password=*** ***"
    )
    # no password: left as it is (a user name, a port, an address)
    plain = "postgresql://crm@db:5432/old ssh://git@github.com:22/x mailto:a@b.example"
    assert scrub(plain) == plain
    scrub.add("learned")
    assert scrub("a learned thing") == "a *** thing"
