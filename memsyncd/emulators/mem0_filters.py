"""Validate and evaluate mem0 platform memory filters (the v2/v3 filter language).

Grammar, from the platform's "Memory Filters" documentation:

* a filter is an object; sibling keys are ANDed;
* ``AND`` / ``OR`` take a list of filters, ``NOT`` a filter (or a list: none
  of them may match);
* entity fields ``user_id``, ``agent_id``, ``app_id``, ``run_id``: a bare
  value (``"*"`` = any non-null value) or ``{"eq"|"ne"|"in": ...}``;
* time fields ``created_at``, ``updated_at``, ``timestamp`` (= created_at),
  ``expiration_date``: a bare value or ``{"gt"|"gte"|"lt"|"lte"|"ne"|"in": ...}``
  (explicit ``eq`` is rejected); values are ISO 8601 datetimes, ``YYYY-MM-DD``
  dates (compared by calendar day) or epoch seconds;
* ``categories``: ``{"in": [...]}`` or ``{"contains": "..."}`` (case-insensitive);
* ``metadata``: ``{"key": value}`` subset match, or ``{"key": {"eq"|"ne"|
  "contains"|"icontains"|"in": ...}}``;
* ``keywords`` / ``keywords_search`` / ``text``: a string (case-insensitive)
  or ``{"contains"|"icontains": ...}`` on the memory text;
* ``memory_ids``: a list of ids (or ``{"in": [...]}``);
* any other key → 400 with the platform's wording.

``ne`` matches records whose value is null, as on the platform.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from memsyncd.emulators.clock import parse_iso

__all__ = ["ENTITY_FIELDS", "FilterError", "Predicate", "compile_filters", "has_entity_scope"]

Predicate = Callable[[Mapping[str, Any]], bool]

ENTITY_FIELDS: tuple[str, ...] = ("user_id", "agent_id", "app_id", "run_id")
_TIME_FIELDS = {
    "created_at": "created_at",
    "updated_at": "updated_at",
    "timestamp": "created_at",
    "expiration_date": "expiration_date",
}
_TEXT_FIELDS = ("keywords", "keywords_search", "text")
ALLOWED_KEYS: tuple[str, ...] = (
    "AND",
    "OR",
    "NOT",
    "user_id",
    "agent_id",
    "app_id",
    "run_id",
    "created_at",
    "updated_at",
    "timestamp",
    "expiration_date",
    "text",
    "categories",
    "metadata",
    "keywords_search",
    "memory_ids",
    "keywords",
)


class FilterError(ValueError):
    """Raised when a filter is malformed (the platform answers 400)."""


def compile_filters(filters: Any) -> Predicate:
    """Validate ``filters`` and return a predicate over stored memory records.

    Records are mappings with the memory fields; time fields are ``datetime``.

    Raises:
        FilterError: the filter is malformed.
    """
    return _node(filters)


def has_entity_scope(filters: Any) -> bool:
    """True when ``filters`` positively names at least one entity (outside ``NOT``)."""
    if isinstance(filters, list):
        return any(has_entity_scope(item) for item in filters)
    if not isinstance(filters, dict):
        return False
    for key, value in filters.items():
        if key in ("AND", "OR") and has_entity_scope(value):
            return True
        if key in ENTITY_FIELDS:
            if isinstance(value, str) and value:
                return True
            if isinstance(value, dict) and ("eq" in value or "in" in value):
                return True
    return False


def _all(preds: list[Predicate]) -> Predicate:
    return lambda m: all(p(m) for p in preds)


def _any(preds: list[Predicate]) -> Predicate:
    return lambda m: any(p(m) for p in preds)


def _none(preds: list[Predicate]) -> Predicate:
    return lambda m: not any(p(m) for p in preds)


def _node(node: Any) -> Predicate:
    if not isinstance(node, dict) or not node:
        raise FilterError("Each filter condition must be a non-empty object.")
    preds: list[Predicate] = []
    for key, value in node.items():
        if key in ("AND", "OR"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"'{key}' expects a non-empty list of conditions.")
            subs = [_node(item) for item in value]
            preds.append(_all(subs) if key == "AND" else _any(subs))
        elif key == "NOT":
            preds.append(_none([_node(item) for item in (value if isinstance(value, list) else [value])]))
        elif key in ENTITY_FIELDS:
            preds.append(_entity(key, value))
        elif key in _TIME_FIELDS:
            preds.append(_time(key, _TIME_FIELDS[key], value))
        elif key == "categories":
            preds.append(_categories(value))
        elif key == "metadata":
            preds.append(_metadata(value))
        elif key in _TEXT_FIELDS:
            preds.append(_text(key, value))
        elif key == "memory_ids":
            preds.append(_memory_ids(value))
        else:
            raise FilterError(f"Top-level key must be a logical operator or an allowed field: {list(ALLOWED_KEYS)}")
    return _all(preds)


def _ops(field: str, value: dict[str, Any], allowed: tuple[str, ...]) -> None:
    if not value:
        raise FilterError(f"Empty operator object for '{field}'.")
    bad = [op for op in value if op not in allowed]
    if bad:
        raise FilterError(f"Invalid operator {bad[0]!r} for '{field}'. Allowed operators: {list(allowed)}")


def _entity(field: str, value: Any) -> Predicate:
    if isinstance(value, str):
        value = {"eq": value}
    if not isinstance(value, dict):
        raise FilterError(f"'{field}' expects a string or an operator object.")
    _ops(field, value, ("eq", "ne", "in"))
    return _all([_entity_op(field, op, arg) for op, arg in value.items()])


def _entity_op(field: str, op: str, arg: Any) -> Predicate:
    if op == "in":
        if not isinstance(arg, list):
            raise FilterError(f"'in' for '{field}' expects a list.")
        return lambda m: m.get(field) in arg
    if op == "eq" and arg == "*":
        return lambda m: m.get(field) is not None
    if op == "eq":
        return lambda m: m.get(field) == arg
    return lambda m: m.get(field) != arg


def _moment(field: str, raw: Any) -> datetime | date:
    if isinstance(raw, bool):
        raise FilterError(f"Invalid date value for '{field}': {raw!r}")
    if isinstance(raw, (int, float)):
        return datetime.fromtimestamp(raw, UTC)
    if isinstance(raw, str):
        try:
            if len(raw.strip()) == 10:
                return date.fromisoformat(raw.strip())
            return parse_iso(raw)
        except ValueError:
            pass
    raise FilterError(f"Invalid date value for '{field}': {raw!r}. Use ISO 8601.")


def _compare(stored: datetime | None, op: str, ref: datetime | date) -> bool:
    if stored is None:
        return op == "ne"
    left: datetime | date = stored.astimezone(UTC).date() if type(ref) is date else stored
    if op == "eq":
        return left == ref
    if op == "ne":
        return left != ref
    if op == "gt":
        return left > ref
    if op == "gte":
        return left >= ref
    if op == "lt":
        return left < ref
    return left <= ref


def _time(field: str, attr: str, value: Any) -> Predicate:
    if not isinstance(value, dict):
        return _time_op(attr, "eq", _moment(field, value))
    if "eq" in value:
        raise FilterError(f"Explicit 'eq' is not supported for '{field}'; pass a bare value instead.")
    _ops(field, value, ("gt", "gte", "lt", "lte", "ne", "in"))
    preds: list[Predicate] = []
    for op, arg in value.items():
        if op == "in":
            if not isinstance(arg, list):
                raise FilterError(f"'in' for '{field}' expects a list.")
            preds.append(_any([_time_op(attr, "eq", _moment(field, a)) for a in arg]))
        else:
            preds.append(_time_op(attr, op, _moment(field, arg)))
    return _all(preds)


def _time_op(attr: str, op: str, ref: datetime | date) -> Predicate:
    return lambda m: _compare(m.get(attr), op, ref)


def _categories(value: Any) -> Predicate:
    if not isinstance(value, dict):
        raise FilterError("'categories' expects an operator object: {'in': [...]} or {'contains': '...'}.")
    _ops("categories", value, ("in", "contains"))
    preds: list[Predicate] = []
    if "in" in value:
        if not isinstance(value["in"], list):
            raise FilterError("'in' for 'categories' expects a list.")
        wanted = set(value["in"])
        preds.append(lambda m: bool(wanted.intersection(m.get("categories") or [])))
    if "contains" in value:
        needle = str(value["contains"]).lower()
        preds.append(lambda m: any(needle in str(c).lower() for c in m.get("categories") or []))
    return _all(preds)


def _metadata(value: Any) -> Predicate:
    if not isinstance(value, dict) or not value:
        raise FilterError("'metadata' expects a non-empty object of top-level keys.")
    preds: list[Predicate] = []
    for key, cond in value.items():
        if (
            isinstance(cond, dict)
            and len(cond) == 1
            and next(iter(cond)) in ("eq", "ne", "contains", "icontains", "in")
        ):
            op, arg = next(iter(cond.items()))
        else:
            op, arg = "eq", cond
        preds.append(_metadata_op(key, op, arg))
    return _all(preds)


def _metadata_op(key: str, op: str, arg: Any) -> Predicate:
    def get(m: Mapping[str, Any]) -> Any:
        meta = m.get("metadata") or {}
        return meta.get(key) if isinstance(meta, dict) else None

    if op == "eq":
        return lambda m: get(m) == arg
    if op == "ne":
        return lambda m: get(m) != arg
    if op == "in":
        if not isinstance(arg, list):
            raise FilterError(f"'in' for metadata key '{key}' expects a list.")
        return lambda m: get(m) in arg
    if op == "contains":
        return lambda m: isinstance(get(m), str) and str(arg) in get(m)
    return lambda m: isinstance(get(m), str) and str(arg).lower() in get(m).lower()


def _text(field: str, value: Any) -> Predicate:
    if isinstance(value, str):
        value = {"icontains": value}
    if not isinstance(value, dict):
        raise FilterError(f"'{field}' expects a string or {{'contains'|'icontains': ...}}.")
    _ops(field, value, ("contains", "icontains"))
    return _all([_text_op(op, str(arg)) for op, arg in value.items()])


def _text_op(op: str, needle: str) -> Predicate:
    if op == "contains":
        return lambda m: needle in (m.get("memory") or "")
    lowered = needle.lower()
    return lambda m: lowered in (m.get("memory") or "").lower()


def _memory_ids(value: Any) -> Predicate:
    if isinstance(value, dict):
        _ops("memory_ids", value, ("in",))
        value = value["in"]
    if not isinstance(value, list):
        raise FilterError("'memory_ids' expects a list of ids.")
    ids = {str(v) for v in value}
    return lambda m: str(m.get("id")) in ids
