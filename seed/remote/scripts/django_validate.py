"""Check imported records with the model's own rules (run with the release's venv and
settings): `python script app_label.Model RECORDS.jsonl KEY[,KEY...]`.

Each input line is `{"i": n, "values": {field: text}}`. For every record a model
instance is built (Python-side defaults, `default=callable`, applied by the
constructor; `auto_now`/`auto_now_add` by the fields' pre_save); the existing row
with the same key (if any) lends its primary key, so the record is checked as an
update of that row, not as a clash with it. Then the model's rules: field
constraints and choices (`clean_fields`), `clean()`, uniqueness, foreign keys and
Meta constraints — what `full_clean()` checks, with the same messages.

Batched: `full_clean()` asks the database once per record for every unique field and
every foreign key (one query each, ~1 ms). Here, per batch of records, the existing
keys, the rows holding any of the batch's unique values and the foreign keys' targets
are fetched with one query each, and checked in memory. A value used twice within the
import is a clash too (the load would fail on it): the later record is rejected.
Constraints with conditions or expressions, check constraints and unique_for_date
are still validated per record by Django.

Printed first: `{"table": t, "columns": [...], "update": [...]}` (the model's table, the
columns written, and those
an update of an existing row may change: the mapped fields and `auto_now` ones);
then one JSON line per record: `{"i": n, "ok": true, "new": bool, "values":
{column: db text}}` or `{"i": n, "ok": false, "errors": {field: [messages]}}`.
Standard library + Django only.
"""

import functools
import json
import sys
import warnings
from typing import Any

import django

BATCH = 2000


def main() -> int:
    label, path, keys = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    # a date or time without a zone is read in the project's TIME_ZONE, as Django does
    # (it would warn once per distinct value: thousands of lines)
    warnings.filterwarnings("ignore", message=r"DateTimeField .* received a naive datetime")
    django.setup()
    from django.apps import apps

    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        known = sorted(f"{m._meta.app_label}.{m.__name__}" for m in apps.get_models())
        sys.stderr.write(
            f"target.model: no model {label} in the deployed release (its models: "
            f"{', '.join(known)})\n"
        )
        return 3
    with open(path, encoding="utf-8") as source:
        records = [json.loads(line) for line in source if line.strip()]
    checker = Checker(model, keys, records[0]["values"] if records else {})
    out = sys.stdout
    head = {"table": model._meta.db_table, "columns": checker.columns}
    out.write(json.dumps({**head, "update": checker.update_columns}) + "\n")
    for start in range(0, len(records), BATCH):
        for line in checker.check(records[start : start + BATCH]):
            out.write(json.dumps(line) + "\n")
    out.flush()
    return 0


