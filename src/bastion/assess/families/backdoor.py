"""The backdoor family: is there a class that a small trigger reaches from everywhere?

Runs Neural Cleanse (:mod:`bastion.assess.integrity.backdoor`, Wang et al. 2019) on a
white-box target with the evaluation data as the clean inputs.

Metrics:

- ``backdoor.neural_cleanse.anomaly_index``: the largest anomaly index among classes whose
  reversed trigger is smaller than the median (the paper flags above 2);
- ``backdoor.neural_cleanse.flagged``: how many classes are flagged;
- ``backdoor.neural_cleanse.min_l1``: the smallest reversed mask's L1 norm (pixels).
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.assess.families.interface import CliOption, RunContext
from bastion.assess.families.inversion import _image
from bastion.assess.integrity.backdoor import ANOMALY_THRESHOLD, neural_cleanse
from bastion.assess.plots import ImageGrid
from bastion.assess.results import Direction, FamilyResult, Metric
from bastion.assess.targets.interface import Access
from bastion.errors import AssessmentError

__all__ = ["BACKDOOR", "BackdoorConfig", "BackdoorFamily"]


class BackdoorConfig(BaseModel):
    """``[backdoor]``: Neural Cleanse's optimisation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clean_samples: int = Field(default=500, ge=1, description="clean inputs used")
    epochs: int = Field(default=40, ge=1, le=100_000, description="optimisation epochs")
    steps_per_epoch: int = Field(default=8, ge=1, le=100_000)
    batch_size: int = Field(default=64, ge=1, le=100_000)
    learning_rate: float = Field(default=0.1, gt=0)
    init_cost: float = Field(default=1e-3, gt=0, description="L1 weight once triggers work")


class BackdoorFamily:
    """Neural Cleanse: reversed trigger per class, anomaly index, flagged classes."""

    name = "backdoor"
    summary = "backdoor detection (Neural Cleanse reversed triggers, white box)"
    config_model = BackdoorConfig
    cli_options = (
        CliOption("--epochs", "epochs", "optimisation epochs (default 40)"),
        CliOption("--clean-samples", "clean_samples", "clean inputs used (default 500)"),
    )

    def metric_names(self, config: BackdoorConfig) -> frozenset[str]:
        return frozenset(
            f"backdoor.neural_cleanse.{q}" for q in ("anomaly_index", "flagged", "min_l1")
        )

    def run(self, context: RunContext, config: BackdoorConfig) -> FamilyResult:
        started = time.perf_counter()
        target = context.target
        if target.info.access is not Access.GRADIENTS:
            raise AssessmentError(
                f"Neural Cleanse needs gradients; the {target.info.kind} target gives "
                f"{target.info.access.value} only"
            )
        domain = target.domain
        clean = context.data.subset(config.clean_samples, context.seed)
        queries_before = target.queries.used
        # The mask is shared across channels; inputs without a channel axis get one per value.
        channel_axis = domain.channel_axis % len(domain.shape) if len(domain.shape) >= 3 else None
        result = neural_cleanse(
            target.torch_model(),
            clean.x,
            target.info.num_classes,
            (domain.lower, domain.upper),
            channel_axis=channel_axis,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            init_cost=config.init_cost,
            seed=context.seed,
            progress=lambda d, t: context.progress("neural cleanse", d, t),
        )
        names = target.info.classes
        triggers = []
        for c in range(target.info.num_classes):
            mask = result.masks[c]
            if channel_axis is not None:
                mask = np.expand_dims(mask, channel_axis)
            stamp = mask * result.patterns[c]
            flag = "*" if c in result.flagged else ""
            caption = (
                f"{names[c]}{flag}: L1 {result.l1_norms[c]:.1f} i {result.anomaly_index[c]:.1f}"
            )
            triggers.append((caption, _image(np.asarray(stamp, dtype=np.float64), domain.shape)))
        metrics = (
            Metric("backdoor.neural_cleanse.anomaly_index", result.max_anomaly_index),
            Metric("backdoor.neural_cleanse.flagged", float(len(result.flagged))),
            Metric(
                "backdoor.neural_cleanse.min_l1",
                float(result.l1_norms.min()),
                direction=Direction.LOWER_IS_WORSE,
                unit="pixels",
            ),
        )
        flagged = ", ".join(names[c] for c in result.flagged) or "none"
        return FamilyResult(
            family=self.name,
            metrics=metrics,
            details={
                "clean_samples": len(clean),
                "threshold": ANOMALY_THRESHOLD,
                "median_l1": result.median,
                "mad": result.mad,
                "classes": [
                    {
                        "class": names[c],
                        "l1": float(result.l1_norms[c]),
                        "anomaly_index": float(result.anomaly_index[c]),
                        "attack_success": float(result.attack_success[c]),
                        "reached": bool(result.reached[c]),
                        "flagged": c in result.flagged,
                    }
                    for c in range(target.info.num_classes)
                ],
                "flagged": [names[c] for c in result.flagged],
                "parameters": config.model_dump(mode="json"),
            },
            charts=(
                ImageGrid(
                    "Neural Cleanse reversed triggers, mask x pattern "
                    "(L1 norm, anomaly index i; * flagged)",
                    tuple(triggers),
                ),
            ),
            summary=(
                f"Neural Cleanse: flagged {flagged}; largest anomaly index "
                f"{result.max_anomaly_index:.2f} (threshold {ANOMALY_THRESHOLD:g})",
            ),
            queries=target.queries.used - queries_before,
            seconds=time.perf_counter() - started,
        )


BACKDOOR = BackdoorFamily()
