"""The rule catalogue: every anomaly rule by name, and loading threshold overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import tomllib
import yaml

from .admission import CollectorLimit, DuplicateRank
from .base import Finding, Rule, RuleSettings
from .gradients import DeadParameters, GradExplosion, VanishingGradients
from .loss import LossPlateau, LossSpike, ValDivergence
from .numeric import NonFinite
from .optim import LrSanity
from .system import (
    MemoryGrowth,
    MemoryPressure,
    StepTimeIncrease,
    ThroughputDrop,
    TrainerSilent,
)
from .updates import (
    FrozenParameters,
    UpdateRatioHigh,
    UpdateRatioLow,
    WeightNormSpike,
)

__all__ = ["CATALOGUE", "Finding", "Rule", "RuleSettings", "RulesError", "build_rules", "load"]

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
        raise RulesError(f"rule {cls.name}: unknown field(s) {unknown}; known: {sorted(fields)}")
    defaults = cls.settings_type()
    for key, value in values.items():
        want = type(getattr(defaults, key))
        ok = isinstance(value, want) or (want is float and isinstance(value, int))
        if not ok or (want is not bool and isinstance(value, bool)):
            raise RulesError(f"rule {cls.name}: {key} must be {want.__name__}, got {value!r}")
        values[key] = want(value)
    try:
        return dataclasses.replace(defaults, **values)
    except ValueError as exc:
        raise RulesError(f"rule {cls.name}: {exc}") from None


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
    rules = data.get("rules", data)
    if not isinstance(rules, dict) or not all(isinstance(v, dict) for v in rules.values()):
        raise RulesError(f"{path}: 'rules' must map rule names to tables of thresholds")
    build_rules(rules)  # validate now, at startup
    return rules
