"""The shipped corpus and the batch sampler."""

from __future__ import annotations

import torch

from gradwatch.trainer.data import DATA_DIR, corpus_text, load_corpus


def test_data_corpus_ships_real_text_of_bounded_size() -> None:
    files = sorted(DATA_DIR.glob("*.txt"))
    assert len(files) >= 3
    size = sum(f.stat().st_size for f in files)
    assert 100_000 <= size <= 300_000
    text = corpus_text()
    printable = sum(c.isprintable() or c in "\n\t" for c in text) / len(text)
    letters = sum(c.isalpha() for c in text) / len(text)
    assert printable > 0.99 and letters > 0.6
    words = text.lower().split()
    for common in ("the", "and", "of", "to"):
        assert words.count(common) > 200  # English, not random bytes


def test_data_split_holds_out_validation() -> None:
    corpus = load_corpus(val_fraction=0.1)
    total = len(corpus.train) + len(corpus.val)
    assert 0.08 < len(corpus.val) / total < 0.12
    assert corpus.train.dtype == torch.int64 and int(corpus.train.max()) < 256


def test_data_batches_are_deterministic_and_shifted() -> None:
    corpus = load_corpus()
    x1, y1 = corpus.batch("train", 4, 32, torch.Generator().manual_seed(7))
    x2, y2 = corpus.batch("train", 4, 32, torch.Generator().manual_seed(7))
    x3, _ = corpus.batch("train", 4, 32, torch.Generator().manual_seed(8))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert x1.shape == (4, 32)
    assert torch.equal(x1[:, 1:], y1[:, :-1])
