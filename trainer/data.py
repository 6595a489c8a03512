"""The shipped public-domain corpus as byte tokens, and a deterministic batch sampler."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["DATA_DIR", "Corpus", "load_corpus", "corpus_text"]

DATA_DIR = Path(__file__).with_name("data")
"""Folder holding the corpus ``*.txt`` files (public-domain English prose and verse)."""


def corpus_text(data_dir: Path = DATA_DIR) -> str:
    """All corpus files, sorted by name, joined by three blank lines."""
    files = sorted(data_dir.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no corpus *.txt files in {data_dir}")
    return "\n\n\n\n".join(f.read_text(encoding="utf-8").strip() for f in files)


@dataclass
class Corpus:
    """Byte tokens split into a training and a held-out validation part."""

    train: torch.Tensor
    """Training tokens, int64, 1-D."""
    val: torch.Tensor
    """Validation tokens (the last ``val_fraction`` of each file), int64, 1-D."""

    def batch(
        self, split: str, batch_size: int, block_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``(x, y)`` of shape ``(batch_size, block_size)``; ``y`` is ``x`` shifted by one.

        The offsets come from ``generator`` only, so a seeded generator gives the same batches.
        """
        data = self.train if split == "train" else self.val
        if len(data) <= block_size + 1:
            raise ValueError(f"{split} split ({len(data)} tokens) too short for block {block_size}")
        ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
        offsets = ix[:, None] + torch.arange(block_size + 1)[None, :]
        chunk = data[offsets]
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


def load_corpus(val_fraction: float = 0.1, data_dir: Path = DATA_DIR) -> Corpus:
    """Tokenize the corpus as UTF-8 bytes (vocab 256) and hold out the tail for validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train: list[bytes] = []
    val: list[bytes] = []
    # Hold out the tail of every file, so validation covers each text the model trains on.
    for text in corpus_text(data_dir).split("\n\n\n\n"):
        raw = text.encode("utf-8") + b"\n\n"
        cut = len(raw) - int(len(raw) * val_fraction)
        train.append(raw[:cut])
        val.append(raw[cut:])
    return Corpus(train=_tokens(b"".join(train)), val=_tokens(b"".join(val)))


def _tokens(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int64)
