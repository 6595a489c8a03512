"""Settings derived from a config dataclass: flags, ``GRADWATCH_*`` variables, file keys, help.

A component's frozen config dataclass is the one definition of its settings. Each field gives a
command-line flag (``--field-name``, or ``metadata={"flag": "db"}`` for ``--db``), an environment
variable (``GRADWATCH_`` + the flag in upper case, or ``metadata={"env": ...}``), a key in a
TOML config file's table (the flag without dashes, ``-`` → ``_``: ``db``, ``alertmanager_resend``;
``metadata={"file": False}`` leaves a field out of files), a type (``int``, ``float``, ``str``,
``bool``, optionally ``| None``), a default and its help (the docstring under the field).

Precedence: flag > variable > file > default (:func:`resolve`); for a library call such as
``gradwatch.agent.watch``, argument > variable > default (:func:`resolve_code`). Values are
parsed here, so an error names where the bad value came from: ``--topk: expected an integer,
got 'x'``, ``GRADWATCH_TOPK: ...`` or ``gradwatch.toml: collector.topk: ...``. Standard
library only (the agent uses it too), plus ``tomli`` before Python 3.11.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import json
import math
import sys
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
    key: str
    """``db``: its key in a config file's table; empty when files may not set it."""
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
                env=f.metadata.get("env", ENV_PREFIX + name.upper().replace("-", "_")),
                key=name.replace("-", "_") if f.metadata.get("file", True) else "",
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


def convert_value(setting: Setting, value: Any, where: str) -> Any:
    """A value read from a file (TOML-typed) as the setting's type; ``""`` is None for optional
    settings. ConfigError naming ``where`` when the type is wrong (no string-to-number guessing)."""
    kind = setting.kind
    if setting.optional and value == "":
        return None
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        raise ConfigError(where, f"expected {want[kind]}, got {value!r}")
    return value


def read_toml(path: str) -> dict[str, Any]:
    """A TOML file's contents; ConfigError naming the file when it cannot be read or parsed."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10: the collector extra brings tomli
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None


def file_values(
    settings: Sequence[Setting], table: object, where: str
) -> dict[str, tuple[Any, str]]:
    """A config file table's values by field, each with where it came from (``where.key``).

    ``where`` names the table, e.g. ``gradwatch.toml: collector``; an unknown key or a value of
    the wrong type is a ConfigError naming ``gradwatch.toml: collector.topk``."""
    if not isinstance(table, dict):
        raise ConfigError(where, "must be a table")
    by_key = {s.key: s for s in settings if s.key}
    out: dict[str, tuple[Any, str]] = {}
    for key, value in table.items():
        origin = f"{where}.{key}"
        s = by_key.get(key)
        if s is None:
            close = difflib.get_close_matches(key, by_key, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(origin, f"unknown setting{hint}")
        out[s.field] = (convert_value(s, value, origin), origin)
    return out


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


def gather(
    settings: Sequence[Setting],
    given: Mapping[str, str | None],
    environ: Mapping[str, str],
    file: Mapping[str, tuple[Any, str]] | None = None,
) -> dict[str, tuple[Any, str]]:
    """Each set value by field with where it came from: flags (``given``, by field), then the
    environment, then ``file`` (from :func:`file_values`); unset fields are absent."""
    out: dict[str, tuple[Any, str]] = {}
    for s in settings:
        text = given.get(s.field)
        if text is not None:
            out[s.field] = (parse_value(s, text, s.flag), s.flag)
        elif s.env in environ:
            out[s.field] = (parse_value(s, environ[s.env], s.env), s.env)
        elif file and s.field in file:
            out[s.field] = file[s.field]
    return out


def build(cls: type[C], gathered: Mapping[str, tuple[Any, str]]) -> C:
    """``cls`` from :func:`gather`'s values; its validation errors name the value's origin."""
    try:
        return cls(**{name: value for name, (value, _) in gathered.items()})
    except ConfigError as exc:
        origin = gathered.get(exc.where, (None, exc.where))[1]
        raise ConfigError(origin, exc.message) from None


def resolve(
    cls: type[C],
    settings: Sequence[Setting],
    given: Mapping[str, str | None],
    environ: Mapping[str, str],
    file: Mapping[str, tuple[Any, str]] | None = None,
) -> C:
    """Build ``cls`` from flags (``given``, by field), then the environment, then ``file``, then
    defaults. Every error, in parsing or in the class's own validation, is a ConfigError naming
    the flag, the variable or the file key the value came from."""
    return build(cls, gather(settings, given, environ, file))


def resolve_code(
    cls: type[C],
    settings: Sequence[Setting],
    values: Mapping[str, Any],
    environ: Mapping[str, str],
    fallback: Mapping[str, tuple[Any, str]] | None = None,
) -> C:
    """Build ``cls`` for a library call: typed ``values`` given in code (by field; None counts
    as not given), then the environment, then ``fallback`` (values with their origin), then
    defaults. Errors name the argument or the variable the bad value came from."""
    gathered = gather(settings, {}, environ, fallback)
    gathered.update((name, (v, name)) for name, v in values.items() if v is not None)
    return build(cls, gathered)


def toml_value(value: Any) -> str:
    """``value`` written as TOML (None as ``""``, which reads back as unset)."""
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def to_toml(
    settings: Sequence[Setting], config: object, table: str, origins: Mapping[str, str]
) -> str:
    """The effective settings as a TOML table, each line commented with where it came from."""
    lines = [f"[{table}]"]
    for s in settings:
        if s.key:
            value = toml_value(getattr(config, s.field))
            lines.append(f"{s.key} = {value}  # {origins.get(s.field, 'default')}")
    return "\n".join(lines) + "\n"


def reference(settings: Sequence[Setting], keys: bool = True, arguments: bool = False) -> str:
    """A Markdown table of the settings: file key (when ``keys``), flag (or, when
    ``arguments``, the keyword argument of a library call), variable, default and meaning."""
    head = ["key"] * keys + ["argument" if arguments else "flag", "variable", "default", "meaning"]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in settings:
        default = "unset" if s.default is None else f"`{toml_value(s.default)}`"
        cells = [f"`{s.key}`" if s.key else "—"] * keys
        cells.append(f"`{s.field}=`" if arguments else f"`{s.flag}`")
        cells += [f"`{s.env}`", default, s.help.replace("|", "\\|")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
