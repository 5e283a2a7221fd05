"""seed.cli.edge.confirm on a real terminal (a pty): what typed answers do."""

from __future__ import annotations

import os
import pty
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from seed.cli.edge import confirm
from seed.errors import Refused


class Env:
    name = "prod"


@pytest.fixture()
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """sys.stdin is a pty's slave; writing to the yielded fd types on it."""
    master, slave = pty.openpty()
    stdin = os.fdopen(slave, "r")
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.delenv("SEED_ASSUME_YES", raising=False)
    try:
        yield master
    finally:
        stdin.close()
        os.close(master)


def test_the_name_typed_confirms(terminal: int) -> None:
    os.write(terminal, b"prod\n")
    confirm(Env(), "load", False, "prod is protected")  # type: ignore[arg-type]


@pytest.mark.parametrize("typed", [b"production\n", b"\x04"], ids=["another name", "ctrl-d"])
def test_anything_else_refuses_in_one_line(terminal: int, typed: bytes) -> None:
    os.write(terminal, typed)
    with pytest.raises(Refused, match="confirmation did not match 'prod'; nothing done"):
        confirm(Env(), "load", False, "prod is protected")  # type: ignore[arg-type]
