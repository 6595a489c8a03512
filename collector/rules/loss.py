"""Loss rules: loss_spike, loss_plateau, val_divergence."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from ..state import RankState
from .base import Finding, Rule, RuleSettings, finite, fmt, mean_std
from .window import Window


@dataclass(frozen=True)
class LossSpikeSettings(RuleSettings):
    clear_checks: int = 5
    ratio: float = 10.0
    """Error when the loss exceeds this multiple of its moving average."""
    zscore: float = 5.0
    """Warning when the loss is this many standard deviations above its moving average."""
    window: int = 100
    """Frames in the moving average."""
    min_history: int = 10
    """Frames needed before the ratio test."""
    zscore_warmup: int = 50
    """Frames needed before the z-score test."""


@dataclass
class LossSpikeMemory:
    losses: Window
    """The moving window of losses (spikes kept out)."""
    logs: Window
    """Their logarithms (0.0 in place of a loss <= 0), for the z-score of positive losses."""
    nonpositive: int = 0
    """Losses <= 0 in the window (then the z-score is judged in linear space)."""

    def append(self, loss: float) -> None:
        out = self.losses.append(loss)
        self.logs.append(math.log(loss) if loss > 0 else 0.0)
        self.nonpositive += (loss <= 0) - (out is not None and out <= 0)


class LossSpike(Rule[LossSpikeSettings, LossSpikeMemory]):
    """The loss jumped far above its recent moving average.

    Error when it exceeds ``ratio`` times the average, warning when its z-score exceeds
    ``zscore`` after ``zscore_warmup`` frames (in log space for positive losses: near
    convergence losses vary by factors, not by amounts). Spikes are kept out of the average.
    What to do: look at the batch of that step (outliers, corrupted data), lower the LR 5-10x
    or enable gradient clipping; if it recurs, consider skipping such batches (SPAM-style).
    """

    name = "loss_spike"
    severity = "error"
    action = "inspect the batch at this step; lower the LR 5-10x or enable gradient clipping"
    settings_type = LossSpikeSettings

    def new_memory(self) -> LossSpikeMemory:
        return LossSpikeMemory(Window(self.settings.window), Window(self.settings.window))

    def check(self, rank: RankState, memory: LossSpikeMemory) -> list[Finding] | None:
        loss = None if rank.stats is None else rank.stats.loss
        if loss is None or not math.isfinite(loss):
            return None
        s, history = self.settings, memory.losses
        found: list[Finding] = []
        if len(history) >= s.min_history:
            avg = history.mean()
            if avg > 0 and loss > s.ratio * avg:
                found.append(
                    self.finding(
                        f"loss {fmt(loss)} is {fmt(loss / avg)}x its moving average {fmt(avg)}",
                        value=loss,
                        threshold=s.ratio * avg,
                    )
                )
            elif len(history) >= s.zscore_warmup:
                z, threshold = _zscore(loss, memory, s.zscore)
                if z > s.zscore:
                    found.append(
                        self.finding(
                            f"loss {fmt(loss)} is {z:.1f} standard deviations above its "
                            f"moving average {fmt(avg)}",
                            value=loss,
                            threshold=threshold,
                            severity="warning",
                        )
                    )
        if not found:
            memory.append(loss)
        return found


def _zscore(loss: float, memory: LossSpikeMemory, limit: float) -> tuple[float, float]:
    """How many standard deviations ``loss`` lies above ``history``, and the loss that would
    lie ``limit`` standard deviations above it.

    Positive losses are judged in log space: near convergence a batch's loss varies by factors
    (one misclassified sample turns a loss of 0.001 into 0.005), not by a fixed amount, and a
    real spike is a jump by a factor too."""
    if loss > 0 and not memory.nonpositive:
        mean, spread = memory.logs.mean_std()
        std = max(spread, 1e-3)
        return (math.log(loss) - mean) / std, math.exp(min(mean + limit * std, 709.0))
    avg, spread = memory.losses.mean_std()
    std = max(spread, 1e-3 * abs(avg), 1e-12)
    return (loss - avg) / std, avg + limit * std


@dataclass(frozen=True)
class LossPlateauSettings(RuleSettings):
    clear_checks: int = 10
    cooldown_seconds: float = 1800.0
    window: int = 100
    """Frames averaged at each end of the comparison."""
    lookback: int = 1000
    """Frames between the start of the earlier window and the latest frame."""
    ratio: float = 0.99
    """Plateau when mean(recent) >= ratio x mean(earlier)."""


@dataclass
class LossPlateauMemory:
    losses: deque[float]
    steps: deque[int]
    recent: Window
    """The latest ``window`` losses."""
    earlier: Window
    """The ``window`` losses that start ``lookback`` frames back (full once ``losses`` is)."""


class LossPlateau(Rule[LossPlateauSettings, LossPlateauMemory]):
    """The loss stopped improving: the recent mean is not 1% below the mean ``lookback`` ago.

    Needs ``lookback`` frames of history, so short runs never trigger it. What to do: check
    that the LR is not too low (update ratios < 1e-5), that parameters are moving (frozen or
    bf16 weights), that the data is not repeating; raise the LR or stop the run if converged.
    """

    name = "loss_plateau"
    severity = "warning"
    action = (
        "check the LR (update ratios), frozen or bf16 parameters and the data pipeline; "
        "raise the LR or stop if the run has converged"
    )
    settings_type = LossPlateauSettings
    sheddable = True

    def new_memory(self) -> LossPlateauMemory:
        n, w = self.settings.lookback, self.settings.window
        return LossPlateauMemory(deque(maxlen=n), deque(maxlen=n), Window(w), Window(w))

    def check(self, rank: RankState, memory: LossPlateauMemory) -> list[Finding] | None:
        loss = None if rank.stats is None else rank.stats.loss
        if loss is None or not math.isfinite(loss):
            return None
        s, history = self.settings, memory.losses
        history.append(loss)
        memory.steps.append(rank.stats.step if rank.stats is not None else -1)
        memory.recent.append(loss)
        back = len(history) - 1 - (s.lookback - s.window)  # where the earlier window ends
        if 0 <= back < len(history):
            memory.earlier.append(history[back])
        if len(history) < s.lookback:
            return []
        earlier, recent = memory.earlier.mean(), memory.recent.mean()
        if earlier > 0 and recent >= s.ratio * earlier:
            values = list(history)
            return [
                self.finding(
                    f"loss has not improved over {s.lookback} frames: recent mean "
                    f"{fmt(recent)} vs {fmt(earlier)} earlier",
                    value=recent,
                    threshold=s.ratio * earlier,
                    onset=self._onset(values, list(memory.steps), recent),
                )
            ]
        return []

    def _onset(self, values: list[float], steps: list[int], recent: float) -> int:
        """The first step of the earliest ``window`` of frames already at the plateau's level."""
        w = self.settings.window
        for start in range(0, len(values) - w + 1):
            if self.settings.ratio * mean_std(values[start : start + w])[0] <= recent:
                return steps[start]
        return steps[-w]


