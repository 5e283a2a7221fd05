"""`fab <env> copy-rules [--check]`: the masking rules' schema-drift gate, alone.

Read-only: connects to the environment's database, reads its catalog and compares it
with `copy.rules` (seed/copy/masking.py). Lists unclassified tables and columns (with a
YAML snippet to paste and decide on), rules that do not fit their column, and rules
for tables or columns that no longer exist. With `--check`, exit 7 when the gate
would block a copy.
"""

from __future__ import annotations

from seed.copy import masking
from seed.copy.masking import copy_settings
from seed.errors import ChecksFailed
from seed.run.context import RunContext
from seed.run.operation import Operation


def skeleton(gate: masking.Gate) -> list[str]:
    """YAML lines for what the gate found unclassified, for the user to decide on."""
    lines: list[str] = []
    for table in gate.unclassified_tables:
        lines.append(
            f"  {table.removeprefix('public.')}: {{personal: false}}   # or personal: true"
        )
    by_table: dict[str, list[str]] = {}
    for entry in gate.unclassified_columns:
        name, _, kind = entry.partition(" ")
        table, _, column = name.rpartition(".")
        by_table.setdefault(table, []).append(f"      {column}: keep   # {kind.strip('()')}")
    for table, columns in by_table.items():
        lines.append(f"  {table.removeprefix('public.')}:  # add to its columns:")
        lines += columns
    return lines


class CopyRules(Operation):
    kind = "copy-rules"
    read_only = True

    def __init__(self, ctx: RunContext, *, check: bool = False) -> None:
        super().__init__(ctx)
        self.check = check
        self.rules, _ = copy_settings(ctx.env)

    def body(self) -> str:
        with self.out.step(self.report, "gate") as s:
            conn = self.session.connect(admin=True, app_name=self.app_name)
            try:
                tables = masking.catalog(conn)
            finally:
                conn.close()
            gate = masking.gate(self.rules, tables)
            self.report.gate = {"rules": str(self.rules.path), "live": gate.to_json()}
            personal = [t for t, r in self.rules.tables.items() if r.personal and t in tables]
            s.detail = (
                f"{self.rules.path.name} vs {self.env.db.name}: {len(tables)} tables, "
                f"{len(personal)} with personal data"
            )
            for problem in gate.blocking:
                self.out.detail("BLOCKS  " + problem)
            for stale in gate.stale:
                self.out.detail(f"stale   rule for {stale}, which does not exist (ignored)")
            lines = skeleton(gate)
            if lines:
                self.out.detail(f"to classify, in {self.rules.path} under tables: (then decide)")
                for line in lines:
                    self.out.detail(line)
            if gate.blocking:
                s.outcome = "failed"
        if gate.blocking and self.check:
            raise ChecksFailed(
                f"masking rules {self.rules.path} do not cover {self.env.name}'s schema: "
                + "; ".join(gate.blocking)
            )
        if gate.blocking:
            return (
                f"{len(gate.unclassified_tables)} table(s), {len(gate.unclassified_columns)} "
                f"column(s) unclassified, {len(gate.misfits)} misfit(s): a copy would be "
                "refused (exit 7 with --check)"
            )
        return f"every table and personal-data column of {self.env.name} is classified"
