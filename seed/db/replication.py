"""Replication that a restore's rename swap would break, found before anything changes."""

from __future__ import annotations

from typing import Any

from seed.config.environment import Environment
from seed.errors import PreflightFailed


def replication_blockers(conn: Any, dbname: str) -> list[str]:
    """What a rename swap would break: replication slots, subscriptions, streaming replicas."""
    found = []
    for name, kind in conn.execute(
        "select slot_name, slot_type from pg_replication_slots "
        "where slot_type = 'physical' or database = %s",
        (dbname,),
    ).fetchall():
        found.append(f"{kind} replication slot {name}")
    for (name,) in conn.execute(
        "select s.subname from pg_subscription s join pg_database d on d.oid = s.subdbid "
        "where d.datname = %s",
        (dbname,),
    ).fetchall():
        found.append(f"subscription {name}")
    for app, addr in conn.execute(
        "select application_name, client_addr::text from pg_stat_replication"
    ).fetchall():
        found.append(f"streaming replica {app or '?'} ({addr or 'local'})")
    return found


def refuse_if_replicated(env: Environment, conn: Any) -> None:
    blockers = replication_blockers(conn, env.db.name)
    if blockers and not env.backup.allow_replication:
        raise PreflightFailed(
            f"{env.db.name} is replicated ({', '.join(blockers)}): a restore replaces the "
            "database by a rename swap, which logical replication and replicas do not follow; "
            "set backup.allow_replication: true only if you have planned for that"
        )
