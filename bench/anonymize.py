"""Benchmark: masking 1M customer rows vs a plain `UPDATE ... SET col = md5(col)`.

Run as `.venv/bin/python bench/anonymize.py [--rows 1000000] [--reps 3]` (never part
of `make test`). It starts a private sandbox and builds `people` (id, name, email,
phone, address, created_at), then times, in the same run, interleaved, median of
`--reps`, each on a fresh copy of the table without indexes (as `copy-to` masks: rows
loaded, indexes and keys built after):

1. ours: the UPDATE `seed.copy.masking.update_sql` makes for fake name, email, phone and
   address (en_US) plus a date shift, with a keyed HMAC-SHA256 per value;
2. baseline: `UPDATE people SET name = md5(name), email = md5(email), phone =
   md5(phone), address = md5(address)`;
3. alongside: the survival search of 200 sampled originals over the masked table.

The last line is `anonymize: ratio <ours/baseline> (target <= 3)`; exit status 1 on a
miss.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    Timings,
    bench_spec,
    headline,
    interleaved,
    say,
    stopwatch,
)
from sandbox.servers import sandbox_down, sandbox_up  # noqa: E402
from seed.copy import masking  # noqa: E402

TARGET = 3.0
OURS = "mask   seed update_sql: fake name/email/phone/address + date shift"
BASE = "mask   UPDATE SET col = md5(col) x4 (baseline)"
SEARCH = "check  200 sampled originals searched in every text column"
RULES = """
tables:
  people:
    personal: true
    columns:
      id: keep
      name: fake name
      email: fake email
      phone: fake phone
      address: fake address
      created_at: {date_shift: 30}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    args = parser.parse_args()
    if args.rows < 1000 or args.reps < 1:
        parser.error("--rows must be >= 1000 and --reps >= 1")
    spec = bench_spec()
    t = Timings()
    try:
        info = sandbox_up(spec)
        rules_path = spec.root / "rules.yml"
        rules_path.write_text(RULES)
        rules = masking.load_rules(rules_path)
        key = masking.Key.from_secret("benchmark key")
        with psycopg.connect(info.admin_conninfo(spec.db_name), autocommit=True) as conn:
            conn.execute(
                """
                create table base as
                select g as id, 'Customer ' || g || ' Lastname' || (g % 977) as name,
                       'customer' || g || '@example.com' as email,
                       '+1 212 555 ' || lpad((g % 10000)::text, 4, '0') as phone,
                       (g % 997) || ' Main Street, apartment ' || (g % 313) as address,
                       timestamptz '2020-01-01 00:00:00+00' + g * interval '17 seconds'
                         as created_at
                  from generate_series(1, %s) g
                """.replace("%s", str(args.rows))
            )
            conn.execute("vacuum analyze base")
            say(f"data: {args.rows:,} people in {spec.db_name} (pg {spec.pg_port})")

            def fresh() -> None:
                conn.execute("drop table if exists people")
                conn.execute("create table people as table base")
                conn.execute("vacuum analyze people")

            def ours() -> None:
                fresh()
                columns = masking.catalog(conn)["public.people"]
                masking.load_key(conn, key)
                statement = masking.update_sql(
                    "public.people", rules.tables["public.people"], columns
                )
                assert statement is not None
                with stopwatch() as w:
                    conn.execute(statement)
                t.add(OURS, w[0])
                samples = [r[0] for r in conn.execute("select email from base limit 200")]
                with stopwatch() as w:
                    found = masking.survivors(
                        conn,
                        {("public.people", "email"): samples},
                        {"public.people": columns},
                    )
                t.add(SEARCH, w[0])
                assert not found, found

            def baseline() -> None:
                fresh()
                with stopwatch() as w:
                    conn.execute(
                        "update people set name = md5(name), email = md5(email), "
                        "phone = md5(phone), address = md5(address)"
                    )
                t.add(BASE, w[0])

            for i in range(args.reps):
                interleaved(i, ours, baseline)
        say(t.table())
        rate = args.rows / t.median(OURS)
        say(f"ours: {rate:,.0f} rows/s; baseline: {args.rows / t.median(BASE):,.0f} rows/s")
        ratio = t.median(OURS) / t.median(BASE)
        return headline("anonymize", ratio, TARGET)
    finally:
        sandbox_down(spec, purge=True)


if __name__ == "__main__":
    sys.exit(main())
