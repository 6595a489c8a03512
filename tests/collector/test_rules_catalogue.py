"""The catalogue: canonical names, overrides, validation, and docs/rules.md kept in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradwatch.collector.rules import CATALOGUE, RulesError, build_rules, load
from gradwatch.collector.rules.docs import render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
NAMES = {
    "non_finite", "loss_spike", "grad_explosion", "vanishing_gradients", "update_ratio_high",
    "update_ratio_low", "frozen_parameters", "lr_sanity", "loss_plateau", "weight_norm_spike",
    "dead_parameters", "throughput_drop", "step_time_increase", "memory_pressure",
    "memory_growth", "trainer_silent", "rank_stalled", "rank_crashed", "rank_missing",
    "straggler", "replica_divergence", "val_divergence", "duplicate_rank", "collector_limit",
}  # fmt: skip


def test_catalogue_has_every_canonical_rule_with_docs() -> None:
    assert set(CATALOGUE) == NAMES
    for cls in CATALOGUE.values():
        assert cls.__doc__ and cls.action and cls.severity in ("warning", "error", "critical")


def test_overrides_replace_thresholds_and_disable_rules() -> None:
    rules = {
        r.name: r
        for r in build_rules({"loss_spike": {"ratio": 20}, "lr_sanity": {"enabled": False}})
    }
    assert rules["loss_spike"].settings.ratio == 20.0 and "lr_sanity" not in rules


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"nope": {}}, "nope"),
        ({"loss_spike": {"ratoi": 1}}, "ratoi"),
        ({"loss_spike": {"ratio": "big"}}, "ratio"),
        ({"loss_spike": {"for_checks": -1}}, "loss_spike"),
    ],
)
def test_bad_overrides_raise_clear_errors(
    overrides: dict[str, dict[str, object]], words: str
) -> None:
    with pytest.raises(RulesError, match=words):
        build_rules(overrides)  # type: ignore[arg-type]


def test_load_reads_yaml_and_toml(tmp_path: Path) -> None:
    y = tmp_path / "r.yaml"
    y.write_text("rules:\n  loss_spike:\n    ratio: 20\n")
    t = tmp_path / "r.toml"
    t.write_text("[rules.loss_spike]\nratio = 20\n")
    assert load(y) == load(t) == {"loss_spike": {"ratio": 20}}


def test_docs_rules_md_matches_the_catalogue() -> None:
    assert DOCS.read_text() == render(), (
        "docs/rules.md is stale: python -m gradwatch.collector.rules.docs --write docs/rules.md"
    )
