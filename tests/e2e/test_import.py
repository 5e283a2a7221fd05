"""`fab local import-legacy` into the sandbox at v4 (customers with contact details):
a small messy export with known rejects and duplicates, a generated one, a dry run,
a re-import that only updates, and a load that fails and leaves the table as it was."""

from __future__ import annotations

import csv
import gzip
import json
import os
import pty
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from secrets import token_hex
from typing import Any
from urllib.parse import quote

import pandas as pd
import pytest
import yaml
from psycopg import sql

from sandbox.messy import generate, write_csv
from tests.e2e.conftest import FAB, REPO, Deployment
from tests.e2e.personal import private_hits
from tests.e2e.test_rollback import bring_to_v2
from tests.e2e.watch import watching
from tests.unit.legacy.test_legacy import MESSY

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
        # maintenance: a rollback that restores its backup is what the import must survive
        res = dep.fab("local", "upgradedb", "--ref", ref, "--mode", "maintenance")
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


def last_import(dep: Deployment, env: str = "local") -> dict[str, Any]:
    return dep.last_report(env)["import"]


def test_a_dry_run_writes_nothing_but_its_files(at_v4: Any) -> None:
    dep, small, _ = at_v4
    before = dep.figures()
    res = dep.fab(
        "local", "import-legacy", "--source", str(small), "--mapping", MAPPING, "--dry-run"
    )
    assert res.returncode == 0, res.stderr
    assert "dry run" in res.stderr.strip().splitlines()[-1] and "nothing was written" in res.stderr
    table = [
        line.split("import into shop_customer: ", 1)[1]
        for line in res.stderr.splitlines()
        if "import into shop_customer: " in line
    ]
    cells = [[c.strip() for c in row.split("|")][:5] for row in table]
    assert cells == [
        ["step", "in", "out", "rejected", "merged"],
        ["extract", "", "9", "", ""],
        ["clean", "9", "5", "4", ""],
        ["deduplicate", "5", "4", "", "1"],
        ["model validation", "4", "4", "0", ""],
        ["total (in = valid + rejected + merged)", "9", "4", "4", "1"],
    ]
    assert dep.figures() == before
    summary = last_import(dep)
    assert summary["counts"] == {
        "rows_in": 9,
        "valid": 4,
        "rejected": 4,
        "merged": 1,
        "new": 4,
        "existing": 0,
    }
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
    assert "4 new, 0 updated, 0 unchanged, 4 rejected, 1 merged, out of 9 rows" in res.stderr
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
    assert "0 new, 0 updated, 4 unchanged" in again.stderr  # the same values: not rewritten
    assert dep.scalar("select count(*) from shop_customer") == customers + 4


def test_a_failed_load_leaves_the_table_as_it_was(at_v4: Any) -> None:
    dep, small, _ = at_v4
    with dep.admin("shop") as conn:  # a rule the database has and the model does not
        # the import changes Curie's row back (an unchanged row would not be rewritten)
        conn.execute("update shop_customer set city = 'Lyon' where email = 'marie@example.org'")
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
            conn.execute(
                "update shop_customer set city = 'Utrecht' where email = 'marie@example.org'"
            )


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


# the team secret both environments' digests are keyed with: without it each has its own
# key and their imports cannot be compared key by key
TEAM_SECRET = "import-test-team-secret-5be1"  # noqa: S105


def prod_like(dep: Deployment) -> Path:
    """`prod`: the same servers as `local`, protected, its imports compared with local's
    (both with one digests.secret)."""
    envdir = dep.variant("import-prod", {"digests.secret": TEAM_SECRET})
    root = dep.root
    (envdir / "prod.yml").write_text(
        yaml.safe_dump(
            {
                "extends": "local",
                "description": "production-like",
                "protected": True,
                "state_dir": f"{root}/server/var/lib/seed/prod",
                "backup": {"dir": f"{root}/server/var/backups/prod"},
                "imports": {"compare_with": "local"},
            }
        )
    )
    return envdir


