"""Rows of the fault matrix the suite prints at the end (tests/faults/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    fault: str
    outcome: str  # "old state" | "new state", verified
    recovery: float  # seconds from the fault to the environment verified again
    how: str  # the command(s) that recovered


MATRIX: list[Row] = []