class Checker:
    def __init__(self, model: Any, keys: list[str], sample: dict[str, Any]) -> None:
        from django.db import connection

        self.model = model
        self.keys = keys
        self.connection = connection
        self.fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        # names (and attnames) whose empty text means NULL, looked up once
        self.nullable = {
            n for f in model._meta.concrete_fields if f.null for n in (f.name, f.attname)
        }
        self.columns = [f.column for f in self.fields]
        mapped = set(sample)
        self.update_columns = [
            f.column
            for f in self.fields
            if (f.name in mapped or f.attname in mapped or getattr(f, "auto_now", False))
            and f.name not in keys
        ]
        self.foreign = [
            f
            for f in self.fields
            if (f.many_to_one or f.one_to_one) and not f.remote_field.parent_link
        ]
        probe = model()
        self.unique_checks, self.date_checks = probe._get_unique_checks(
            include_meta_constraints=True
        )
        batched = {id(c) for _, cs in probe.get_constraints() for c in cs if _total_unique(c)}
        self.other_constraints = [
            (cls, [c for c in cs if id(c) not in batched]) for cls, cs in probe.get_constraints()
        ]
        self.other_constraints = [(cls, cs) for cls, cs in self.other_constraints if cs]
        # every unique value seen so far in this import → the record that had it
        self.seen: dict[int, dict[tuple[Any, ...], int]] = {
            n: {} for n in range(len(self.unique_checks))
        }

    def check(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

        model = self.model
        existing = self.existing_keys(batch)
        targets = {f.name: self.fk_targets(f, batch) for f in self.foreign}
        objects = []
        errors: list[dict[str, list[Any]]] = []
        for record in batch:
            values = record["values"]
            obj = model(
                **{k: (None if v == "" and k in self.nullable else v) for k, v in values.items()}
            )
            key = self.key_of(values)
            pk = None if key is None else existing.get(key)
            if pk is not None:
                obj.pk = pk
                obj._state.adding = False
            for field in self.fields:
                if getattr(field, "auto_now", False) or (
                    getattr(field, "auto_now_add", False) and pk is None
                ):
                    field.pre_save(obj, add=pk is None)
            found: dict[str, list[Any]] = {}
            with foreign_keys_from(targets, self.foreign):
                try:
                    obj.full_clean(validate_unique=False, validate_constraints=False)
                except ValidationError as exc:
                    found = exc.update_error_dict({})
            failed = {name for name in found if name != NON_FIELD_ERRORS}
            self.per_record_rules(obj, failed, found)
            objects.append(obj)
            errors.append(found)
        self.unique_in_batch(objects, errors)
        lines = []
        for record, obj, found in zip(batch, objects, errors, strict=True):
            if found:
                messages = ValidationError(found).message_dict
                lines.append({"i": record["i"], "ok": False, "errors": messages})
                continue
            lines.append(
                {"i": record["i"], "ok": True, "new": obj._state.adding, "values": self.row(obj)}
            )
        return lines

    def key_of(self, values: dict[str, Any]) -> tuple[Any, ...] | None:
        """A record's key as the fields' Python values; None when a part is empty or not
        of its field's type (the record is then rejected by its field's own check)."""
        from django.core.exceptions import ValidationError

        key = []
        for name in self.keys:
            raw = values.get(name)
            if raw in ("", None):
                return None
            try:
                key.append(self.model._meta.get_field(name).to_python(raw))
            except ValidationError:
                return None
        return tuple(key)

    def existing_keys(self, batch: list[dict[str, Any]]) -> dict[tuple[Any, ...], Any]:
        """The key → primary key of the batch's rows that already exist, one query."""
        from django.db.models import Q

        keys = (self.key_of(r["values"]) for r in batch)
        wanted = [k for k in keys if k is not None]
        if not wanted:
            return {}
        manager = self.model._default_manager
        if len(self.keys) == 1:
            query = manager.filter(**{f"{self.keys[0]}__in": [w[0] for w in wanted]})
        else:
            condition = Q()
            for w in wanted:
                condition |= Q(**dict(zip(self.keys, w, strict=True)))
            query = manager.filter(condition)
        return {tuple(row[1:]): row[0] for row in query.values_list("pk", *self.keys)}

    def fk_targets(self, field: Any, batch: list[dict[str, Any]]) -> set[Any]:
        """The batch's values of a foreign key that exist in the target table, one query."""
        from django.core.exceptions import ValidationError

        candidates = set()
        for record in batch:
            raw = record["values"].get(field.attname, record["values"].get(field.name))
            if raw in (None, ""):
                continue
            try:
                candidates.add(field.target_field.to_python(raw))
            except ValidationError:
                continue
        if not candidates:
            return set()
        name = field.remote_field.field_name
        query = field.remote_field.model._base_manager.filter(**{f"{name}__in": candidates})
        query = query.complex_filter(field.get_limit_choices_to())
        return set(query.values_list(name, flat=True))

    def per_record_rules(self, obj: Any, failed: set[str], found: dict[str, list[Any]]) -> None:
        """What has no batched form: constraints with conditions or expressions, check
        constraints, unique_for_date/month/year (one query each, as in full_clean)."""
        from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

        if self.date_checks:
            for name, messages in obj._perform_date_checks(self.date_checks).items():
                if name not in failed:
                    found.setdefault(name, []).extend(messages)
        for cls, constraints in self.other_constraints:
            for constraint in constraints:
                try:
                    constraint.validate(cls, obj, exclude=failed)
                except ValidationError as exc:
                    if getattr(exc, "code", None) == "unique" and len(constraint.fields) == 1:
                        found.setdefault(constraint.fields[0], []).append(exc)
                    else:
                        for name, messages in exc.update_error_dict({}).items():
                            found.setdefault(name or NON_FIELD_ERRORS, []).extend(messages)

    def unique_in_batch(self, objects: list[Any], errors: list[dict[str, list[Any]]]) -> None:
        """Django's unique checks for the whole batch: one query per unique field set;
        a value another row holds, or an earlier record of this import, is a clash."""
        from django.core.exceptions import NON_FIELD_ERRORS
        from django.db.models import Q

        for n, (model_class, names) in enumerate(self.unique_checks):
            fields = [self.model._meta.get_field(name) for name in names]
            pk_fields = getattr(model_class._meta, "pk_fields", [model_class._meta.pk])
            empty_is_null = self.connection.features.interprets_empty_strings_as_nulls
            lookups: list[tuple[int, tuple[Any, ...]]] = []
            for j, obj in enumerate(objects):
                if any(name in errors[j] for name in names):
                    continue
                parts: list[Any] = []
                for f in fields:
                    v = getattr(obj, f.attname)
                    if v is None or (v == "" and empty_is_null):
                        break
                    if f in pk_fields and not obj._state.adding:
                        break
                    parts.append(v)
                if len(parts) == len(names):
                    lookups.append((j, tuple(parts)))
            if not lookups:
                continue
            manager = model_class._default_manager
            if len(names) == 1:
                query = manager.filter(**{f"{names[0]}__in": [v[0] for _, v in lookups]})
            else:
                condition = Q()
                for _, v in lookups:
                    condition |= Q(**dict(zip(names, v, strict=True)))
                query = manager.filter(condition)
            holders: dict[tuple[Any, ...], set[Any]] = {}
            for row in query.values_list(*names, "pk"):
                holders.setdefault(tuple(row[:-1]), set()).add(row[-1])
            key = names[0] if len(names) == 1 else NON_FIELD_ERRORS
            seen = self.seen[n]
            for j, value in lookups:
                obj = objects[j]
                own = None if obj._state.adding else obj._get_pk_val(model_class._meta)
                others = holders.get(value, set()) - {own}
                if others:
                    errors[j].setdefault(key, []).append(
                        obj.unique_error_message(model_class, names)
                    )
                elif value in seen:
                    labels = " and ".join(str(f.verbose_name) for f in fields)
                    errors[j].setdefault(key, []).append(
                        f"{str(model_class._meta.verbose_name).capitalize()} with this "
                        f"{labels} is in this import twice (the first one is kept)."
                    )
                else:
                    seen[value] = j

    def row(self, obj: Any) -> dict[str, Any]:
        row = {}
        for field in self.fields:
            value = field.get_db_prep_value(
                getattr(obj, field.attname), connection=self.connection, prepared=False
            )
            row[field.column] = (
                None
                if value is None
                else (value.isoformat() if hasattr(value, "isoformat") else str(value))
            )
        return row


class foreign_keys_from:
    """For one full_clean(): each ForeignKey checks its value against the batch's
    prefetched targets instead of one query per record (same check, same message)."""

    def __init__(self, targets: dict[str, set[Any]], fields: list[Any]) -> None:
        self.targets = targets
        self.fields = fields

    def __enter__(self) -> None:
        for field in self.fields:
            field.validate = functools.partial(_fk_validate, field, self.targets[field.name])

    def __exit__(self, *exc: object) -> None:
        for field in self.fields:
            del field.validate


def _fk_validate(field: Any, known: set[Any], value: Any, model_instance: Any) -> None:
    from django.core import exceptions
    from django.db.models import ForeignKey

    super(ForeignKey, field).validate(value, model_instance)
    if value is None or value in known:
        return
    raise exceptions.ValidationError(
        field.error_messages["invalid"],
        code="invalid",
        params={
            "model": field.remote_field.model._meta.verbose_name,
            "pk": value,
            "field": field.remote_field.field_name,
            "value": value,
        },
    )


def _total_unique(constraint: Any) -> bool:
    from django.db.models import UniqueConstraint

    return (
        isinstance(constraint, UniqueConstraint)
        and bool(constraint.fields)
        and constraint.condition is None
        and not constraint.contains_expressions
    )


if __name__ == "__main__":
    sys.exit(main())
