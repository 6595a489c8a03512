"""GPT model: shapes, names, presets, and that it learns."""

from __future__ import annotations

import pytest
import torch

from gradwatch.trainer.model import GPT, GPTConfig


def test_model_forward_shapes_and_loss() -> None:
    cfg = GPTConfig.preset("tiny")
    model = GPT(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.block_size))
    logits, loss = model(idx)
    assert logits.shape == (3, cfg.block_size, cfg.vocab_size)
    assert loss is None
    logits, loss = model(idx, idx)
    assert loss is not None and loss.shape == ()
    # Untrained byte model: close to uniform over 256 values.
    assert abs(loss.item() - torch.log(torch.tensor(256.0)).item()) < 0.3


def test_model_backward_reaches_every_parameter() -> None:
    model = GPT(GPTConfig.preset("tiny"))
    idx = torch.randint(0, 256, (2, 16))
    model(idx, idx)[1].backward()  # type: ignore[union-attr]
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_model_parameter_names_read_well() -> None:
    names = {n for n, _ in GPT(GPTConfig.preset("tiny")).named_parameters()}
    for expected in (
        "tok_emb.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.1.mlp.fc.weight",
        "blocks.0.ln1.weight",
        "ln_f.weight",
        "head.weight",
    ):
        assert expected in names


def test_model_norm_weights_start_at_one() -> None:
    model = GPT(GPTConfig.preset("tiny"))
    norms = [p for n, p in model.named_parameters() if ".ln" in n or n.startswith("ln_f")]
    assert norms and all(torch.equal(p, torch.ones_like(p)) for p in norms)


@pytest.mark.parametrize(
    ("name", "low", "high"), [("tiny", 50e3, 100e3), ("demo", 200e3, 1e6), ("small", 1e6, 5e6)]
)
def test_model_preset_sizes(name: str, low: float, high: float) -> None:
    assert low <= GPT(GPTConfig.preset(name)).num_params() <= high


def test_model_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="unknown preset"):
        GPTConfig.preset("huge")


def test_model_rejects_sequences_longer_than_block() -> None:
    cfg = GPTConfig.preset("tiny")
    with pytest.raises(ValueError, match="block_size"):
        GPT(cfg)(torch.zeros(1, cfg.block_size + 1, dtype=torch.long))


def test_model_few_steps_on_tiny_reduce_loss() -> None:
    from tests.helpers.trainer_runs import run

    records = run(steps=40)
    first = sum(float(r.loss) for r in records[:5]) / 5
    last = sum(float(r.loss) for r in records[-5:]) / 5
    assert last < first - 1.0