@dataclass(frozen=True)
class ValDivergenceSettings(RuleSettings):
    rise: float = 0.1
    """Validation loss this fraction above its best counts as rising."""
    min_points: int = 3
    """Validation values needed before judging."""
    ema_alpha: float = 0.05
    """Smoothing of the training loss."""


@dataclass
class ValDivergenceMemory:
    last_val: float | None = None
    best_val: float = math.inf
    points: int = 0
    train_ema: float | None = None
    train_at_best: float | None = None


class ValDivergence(Rule[ValDivergenceSettings, ValDivergenceMemory]):
    """Validation loss rises above its best while the training loss keeps falling: overfitting.

    Judged only on frames that carry a new ``scalars["val_loss"]``. What to do: stop early or
    restore the best checkpoint; add weight decay or dropout; get more data.
    """

    name = "val_divergence"
    severity = "warning"
    action = "early-stop or restore the best checkpoint; add weight decay/dropout or more data"
    settings_type = ValDivergenceSettings

    def new_memory(self) -> ValDivergenceMemory:
        return ValDivergenceMemory()

    def check(self, rank: RankState, memory: ValDivergenceMemory) -> list[Finding] | None:
        stats = rank.stats
        if stats is None:
            return None
        s = self.settings
        if finite(stats.loss):
            assert stats.loss is not None
            ema = memory.train_ema
            memory.train_ema = stats.loss if ema is None else ema + s.ema_alpha * (stats.loss - ema)
        val = stats.scalars.get("val_loss")
        if val is None or not math.isfinite(val) or val == memory.last_val:
            return None
        memory.last_val = val
        memory.points += 1
        if val < memory.best_val:
            memory.best_val, memory.train_at_best = val, memory.train_ema
            return []
        train, at_best = memory.train_ema, memory.train_at_best
        limit = memory.best_val * (1 + s.rise)
        if memory.points >= s.min_points and train is not None and at_best is not None:
            if val > limit and train < at_best:
                return [
                    self.finding(
                        f"validation loss {fmt(val)} is above its best {fmt(memory.best_val)} "
                        f"while training loss fell to {fmt(train)}",
                        value=val,
                        threshold=limit,
                    )
                ]
        return []
