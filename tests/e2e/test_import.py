"""`fab local import-legacy` into the sandbox at v4 (customers with contact details):
a small messy export with known rejects and duplicates, a generated one, a dry run,
a re-import that only updates, and a load that fails and leaves the table as it was."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seed.messy import generate, write_csv
from tests.e2e.conftest import REPO, Deployment
from tests.e2e.test_rollback import bring_to_v2
from tests.unit.test_legacy import MESSY

MAPPING = str(REPO / "import" / "customers.yml")


def with_street_and_city(export: str) -> str:
    """The unit tests' export with the columns the v4 mapping also reads (Straat, Plaats)."""
    lines = []
    for i, line in enumerate(export.strip().splitlines()):
        parts = line.split(";")
        street, city = ("Straat", "Plaats") if i == 0 else ("Kerkstraat 1", "utrecht")
        lines.append(";".join([*parts[:5], street, parts[5], city, *parts[6:]]))
    return "\n".join(lines) + "\n"


EXPORT = with_street_and_city(MESSY)


@pytest.fixture(scope="module")
def at_v4(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    dep = deployment
    bring_to_v2(dep)
    for ref in ("v3", "v4"):
        res = dep.fab("local", "upgradedb", "--ref", ref)
        assert res.returncode == 0, res.stderr
    folder = tmp_path_factory.mktemp("imports")
    small = folder / "export.csv"
    small.write_text(EXPORT, encoding="utf-8")
    yield dep, small, folder


def imported(dep: Deployment, emails: list[str]) -> dict[str, dict[str, Any]]:
    with dep.admin("shop") as conn:
        rows = conn.execute(
            "select email, customer_no, first_name, last_name, phone, street, postcode, city, "
            "country, created_at::date::text from shop_customer where email = any(%s)",
            (emails,),
        ).fetchall()
    keys = [
        "customer_no",
        "first_name",
        "last_name",
        "phone",
        "street",
        "postcode",
        "city",
        "country",
        "created_at",
    ]
    return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in rows}


def last_import(dep: Deployment) -> dict[str, Any]:
    return dep.last_report()["import"]


def test_a_dry_run_writes_nothing_but_its_files(at_v4: Any) -> None:
    dep, small, _ = at_v4
    before = dep.figures()
    res = dep.fab(
        "local", "import-legacy", "--source", str(small), "--mapping", MAPPING, "--dry-run"
    )
    assert res.returncode == 0, res.stderr
    assert "dry run" in res.stderr.strip().splitlines()[-1] and "nothing was written" in res.stderr
    assert dep.figures() == before
    summary = last_import(dep)
    assert summary["counts"] == {"rows_in": 9, "valid": 4, "rejected": 4, "merged": 1}
    with open(summary["files"]["rejects"], newline="") as f:
        rejects = list(csv.reader(f))
    assert rejects == [
        ["row", "reason"],
        ["4", "email: not an email address: 'not-an-email'"],
        ["6", "email: required, but empty"],
        ["7", "country: not a country: 'Atlantis'"],
        ["9", "created_at: required, but empty"],  # the v4 mapping requires it
    ]
    with open(summary["files"]["duplicates"], newline="") as f:
        assert list(csv.reader(f))[1:] == [["2", "3", "email"]]


def test_the_import_loads_cleaned_rows_and_a_second_run_only_updates(at_v4: Any) -> None:
    dep, small, _ = at_v4
    customers = dep.scalar("select count(*) from shop_customer")
    backups = len(dep.backups())
    res = dep.fab("local", "import-legacy", "--source", str(small), "--mapping", MAPPING)
    assert res.returncode == 0, res.stderr
    assert "4 new, 0 updated, 4 rejected, 1 merged, out of 9 rows" in res.stderr
    assert len(dep.backups()) == backups + 1  # a verified backup before the load
    assert dep.scalar("select count(*) from shop_customer") == customers + 4
    rows = imported(dep, ["jan.jansen@example.com", "zoe.muller@example.com"])
    assert rows["jan.jansen@example.com"] == {
        "customer_no": "007",
        "first_name": "Jan",
        "last_name": "Jansen",
        "phone": "+31612345678",
        "street": "Kerkstraat 1",
        "postcode": "1234 AB",
        "city": "Utrecht",
        "country": "NL",
        "created_at": "2020-02-01",
    }
    assert rows["zoe.muller@example.com"]["phone"] == "+49301234567"
    again = dep.fab("local", "import-legacy", "--source", str(small), "--mapping", MAPPING)
    assert again.returncode == 0, again.stderr
    assert "0 new, 4 updated" in again.stderr
    assert dep.scalar("select count(*) from shop_customer") == customers + 4


def test_a_failed_load_leaves_the_table_as_it_was(at_v4: Any) -> None:
    dep, small, _ = at_v4
    with dep.admin("shop") as conn:  # a rule the database has and the model does not
        conn.execute(
            "alter table shop_customer add constraint no_curie check (last_name <> 'Curie') "
            "not valid"
        )
    try:
        before = dep.figures()
        res = dep.fab("local", "import-legacy", "--source", str(small), "--mapping", MAPPING)
        assert res.returncode == 5, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert "FAILED and was rolled back" in last and "no_curie" in last
        assert dep.figures() == before
        assert (
            dep.scalar("select count(*) from pg_tables where tablename like 'seed_import_%'") == 0
        )
    finally:
        with dep.admin("shop") as conn:
            conn.execute("alter table shop_customer drop constraint no_curie")


def test_a_generated_export_imports_and_reconciles(at_v4: Any) -> None:
    dep, _, folder = at_v4
    source = folder / "generated.csv"
    write_csv(generate(2000, seed=5), source)
    res = dep.fab(
        "local", "import-legacy", "--source", str(source), "--mapping", MAPPING, "--dry-run"
    )
    assert res.returncode == 0, res.stderr
    counts = last_import(dep)["counts"]
    assert counts["rows_in"] == 2000
    assert counts["valid"] + counts["rejected"] + counts["merged"] == 2000
    assert counts["merged"] > 50 and counts["rejected"] > 30


def test_a_mapping_typo_is_one_clear_error(at_v4: Any, tmp_path: Path) -> None:
    dep, small, _ = at_v4
    bad = tmp_path / "bad.yml"
    bad.write_text(Path(MAPPING).read_text().replace("clean: [phone]", "clean: [phnoe]"))
    res = dep.fab("local", "import-legacy", "--source", str(small), "--mapping", str(bad))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (
        f"seed: {bad}: columns.phone.clean: 'phnoe' is not a rule (one of strip, lower, upper, "
        "title, name, email, phone, postcode, country, or {date: [formats]})"
    )
