"""Settings derived from a config dataclass: flags, ``GRADWATCH_*`` variables, parsing, help.

A component's frozen config dataclass is the one definition of its settings. Each field gives a
command-line flag (``--field-name``, or ``metadata={"flag": "db"}`` for ``--db``), an environment
variable (``GRADWATCH_`` + the flag in upper case), a type (``int``, ``float``, ``str``,
``bool``, optionally ``| None``), a default and its help (the docstring under the field). Values
are parsed here, so an error names where the bad value came from: ``--topk: expected an
integer, got 'x'`` or ``GRADWATCH_TOPK: ...``. Standard library only (the agent uses it too).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

C = TypeVar("C")
ENV_PREFIX = "GRADWATCH_"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting with a bad value; ``where`` names it (a field, a flag or a variable)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclasses.dataclass(frozen=True)
class Setting:
    """One field of a config dataclass, as the outside world sets it."""

    field: str
    flag: str
    """``--db``."""
    env: str
    """``GRADWATCH_DB``."""
    kind: type
    """int, float, str or bool."""
    optional: bool
    """``None`` is a valid value (an empty string sets it)."""
    default: Any
    help: str


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and its bases), by field name."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                out[node.target.id] = " ".join(nxt.value.value.split())
    return out


def settings_of(cls: type) -> tuple[Setting, ...]:
    """Every field of the config dataclass ``cls`` as a :class:`Setting`."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind, optional = _kind(hints[f.name], f.name)
        name = f.metadata.get("flag", f.name.replace("_", "-"))
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(
            Setting(
                field=f.name,
                flag=f"--{name}",
                env=ENV_PREFIX + name.upper().replace("-", "_"),
                kind=kind,
                optional=optional,
                default=default,
                help=docs.get(f.name, ""),
            )
        )
    return tuple(out)


def _kind(hint: Any, name: str) -> tuple[type, bool]:
    args = typing.get_args(hint)
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        (hint,) = [a for a in args if a is not type(None)]
    if hint not in (int, float, str, bool):
        raise TypeError(f"setting {name}: unsupported type {hint!r}")
    return hint, optional


def parse_value(setting: Setting, text: str, where: str) -> Any:
    """``text`` as the setting's type; ConfigError naming ``where`` when it is not one."""
    text = text.strip()
    if setting.optional and text == "":
        return None
    kind = setting.kind
    try:
        if kind is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        want = {bool: "true or false", int: "an integer", float: "a number"}[kind]
        raise ConfigError(where, f"expected {want}, got {text!r}") from None
    return text


def add_arguments(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    """One flag per setting; values stay strings (``None`` when not given) until resolved."""
    for s in settings:
        default = "" if s.default is None else f" (default {s.default})"
        text = f"{s.help}{default} [env {s.env}]".strip()
        if s.kind is bool:
            parser.add_argument(
                s.flag, dest=s.field, action="store_const", const="true", default=None, help=text
            )
        else:
            metavar = {int: "N", float: "X"}.get(s.kind, "VALUE")
            parser.add_argument(s.flag, dest=s.field, default=None, metavar=metavar, help=text)


def resolve(
    cls: type[C],
    settings: Sequence[Setting],
    given: Mapping[str, str | None],
    environ: Mapping[str, str],
) -> C:
    """Build ``cls`` from flags (``given``, by field), then the environment, then defaults.

    Every error, in parsing or in the class's own validation, is a ConfigError naming the flag
    or the variable the value came from."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for s in settings:
        text = given.get(s.field)
        if text is not None:
            values[s.field], origin[s.field] = parse_value(s, text, s.flag), s.flag
        elif s.env in environ:
            values[s.field] = parse_value(s, environ[s.env], s.env)
            origin[s.field] = s.env
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(origin.get(exc.where, exc.where), exc.message) from None
