"""Check imported records with the model's own rules (run with the release's venv and
settings): `python script app_label.Model RECORDS.jsonl KEY[,KEY...]`.

Each input line is `{"i": n, "values": {field: text}}`. For every record: a model
instance is built (Python-side defaults, `default=callable`, applied by the
constructor; `auto_now`/`auto_now_add` by the fields' pre_save), the existing row
with the same key (if any) lends its primary key so that the uniqueness checks see
an update, not a clash with itself, and `full_clean()` runs: field constraints,
choices, uniqueness, foreign keys. Printed, one JSON line per record:
`{"i": n, "ok": true, "values": {column: db text}}` or `{"i": n, "ok": false,
"errors": {field: [messages]}}`. Standard library + Django only.
"""

import json
import sys
from typing import Any

import django


def main() -> int:
    label, path, keys = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    django.setup()
    from django.apps import apps
    from django.core.exceptions import ValidationError

    model = apps.get_model(label)
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    with open(path, encoding="utf-8") as source:
        records = [json.loads(line) for line in source if line.strip()]
    out = sys.stdout
    for start in range(0, len(records), 1000):
        batch = records[start : start + 1000]
        key_values = [tuple(r["values"].get(k, "") for k in keys) for r in batch]
        existing: dict[tuple[str, ...], Any] = {}
        if len(keys) == 1:
            wanted = [v[0] for v in key_values]
            for pk, value in model._default_manager.filter(
                **{f"{keys[0]}__in": wanted}
            ).values_list("pk", keys[0]):
                existing[(str(value),)] = pk
        for record, key in zip(batch, key_values, strict=True):
            values = record["values"]
            obj = model(
                **{k: (None if v == "" and _nullable(model, k) else v) for k, v in values.items()}
            )
            pk = existing.get(tuple(str(v) for v in key))
            if pk is None and len(keys) > 1:
                found = (
                    model._default_manager.filter(**dict(zip(keys, key, strict=True)))
                    .values_list("pk", flat=True)
                    .first()
                )
                pk = found
            if pk is not None:
                obj.pk = pk
                obj._state.adding = False
            for field in fields:
                if getattr(field, "auto_now", False) or (
                    getattr(field, "auto_now_add", False) and pk is None
                ):
                    field.pre_save(obj, add=pk is None)
            try:
                obj.full_clean()
            except ValidationError as exc:
                out.write(
                    json.dumps({"i": record["i"], "ok": False, "errors": exc.message_dict}) + "\n"
                )
                continue
            row = {}
            for field in fields:
                value = field.get_db_prep_value(
                    getattr(obj, field.attname), connection=_connection(), prepared=False
                )
                row[field.column] = (
                    None
                    if value is None
                    else (value.isoformat() if hasattr(value, "isoformat") else str(value))
                )
            out.write(json.dumps({"i": record["i"], "ok": True, "values": row}) + "\n")
    out.flush()
    return 0


def _nullable(model: Any, name: str) -> bool:
    try:
        return bool(model._meta.get_field(name).null)
    except Exception:
        return False


def _connection() -> Any:
    from django.db import connection

    return connection


if __name__ == "__main__":
    sys.exit(main())