def test_production_shows_its_differences_from_staging_before_loading(
    at_v4: Any, tmp_path: Path
) -> None:
    dep, small, _ = at_v4
    envdir = prod_like(dep)
    args = ("prod", "import-legacy", "--source", str(small), "--mapping", MAPPING)
    # staging's run (local's) under the team secret: changes nothing, kept to compare with
    res = dep.fab("local", *args[1:], envdir=envdir)
    assert res.returncode == 0, res.stderr
    # protected, no terminal, no --yes: refused before anything is read
    res = dep.fab(*args, envdir=envdir)
    assert res.returncode == 2, res.stderr
    assert "prod is protected: import into prod needs confirmation" in res.stderr
    before = dep.figures()
    # the same export as local's loaded run: the comparison is printed, nothing differs
    res = dep.fab(*args, "--yes", envdir=envdir)
    assert res.returncode == 0, res.stderr
    assert "same     source data: 9 rows" in res.stderr
    assert "same     rejected: 4" in res.stderr and "DIFFERS" not in res.stderr
    assert "same     valid records, key by key: 4" in res.stderr
    summary = last_import(dep, "prod")
    comparison = summary["comparison"]
    assert comparison["differences"] == 0 and comparison["against"]["env"] == "local"
    assert "0 new, 0 updated, 4 unchanged" in res.stderr
    assert dep.figures() == before  # the same rows again: nothing rewritten
    kept = json.loads(Path(summary["files"]["record"]).read_text())
    assert kept["outcome"] == "loaded" and kept["env"] == "prod"
    # another export: one more bad email, one row fewer → shown before loading
    lines = EXPORT.splitlines()
    changed = tmp_path / "changed.csv"
    changed.write_text(
        "\n".join([lines[0], lines[1].replace("@", "#", 1), *lines[2:-1]]) + "\n",
        encoding="utf-8",
    )
    res = dep.fab(
        "prod",
        "import-legacy",
        "--source",
        str(changed),
        "--mapping",
        MAPPING,
        "--dry-run",
        envdir=envdir,
    )
    assert res.returncode == 0, res.stderr
    assert "DIFFERS  source data: local read 9 rows" in res.stderr
    assert "DIFFERS  rows in: 9 on local, 8 here (-1)" in res.stderr
    assert "DIFFERS  rejected for 'email: not an email address': 1 on local, 2 here" in res.stderr
    # Zoë is not in it, Jan's record is now row 3's alone (row 2 rejected, nothing merged)
    assert (
        "DIFFERS  valid records by key (email): 0 only here, 1 only on local, 1 with other values"
        in res.stderr
    )
    assert last_import(dep, "prod")["comparison"]["differences"] >= 3
    # no earlier run to compare with: refused before the export is read
    res = dep.fab(*args, "--yes", "--compare-with", "nowhere", envdir=envdir)
    assert res.returncode == 4, res.stderr
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith("seed: no import into shop_customer on nowhere yet")
    )


