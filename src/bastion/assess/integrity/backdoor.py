"""Backdoor detection with Neural Cleanse (stable API).

Wang et al. 2019, "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", IEEE S&P. Threat model: white box (gradients) and a small set of clean inputs. A
backdoored class is one that a *small* trigger turns every input into. For each class ``t`` it
reverse-engineers the smallest trigger: a mask ``m`` (one value per pixel, shared by the
channels) and a pattern ``p`` in the input domain, stamped as ``x' = (1 - m) * x + m * p``,
minimising ``CE(f(x'), t) + cost * |m|_1``. The cost adapts as in the paper's reference
implementation: it starts at ``init_cost`` once the attack succeeds, grows by 1.5x after
``patience`` epochs whose attack success is at least 99%, and shrinks by 1.5^1.5 after
``patience`` epochs below it; the smallest mask that reached 99% is kept.

The L1 norms of the reversed masks are then compared by the median absolute deviation with
the consistency constant 1.4826 (an estimator of the standard deviation under normality):
``anomaly_index_t = |L1_t - median| / (1.4826 * MAD)``. A class whose mask is *smaller* than
the median and whose anomaly index exceeds 2 (the paper's threshold, a 95% confidence under
normality) is flagged as a backdoor target.

All classes are optimised together in one batch (their parameters and Adam states are
independent, so this is the same as one run per class, only faster).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bastion.errors import AssessmentError

__all__ = [
    "ANOMALY_THRESHOLD",
    "MAD_CONSISTENCY",
    "NeuralCleanseResult",
    "anomaly_indices",
    "neural_cleanse",
]

logger = logging.getLogger(__name__)

#: Scales the median absolute deviation to estimate a normal distribution's sigma.
MAD_CONSISTENCY = 1.4826
#: The anomaly index above which a class with a small mask is flagged.
ANOMALY_THRESHOLD = 2.0


def anomaly_indices(l1_norms: ArrayLike) -> tuple[NDArray[np.float64], float, float]:
    """``(anomaly index per class, median, consistency-scaled MAD)`` of mask L1 norms.

    When every norm but one equals the median the MAD is 0; the index is then infinite for a
    class off the median and 0 on it.
    """
    norms = np.asarray(l1_norms, dtype=np.float64).reshape(-1)
    if norms.size < 3:
        raise AssessmentError("an anomaly index needs at least 3 classes")
    median = float(np.median(norms))
    mad = MAD_CONSISTENCY * float(np.median(np.abs(norms - median)))
    deviation = np.abs(norms - median)
    index = np.where(deviation > 0, np.inf, 0.0) if mad == 0.0 else deviation / mad
    return index, median, mad


@dataclass(frozen=True, slots=True)
class NeuralCleanseResult:
    """Reversed triggers and the verdict.

    Attributes:
        masks: ``[classes, *mask_shape]`` in [0, 1].
        patterns: ``[classes, *shape]`` raw units.
        l1_norms: the L1 norm of each class's mask.
        attack_success: the fraction of clean inputs its trigger sends to the class.
        reached: whether the trigger reached the success threshold (else the last mask).
        anomaly_index: per class (see the module docstring).
        median: the median L1 norm.
        mad: the consistency-scaled median absolute deviation.
        flagged: the classes flagged as backdoor targets.
    """

    masks: NDArray[np.float32]
    patterns: NDArray[np.float32]
    l1_norms: NDArray[np.float64]
    attack_success: NDArray[np.float64]
    reached: NDArray[np.bool_]
    anomaly_index: NDArray[np.float64]
    median: float
    mad: float
    flagged: tuple[int, ...]

    @property
    def max_anomaly_index(self) -> float:
        """The largest anomaly index among classes with a smaller-than-median mask (0 if none)."""
        small = self.l1_norms < self.median
        return float(self.anomaly_index[small].max()) if small.any() else 0.0


def neural_cleanse(
    model: Any,
    x_clean: NDArray[Any],
    num_classes: int,
    bounds: tuple[float, float],
    *,
    channel_axis: int | None = 0,
    epochs: int = 40,
    steps_per_epoch: int = 8,
    batch_size: int = 64,
    learning_rate: float = 0.1,
    init_cost: float = 1e-3,
    success_threshold: float = 0.99,
    patience: int = 5,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> NeuralCleanseResult:
    """Reverse a trigger for every class and flag the anomalously small ones.

    Args:
        model: a ``torch.nn.Module`` from raw inputs to logits.
        x_clean: clean raw inputs ``[n, *shape]``.
        num_classes: the model's classes.
        bounds: the raw input bounds (the pattern stays inside them).
        channel_axis: the axis of ``shape`` holding channels (the mask is shared across it);
            None for inputs without channels (one mask value per feature).
        epochs: optimisation epochs (cost updates happen per epoch).
        steps_per_epoch: Adam steps per epoch.
        batch_size: clean inputs per step.
        learning_rate: Adam's step size on the tanh-parametrised mask and pattern.
        init_cost: the L1 weight once the attack first succeeds.
        success_threshold: the attack success a trigger must reach (0.99 in the paper).
        patience: epochs before the cost moves.
        seed: seeds the minibatches and the initial mask and pattern.
        progress: ``(done, total)`` after each epoch.
    """
    import torch

    x = np.asarray(x_clean, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise AssessmentError("Neural Cleanse needs a non-empty batch of clean inputs")
    shape = tuple(x.shape[1:])
    if channel_axis is not None and not 0 <= channel_axis < len(shape):
        raise AssessmentError(f"channel axis {channel_axis} is outside the input shape {shape}")
    lower, upper = bounds
    mask_shape = tuple(s for i, s in enumerate(shape) if i != channel_axis)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    classes = num_classes
    mask_param = (torch.rand((classes, *mask_shape), generator=generator) * 2 - 1).to(device)
    pattern_param = (torch.rand((classes, *shape), generator=generator) * 2 - 1).to(device)
    mask_param.requires_grad_(True)
    pattern_param.requires_grad_(True)
    optimizer = torch.optim.Adam([mask_param, pattern_param], lr=learning_rate, betas=(0.5, 0.9))
    data = torch.as_tensor(x).to(device)
    targets = torch.arange(classes, device=device)
    eps = 1e-7

    def materialise() -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.tanh(mask_param) / (2 - eps) + 0.5
        pattern = (torch.tanh(pattern_param) / (2 - eps) + 0.5) * (upper - lower) + lower
        if channel_axis is not None:
            mask = mask.unsqueeze(1 + channel_axis)
        return mask, pattern

    cost = np.zeros(classes)
    up = np.zeros(classes, dtype=np.int64)
    down = np.zeros(classes, dtype=np.int64)
    cost_set = np.zeros(classes, dtype=bool)
    best_l1 = np.full(classes, np.inf)
    best_mask = np.zeros((classes, *mask_shape), dtype=np.float32)
    best_pattern = np.zeros((classes, *shape), dtype=np.float32)
    last_success = np.zeros(classes)
    multiplier_up, multiplier_down = 1.5, 1.5**1.5
    n = data.shape[0]
    for epoch in range(epochs):
        hits = torch.zeros(classes, device=device)
        seen = 0
        for _ in range(steps_per_epoch):
            index = torch.randint(0, n, (min(batch_size, n),), generator=generator).to(device)
            batch = data[index]
            mask, pattern = materialise()
            stamped = (1 - mask[:, None]) * batch[None] + (mask * pattern)[:, None]
            logits = model(stamped.reshape(-1, *shape)).reshape(classes, len(index), -1)
            labels = targets[:, None].expand(classes, len(index))
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
            ).reshape(classes, len(index))
            l1 = mask.reshape(classes, -1).abs().sum(dim=1)
            cost_t = torch.as_tensor(cost, dtype=ce.dtype, device=device)
            loss = (ce.mean(dim=1) + cost_t * l1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            hits += (logits.argmax(dim=2) == labels).float().sum(dim=1).detach()
            seen += len(index)
        success = (hits / seen).cpu().numpy().astype(np.float64)
        last_success = success
        with torch.no_grad():
            mask, pattern = materialise()
            mask_np = mask.reshape(classes, *mask_shape).cpu().numpy()
            pattern_np = pattern.cpu().numpy()
        l1_now = np.abs(mask_np.reshape(classes, -1)).sum(axis=1).astype(np.float64)
        improved = (success >= success_threshold) & (l1_now < best_l1)
        best_l1[improved] = l1_now[improved]
        best_mask[improved] = mask_np[improved]
        best_pattern[improved] = pattern_np[improved]
        # The reference implementation's cost schedule, per class.
        ok = success >= success_threshold
        unset = ~cost_set
        start = unset & ok
        cost[start] = init_cost
        cost_set |= start
        live = cost_set & ~start
        up = np.where(live & ok, up + 1, np.where(live, 0, up))
        down = np.where(live & ~ok, down + 1, np.where(live, 0, down))
        raise_cost = live & (up >= patience)
        lower_cost = live & (down >= patience)
        cost[raise_cost] *= multiplier_up
        up[raise_cost] = 0
        cost[lower_cost] /= multiplier_down
        down[lower_cost] = 0
        if progress is not None:
            progress(epoch + 1, epochs)
    reached = np.isfinite(best_l1)
    if not reached.all():
        logger.warning(
            "Neural Cleanse: classes %s never reached %.0f%% attack success; their last mask "
            "is used",
            np.flatnonzero(~reached).tolist(),
            100 * success_threshold,
        )
        with torch.no_grad():
            mask, pattern = materialise()
        final_mask = mask.reshape(classes, *mask_shape).cpu().numpy()
        final_pattern = pattern.cpu().numpy()
        best_mask[~reached] = final_mask[~reached]
        best_pattern[~reached] = final_pattern[~reached]
        best_l1[~reached] = np.abs(final_mask[~reached].reshape((~reached).sum(), -1)).sum(axis=1)
    anomaly, median, mad = anomaly_indices(best_l1)
    flagged = tuple(
        int(c) for c in np.flatnonzero((best_l1 < median) & (anomaly > ANOMALY_THRESHOLD))
    )
    if flagged:
        logger.info("Neural Cleanse flags classes %s", flagged)
    return NeuralCleanseResult(
        masks=best_mask,
        patterns=best_pattern,
        l1_norms=best_l1,
        attack_success=last_success,
        reached=reached,
        anomaly_index=anomaly,
        median=median,
        mad=mad if math.isfinite(mad) else float("nan"),
        flagged=flagged,
    )
