"""Apply one migration for a rehearsal: `python script APP NAME EXPECTED_DB`.

First asks the very connection Django will migrate through for `current_database()`
and refuses (exit 3) unless it is the rehearsal's scratch database: a rehearsal must
never migrate the real database by accident. Standard library + Django only.
"""

import sys

import django


def main() -> int:
    app, name, expected = sys.argv[1:4]
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("select current_database()")
        (database,) = cursor.fetchone()
    if database != expected:
        print(f"seed-rehearse REFUSED: connected to {database}, expected {expected}")
        return 3
    call_command("migrate", app, name, interactive=False, verbosity=1)
    print("seed-rehearse ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