def test_a_human_confirms_after_seeing_the_differences(at_v4: Any) -> None:
    """On a terminal the prompt comes after the comparison; a wrong answer loads nothing."""
    dep, small, _ = at_v4
    envdir = prod_like(dep)
    backups = sorted((dep.root / "server" / "var" / "backups" / "prod").glob("*.dump"))
    master, slave = pty.openpty()
    env = {**os.environ, **dep.env, "SEED_ENVIRONMENTS": str(envdir)}
    env.pop("SEED_ASSUME_YES", None)
    os.write(master, b"not-prod\n")  # typed ahead: read when the prompt comes
    try:
        res = subprocess.run(
            [FAB, "prod", "import-legacy", "--source", str(small), "--mapping", MAPPING],
            cwd=REPO,
            env=env,
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert res.returncode == 2, res.stderr
    assert "confirmation did not match 'prod'; nothing done" in res.stderr
    shown = res.stderr.index("same     source data")
    assert shown < res.stderr.index("confirmation did not match")
    assert "Type 'prod' to load into shop_customer with 0 difference(s)" in res.stdout
    after = sorted((dep.root / "server" / "var" / "backups" / "prod").glob("*.dump"))
    assert after == backups  # refused before the backup


ORDERS = """\
target: {model: shop.Order, table: shop_order, key: [id]}
columns:
  id: {from: Nr, required: true}
  customer_id: {from: Klant, required: true}
  total: {from: Bedrag}
  status: {from: Status, clean: [lower]}
  placed_at: {from: Datum, clean: [{date: ["%Y-%m-%d"]}], required: true}
"""


def test_model_rules_foreign_keys_choices_and_uniqueness_in_batches(
    at_v4: Any, tmp_path: Path
) -> None:
    dep, _, _ = at_v4
    customer = dep.scalar("select min(id) from shop_customer")
    order = dep.scalar("select min(id) from shop_order")
    mapping = tmp_path / "orders.yml"
    mapping.write_text(ORDERS)
    export = tmp_path / "orders.csv"
    export.write_text(
        "Nr;Klant;Bedrag;Status;Datum\n"
        f"{order};{customer};10.00;PAID;2024-01-02\n"  # updates an existing order
        f"900001;{customer};12.50;new;2024-01-03\n"
        "900002;987654321;5.00;new;2024-01-03\n"  # no such customer
        f"900003;{customer};5.00;lost;2024-01-03\n"  # not a status
        f"900004;{customer};1.234;new;2024-01-03\n"  # too many decimals
        f"900001;{customer};7.00;new;2024-01-04\n"  # the same new id twice
        f"abc;{customer};1.00;new;2024-01-04\n",  # a key that is no number
        encoding="utf-8",
    )
    res = dep.fab(
        "local", "import-legacy", "--source", str(export), "--mapping", str(mapping), "--dry-run"
    )
    assert res.returncode == 0, res.stderr
    summary = last_import(dep)
    assert summary["counts"] == {
        "rows_in": 7,
        "valid": 2,
        "rejected": 5,
        "merged": 0,
        "new": 1,
        "existing": 1,
    }
    with open(summary["files"]["rejects"], newline="") as f:
        rejects = list(csv.reader(f))[1:]
    assert rejects == [
        ["4", "model: customer: customer instance with id 987654321 is not a valid choice."],
        ["5", "model: status: Value 'lost' is not a valid choice."],
        ["6", "model: total: Ensure that there are no more than 2 decimal places."],
        ["7", "model: id: Order with this ID is in this import twice (the first one is kept)."],
        ["8", "model: id: “abc” value must be an integer."],
    ]


def test_a_model_or_table_typo_is_one_clear_error_before_any_backup(
    at_v4: Any, tmp_path: Path
) -> None:
    dep, small, _ = at_v4
    backups = len(dep.backups())
    for wrong, says in (
        ("model: shop.Customer,", "target.model: no model shop.Custmer in the deployed release"),
        ("table: shop_customer,", "target.table shop_customers is not the table of shop.Customer"),
    ):
        bad = tmp_path / "bad.yml"
        text = Path(MAPPING).read_text()
        bad.write_text(
            text.replace("model: shop.Customer,", "model: shop.Custmer,")
            if wrong.startswith("model")
            else text.replace("table: shop_customer,", "table: shop_customers,")
        )
        res = dep.fab("local", "import-legacy", "--source", str(small), "--mapping", str(bad))
        assert res.returncode == 4, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith(f"seed: {bad}: {says}"), last
    assert len(dep.backups()) == backups


def test_an_update_changes_only_the_mapped_columns(at_v4: Any, tmp_path: Path) -> None:
    """A column the mapping leaves out keeps its value on an existing row (the model's
    default is for new rows only)."""
    dep, small, _ = at_v4
    res = dep.fab("local", "import-legacy", "--source", str(small), "--mapping", MAPPING)
    assert res.returncode == 0, res.stderr
    with dep.admin("shop") as conn:
        conn.execute(
            "update shop_customer set street = 'Oude Gracht 9', first_name = 'J.' "
            "where email = 'jan.jansen@example.com'"
        )
    narrow = tmp_path / "narrow.yml"
    text = Path(MAPPING).read_text()
    assert "  street: {from: Straat}\n" in text
    narrow.write_text(text.replace("  street: {from: Straat}\n", ""))
    res = dep.fab("local", "import-legacy", "--source", str(small), "--mapping", str(narrow))
    assert res.returncode == 0, res.stderr
    row = imported(dep, ["jan.jansen@example.com"])["jan.jansen@example.com"]
    assert row["street"] == "Oude Gracht 9"  # not mapped: kept
    assert row["first_name"] == "Jan"  # mapped: updated


def test_a_rollback_after_an_import_does_not_lose_it_silently(at_v4: Any) -> None:
    """Rolling back v4 by restoring its backup would drop the imported customers: it is
    refused, naming the import, unless --discard-writes."""
    dep, _, _ = at_v4
    before = dep.figures()
    res = dep.fab("local", "rollback", "--method", "restore")
    assert res.returncode == 4, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "writes happened since" in last and "shop_customer" in last, last
    assert "(among them import " in last and "--discard-writes" in last, last
    assert dep.figures() == before


def every_file_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield path


def test_a_legacy_database_password_is_never_recorded(at_v4: Any, tmp_path: Path) -> None:
    """The old CRM's PostgreSQL database as the source: its password written in the DSN
    (warned: `ps` shows it), as a '${VAR}', or left to PGPASSWORD as for psql. Never in
    the output, the report, the import record, the journal (here and on the state host)
    or the lock record — neither as typed nor URL-encoded."""
    dep, _, _ = at_v4
    password = f"Leg@cy:pw/{token_hex(4)}%"
    with dep.admin() as conn:
        conn.execute("drop database if exists legacy_crm")
        conn.execute("drop role if exists legacy_reader")
        conn.execute(sql.SQL("create role legacy_reader login password {}").format(password))
        conn.execute("create database legacy_crm owner legacy_reader")
    header, *rows = [line.split(";") for line in EXPORT.strip().splitlines()]
    with dep.admin("legacy_crm") as conn:
        columns = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(h)) for h in header)
        conn.execute(sql.SQL("create table klanten ({})").format(columns))
        conn.execute("grant select on klanten to legacy_reader")
        with conn.cursor().copy("copy klanten from stdin") as copy:
            for row in rows:
                copy.write_row(row)
    mapping = yaml.safe_load(Path(MAPPING).read_text())
    mapping["source"] = {"query": 'select * from klanten order by "Klantnr"'}
    mapping_file = tmp_path / "crm.yml"
    mapping_file.write_text(yaml.safe_dump(mapping))
    port = dep.sandbox.spec.pg_port
    where = f"127.0.0.1:{port}/legacy_crm"
    forms = [
        (f"postgresql://legacy_reader:{quote(password, safe='')}@{where}", {}, True),
        ("postgresql://legacy_reader:${CRM_PASSWORD}@" + where, {"CRM_PASSWORD": password}, False),
        (f"postgresql://legacy_reader@{where}", {"PGPASSWORD": password}, False),
    ]
    outputs = []
    for source, env, warned in forms:
        res = dep.fab(
            "local", "import-legacy", "--source", source, "--mapping", str(mapping_file),
            "--dry-run", extra_env=env,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        assert ("warning: --source has its password written in it" in res.stderr) is warned
        assert last_import(dep)["source"]["path"].startswith("postgresql://legacy_reader")
        outputs.append(res.stdout + res.stderr)
    # one real import (journal, lock record and backup on the state host), every command
    # on the hosts and here recorded (tests/e2e/watch.py)
    source, env, _ = forms[1]
    with watching(dep, tmp_path / "watch", os.environ["PATH"]) as watch:
        watched = dep.variant("import-watched")
        data = yaml.safe_load((watched / "local.yml").read_text())
        watch.ssh_settings(data)
        (watched / "local.yml").write_text(yaml.safe_dump(data, sort_keys=False))
        res = dep.fab(
            "local", "import-legacy", "--source", source, "--mapping", str(mapping_file),
            extra_env={**env, "PATH": watch.path}, envdir=watched,
        )  # fmt: skip
        outputs.append(watch.commands())
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pg_dump" in outputs[-1], outputs[-1][:300]  # the backup before the import
    outputs.append(res.stdout + res.stderr)
    secrets = (password, quote(password, safe=""), quote(password), shlex.quote(password))
    for text in outputs:
        assert not any(s in text for s in secrets), text
    state = dep.root / "server" / "var" / "lib" / "seed" / "local"
    for path in every_file_under(dep.home, state):
        data = path.read_bytes()
        assert not any(s.encode() in data for s in secrets), path
    # what Seed wrote here is as private as on the state host: reports, the journal
    # mirror, the import's rejects (e-mail addresses), the caches
    # (Seed's own folders: each environment's, the caches and logs; the tests keep their
    # own files beside them, e.g. keys and known_hosts of the bad-input tests)
    tops = {"cache", "logs"} | {
        d.name for d in dep.home.iterdir() if (d / "reports").is_dir() or (d / "journal").is_dir()
    }
    written = [p for p in dep.home.rglob("*") if p.relative_to(dep.home).parts[0] in tops]
    assert any(p.name == "rejects.csv" for p in written)
    assert "local" in tops and len(written) > 20, tops
    for path in [dep.home, *written]:
        st = path.lstat()
        # git's local clone hard-links the origin's objects: their mode is the origin's
        # (the 0700 folders above keep them private)
        if not path.is_symlink() and (path.is_dir() or st.st_nlink == 1):
            assert st.st_mode & 0o077 == 0, (path, oct(st.st_mode))


def test_a_central_european_export_is_read_in_its_code_page(at_v4: Any, tmp_path: Path) -> None:
    """An export from a Polish Windows machine (cp1250), for a Dutch shop: its text reads
    as written — it used to be read as cp1252 without a word ("Wyspa £¹kowa")."""
    dep, _, _ = at_v4
    polish = EXPORT.replace("de Boer", "Wróbel").replace("Vaak", "Dąbrowski")
    polish = polish.replace("curie", "ścisło").replace("Atlantis", "Wyspa Łąkowa")
    source = tmp_path / "eksport.csv"
    source.write_bytes(polish.replace("\n", "\r\n").encode("cp1250"))
    res = dep.fab(
        "local", "import-legacy", "--source", str(source), "--mapping", MAPPING, "--dry-run"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    summary = last_import(dep)
    assert summary["source"]["encoding"] == "cp1250", summary["source"]
    assert "rows (csv, cp1250 (letters), ';')" in res.stderr, res.stderr
    rejects = Path(summary["files"]["rejects"]).read_text(encoding="utf-8")
    assert "country: not a country: 'Wyspa Łąkowa'" in rejects, rejects


def test_import_files_hold_no_personal_data_but_the_work_list(at_v4: Any) -> None:
    """After every import above (dry runs, loads, comparisons with local's, failures):
    no report, journal record, import.json or keys.tsv.gz here or on the state hosts holds
    a customer's name or e-mail address; the rejects and merges (the user's work list)
    do, and are 0600. keys.tsv.gz is keyed: the unkeyed digest of a loaded address is
    not in it."""
    dep, _, _ = at_v4
    state = dep.root / "server" / "var" / "lib" / "seed"
    found = private_hits(dep, [dep.home, state])
    assert not found, found
    assert any(dep.home.rglob("rejects.csv"))
    keys = sorted(dep.home.glob("local/imports/*/keys.tsv.gz"))[-1]
    text = gzip.decompress(keys.read_bytes()).decode()
    assert text.startswith("#hmac-sha256 ")
    email = dep.scalar("select email from shop_customer order by id desc limit 1")
    guess = pd.util.hash_pandas_object(pd.DataFrame({"email": [email]}), index=False)
    assert f"{int(guess.iloc[0]):016x}" not in text
