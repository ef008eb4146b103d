"""Metadata filters (langchain's PGVector syntax, which OPEA users know) as one SQL condition.

    {"source": "guide.pdf"}                           equality (containment: the GIN index answers it)
    {"page": {"$gte": 3, "$lt": 10}}                  $eq $ne $lt $lte $gt $gte on JSON values
    {"lang": {"$in": ["en", "de"]}}                   $in $nin
    {"title": {"$exists": true}}                      $exists
    {"title": {"$ilike": "%install%"}}                $like $ilike on the text of a value
    {"$or": [{...}, {...}]}, {"$and": [...]}          several keys in one object are ANDed

Comparisons are between JSON values (numbers numerically, strings by their text); a chunk without
the key never matches a comparison. Anything else is an `InputError` naming what was wrong.
Values are sent as query parameters (`%(f0)s`, `%(f1)s`, ...), never written into the SQL.
"""

from collections.abc import Mapping
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from megaservice.exceptions import InputError

__all__ = ["MAX_CLAUSES", "filter_condition"]

MAX_CLAUSES = 100
"""Most conditions one filter may hold."""

_COMPARE = {"$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">="}
_MAX_DEPTH = 8


def _bad(message: str) -> InputError:
    return InputError(message, status_code=422)


class _Builder:
    def __init__(self, column: sql.Composable) -> None:
        self.column = column
        self.clauses = 0
        self.params: dict[str, Any] = {}

    def _param(self, value: Any) -> sql.Composable:
        name = f"f{len(self.params)}"
        self.params[name] = value
        return sql.Placeholder(name)

    def _count(self) -> None:
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            raise _bad(f"filter: more than {MAX_CLAUSES} conditions")

    def build(self, spec: Any, depth: int = 0) -> sql.Composable:
        if depth > _MAX_DEPTH:
            raise _bad(f"filter: nested deeper than {_MAX_DEPTH} levels")
        if not isinstance(spec, Mapping) or not spec:
            raise _bad(f"filter: expected an object of conditions, got {spec!r:.80}")
        parts = [self._item(key, value, depth) for key, value in spec.items()]
        return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" AND ").join(parts))

    def _item(self, key: Any, value: Any, depth: int) -> sql.Composable:
        if not isinstance(key, str) or not key:
            raise _bad(f"filter: keys are non-empty strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise _bad(f"filter: {key} takes a non-empty list of conditions")
            joiner = sql.SQL(" AND " if key == "$and" else " OR ")
            return sql.SQL("({})").format(joiner.join(self.build(item, depth + 1) for item in value))
        if key.startswith("$"):
            raise _bad(f"filter: unknown operator {key!r} (known: $and, $or, and per key {_known()})")
        if isinstance(value, Mapping) and value and all(isinstance(op, str) and op.startswith("$") for op in value):
            parts = [self._operator(key, op, arg) for op, arg in value.items()]
            return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" AND ").join(parts))
        return self._equal(key, value)

    def _equal(self, key: str, value: Any) -> sql.Composable:
        self._count()
        return sql.SQL("{} @> {}").format(self.column, self._param(Jsonb({key: value})))

    def _operator(self, key: str, op: str, arg: Any) -> sql.Composable:
        if op == "$eq":
            return self._equal(key, arg)
        if op == "$ne":
            return sql.SQL("NOT ({})").format(self._equal(key, arg))
        if op in ("$in", "$nin"):
            if not isinstance(arg, list) or not arg:
                raise _bad(f"filter: {key}: {op} takes a non-empty list")
            any_of = sql.SQL("({})").format(sql.SQL(" OR ").join(self._equal(key, item) for item in arg))
            return any_of if op == "$in" else sql.SQL("NOT {}").format(any_of)
        self._count()
        field = sql.SQL("({} -> {}::text)").format(self.column, self._param(key))
        if op in _COMPARE:
            if not isinstance(arg, int | float | str) or isinstance(arg, bool):
                raise _bad(f"filter: {key}: {op} compares with a number or a string, got {arg!r:.80}")
            return sql.SQL("{} {} {}").format(field, sql.SQL(_COMPARE[op]), self._param(Jsonb(arg)))
        if op == "$exists":
            if not isinstance(arg, bool):
                raise _bad(f"filter: {key}: $exists takes true or false")
            test = sql.SQL("{} ? {}::text").format(self.column, self._param(key))
            return test if arg else sql.SQL("NOT ({})").format(test)
        if op in ("$like", "$ilike"):
            if not isinstance(arg, str):
                raise _bad(f"filter: {key}: {op} takes a pattern string")
            text = sql.SQL("({} ->> {}::text)").format(self.column, self._param(key))
            return sql.SQL("{} {} {}").format(text, sql.SQL(op[1:].upper()), self._param(arg))
        raise _bad(f"filter: {key}: unknown operator {op!r} (known: {_known()})")


def _known() -> str:
    return ", ".join(["$eq", "$ne", *_COMPARE, "$in", "$nin", "$exists", "$like", "$ilike"])


def filter_condition(
    spec: Mapping[str, Any], column: sql.Composable | None = None
) -> tuple[sql.Composable, dict[str, Any]]:
    """The SQL condition of filter `spec` on the JSONB `column` (default `metadata`), and its parameters."""
    builder = _Builder(column if column is not None else sql.Identifier("metadata"))
    condition = builder.build(spec)
    return condition, builder.params
