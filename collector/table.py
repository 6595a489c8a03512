"""A SQLite table derived from a dataclass: columns, types, rows and migrations written once.

The record (``Alert``, ``RunRecord``) is the one definition; its fields give the column names,
their SQL types (int/bool → INTEGER, float → REAL, str → TEXT, lists and tuples → JSON TEXT),
nullability (``X | None``) and the defaults used to add a column to an older database.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import types
import typing
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_SQL_TYPES: dict[type, str] = {int: "INTEGER", bool: "INTEGER", float: "REAL", str: "TEXT"}


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """The type behind ``X | None`` and whether None is allowed."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _base(hint: Any) -> Any:
    """``str`` for ``Literal["a", "b"]``, the origin for generics, else the type itself."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return type(typing.get_args(hint)[0])
    return origin or hint


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    sql: str
    nullable: bool
    kind: Any
    """Python type of the stored value: int, bool, float, str, list or tuple."""
    inner: Any
    """For lists: the element type (tuples are rebuilt from JSON arrays)."""
    default: Any


class Table(Generic[T]):
    """Maps records of dataclass ``cls`` to rows of table ``name`` and back."""

    def __init__(self, cls: type[T], name: str, key: Sequence[str]) -> None:
        self.cls, self.name, self.key = cls, name, tuple(key)
        hints = typing.get_type_hints(cls)
        self.columns: list[Column] = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            hint, nullable = _unwrap(hints[f.name])
            kind = _base(hint)
            inner = typing.get_args(hint)[0] if kind is list and typing.get_args(hint) else None
            sql = _SQL_TYPES.get(kind, "TEXT")
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            self.columns.append(Column(f.name, sql, nullable, kind, inner, default))
        self.names = tuple(c.name for c in self.columns)

    # ------------------------------------------------------------------------ schema

    def _definition(self, c: Column) -> str:
        out = f"{c.name} {c.sql}"
        if not c.nullable:
            out += " NOT NULL"
        if c.default is not dataclasses.MISSING:
            out += f" DEFAULT {_literal(self._cell(c, c.default))}"
        return out

    def create(self, db: sqlite3.Connection) -> None:
        """Create the table, or add the columns an older version of it lacks."""
        cols = ", ".join(self._definition(c) for c in self.columns)
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.name} ({cols}, PRIMARY KEY ({', '.join(self.key)}))"
        )
        have = {row[1] for row in db.execute(f"PRAGMA table_info({self.name})")}
        for c in self.columns:
            if c.name not in have:
                db.execute(f"ALTER TABLE {self.name} ADD COLUMN {self._definition(c)}")

    # ------------------------------------------------------------------------ rows

    def _cell(self, c: Column, value: Any) -> Any:
        if value is None:
            return None
        if c.kind in (list, tuple):
            return json.dumps(list(value))
        if c.kind is bool:
            return int(value)
        return value

    def row(self, record: T) -> tuple[Any, ...]:
        """The row of ``record``, in the order of :attr:`names`."""
        return tuple(self._cell(c, getattr(record, c.name)) for c in self.columns)

    def record(self, row: Sequence[Any]) -> T:
        """The record stored in ``row`` (columns in the order of :attr:`names`)."""
        values: dict[str, Any] = {}
        for c, cell in zip(self.columns, row, strict=True):
            if cell is None or c.kind not in (list, tuple, bool):
                values[c.name] = cell
            elif c.kind is bool:
                values[c.name] = bool(cell)
            else:
                items = json.loads(cell)
                if c.inner is not None and _base(c.inner) is tuple:
                    items = [tuple(x) for x in items]
                values[c.name] = tuple(items) if c.kind is tuple else items
        return self.cls(**values)

    def upsert_sql(self) -> str:
        marks = ",".join("?" * len(self.names))
        return f"INSERT OR REPLACE INTO {self.name} ({','.join(self.names)}) VALUES ({marks})"

    def select_sql(self, where: str = "", order: str = "") -> str:
        sql = f"SELECT {','.join(self.names)} FROM {self.name}"
        if where:
            sql += f" WHERE {where}"
        return sql + (f" ORDER BY {order}" if order else "")


def _literal(value: Any) -> str:
    """A SQL literal for a column default."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)
