"""The rule catalogue: every anomaly rule by name, and loading threshold overrides (from a rules
file, ``--rules``, and from the ``[rules.<name>]`` tables of the config file, ``--config``)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from gradwatch.settings import ConfigError, read_toml

from .admission import CollectorLimit, DuplicateRank
from .base import Finding, Rule, RuleSettings
from .frozen import FrozenParameters
from .gradients import DeadParameters, GradExplosion, VanishingGradients
from .liveness import RankCrashed, RankMissing, RankStalled
from .loss import LossPlateau, LossSpike, ValDivergence
from .numeric import NonFinite
from .optim import LrSanity
from .replicas import ReplicaDivergence, Straggler
from .system import (
    MemoryGrowth,
    MemoryPressure,
    StepTimeIncrease,
    ThroughputDrop,
    TrainerSilent,
)
from .updates import (
    UpdateRatioHigh,
    UpdateRatioLow,
    WeightNormSpike,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "CATALOGUE",
    "Finding",
    "Rule",
    "RuleSettings",
    "RulesError",
    "build_rules",
    "load",
    "overrides",
]

AnyRule: TypeAlias = Rule[Any, Any]

CATALOGUE: dict[str, type[AnyRule]] = {
    cls.name: cls
    for cls in (
        NonFinite,
        LossSpike,
        GradExplosion,
        VanishingGradients,
        UpdateRatioHigh,
        UpdateRatioLow,
        FrozenParameters,
        LrSanity,
        LossPlateau,
        WeightNormSpike,
        DeadParameters,
        ThroughputDrop,
        StepTimeIncrease,
        MemoryPressure,
        MemoryGrowth,
        TrainerSilent,
        RankStalled,
        RankCrashed,
        RankMissing,
        Straggler,
        ReplicaDivergence,
        ValDivergence,
        DuplicateRank,
        CollectorLimit,
    )
}
"""Rule classes by their canonical name, in documentation order."""


class RulesError(ValueError):
    """A rules file names an unknown rule or field, or a value of the wrong type."""


def build_rules(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[AnyRule]:
    """Every enabled rule, with ``overrides[rule][field]`` replacing default thresholds."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(CATALOGUE))
    if unknown:
        raise RulesError(f"unknown rule(s) {unknown}; known: {sorted(CATALOGUE)}")
    rules: list[AnyRule] = []
    for name, cls in CATALOGUE.items():
        settings = _settings(cls, dict(overrides.get(name, {})))
        if settings.enabled:
            rules.append(cls(settings))
    return rules


def _settings(cls: type[AnyRule], values: dict[str, Any]) -> RuleSettings:
    fields = {f.name: f for f in dataclasses.fields(cls.settings_type)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise RulesError(f"rules.{cls.name}: unknown field(s) {unknown}; known: {sorted(fields)}")
    defaults = cls.settings_type()
    for key, value in values.items():
        want = type(getattr(defaults, key))
        ok = isinstance(value, want) or (want is float and isinstance(value, int))
        if not ok or (want is not bool and isinstance(value, bool)):
            raise RulesError(f"rules.{cls.name}: {key} must be {want.__name__}, got {value!r}")
        values[key] = want(value)
    try:
        return dataclasses.replace(defaults, **values)
    except ValueError as exc:
        raise RulesError(f"rules.{cls.name}: {exc}") from None


def load(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a YAML or TOML rules file and validate it.

    YAML: ``rules: {loss_spike: {ratio: 20}}``; TOML: ``[rules.loss_spike]`` / ``ratio = 20``.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise RulesError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise RulesError(f"{path}: expected a mapping at the top level")
    return _checked(data.get("rules", data), str(path))


def _checked(rules: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(rules, dict) or not all(isinstance(v, dict) for v in rules.values()):
        raise RulesError(f"{where}: 'rules' must map rule names to tables of thresholds")
    try:
        build_rules(rules)  # validate now, at startup
    except RulesError as exc:
        raise RulesError(f"{where}: {exc}") from None
    return rules


def overrides(
    config_path: str | None = None, rules_path: str | None = None
) -> dict[str, dict[str, Any]]:
    """A deployment's threshold overrides: the config file's ``[rules.<name>]`` tables, then
    the rules file's on top of them (field by field); validated."""
    merged: dict[str, dict[str, Any]] = {}
    if config_path:
        try:
            data = read_toml(config_path)
        except ConfigError as exc:
            raise RulesError(str(exc)) from None
        merged = {name: dict(t) for name, t in _checked(data.get("rules", {}), config_path).items()}
    if rules_path:
        for name, table in load(rules_path).items():
            merged.setdefault(name, {}).update(table)
    build_rules(merged)
    return merged
