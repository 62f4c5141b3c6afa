"""The membership family: does the model leak which examples it was trained on?

Runs the attacks of :mod:`bastion.assess.privacy.membership` on a balanced candidate set:
known members (the ``--aux members=PATH`` dataset: examples from the model's training data) and
known non-members (the evaluation data, which must be held out). Shadow models are trained
with the target's own recipe when bastion can read it (a scikit-learn estimator is cloned; a
PyTorch architecture is re-initialised and retrained), else with an MLP (``shadow = "mlp"``),
on balanced halves of the candidates plus the optional ``--aux population=PATH`` data. They
train through :func:`bastion.assess.parallel.make_executor`: by default on Ray when it is
installed (a local instance, or the cluster ``RAY_ADDRESS`` names), else in this process;
``executor = "serial"`` avoids Ray's start-up for small jobs.

Metrics, per attack ``<a>`` in ``loss``, ``confidence``, ``correctness``, ``shadow``,
``lira_online``, ``lira_offline``, and ``strongest`` (the maximum over the attacks run):

- ``membership.<a>.tpr`` at each FPR (0.001 and 0.01 by default): the numbers that matter;
- ``membership.<a>.auc`` and ``membership.<a>.balanced_accuracy``.

An attack that cannot run (no shadow recipe, ``shadow = "none"``) reports NaN, so a policy
rule on it fails closed.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.assess.data import Dataset
from bastion.assess.domain import InputDomain
from bastion.assess.families.interface import CliOption, RunContext
from bastion.assess.integrity.invariance import Transform, perturb
from bastion.assess.parallel import make_executor
from bastion.assess.plots import LineChart, Series
from bastion.assess.privacy.membership import (
    MembershipAttack,
    MembershipReport,
    ShadowTrainer,
    SklearnShadowTrainer,
    TorchShadowTrainer,
    run_membership,
)
from bastion.assess.privacy.roc import tpr_at_fpr
from bastion.assess.results import FamilyResult, Metric
from bastion.assess.targets.interface import Access, Target
from bastion.errors import AssessmentError

__all__ = ["MEMBERSHIP", "MembershipConfig", "MembershipFamily"]

logger = logging.getLogger(__name__)

_STRONGEST = "strongest"


class MembershipConfig(BaseModel):
    """``[membership]``: attacks, shadow models and operating points."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attacks: list[MembershipAttack] = Field(
        default_factory=lambda: list(MembershipAttack), description="attacks to run"
    )
    fpr: list[float] = Field(
        default_factory=lambda: [0.001, 0.01], description="false-positive rates to report"
    )
    shadows: int = Field(default=16, ge=2, le=4096, description="shadow models")
    shadow: Literal["auto", "target", "mlp", "none"] = Field(
        default="auto", description="shadow recipe: the target's own, an MLP, or none"
    )
    epochs: int = Field(default=30, ge=1, le=10_000, description="epochs of torch shadows")
    learning_rate: float = Field(default=1e-3, gt=0, description="Adam step of torch shadows")
    batch_size: int = Field(default=64, ge=1, le=1_000_000, description="torch shadow batch")
    weight_decay: float = Field(default=0.0, ge=0, description="torch shadow L2 penalty")
    fixed_variance: bool | None = Field(
        default=None, description="LiRA's pooled variance (default: below 32 shadows a side)"
    )
    members: int | None = Field(
        default=None, ge=1, description="members used (default: as many as non-members)"
    )
    views: Literal["none", "shifts"] = Field(
        default="none",
        description="LiRA's extra queries per candidate: none, or the four one-pixel shifts "
        "(use when the model was trained with shift augmentation)",
    )
    executor: str = Field(
        default="auto",
        description="where shadows train: auto (Ray when installed: a local instance, or the "
        "cluster RAY_ADDRESS names), serial, process[:N], ray, ray:ADDRESS",
    )

    @field_validator("attacks", "fpr", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("fpr")
    @classmethod
    def _rates(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 < f < 1.0 for f in value):
            raise ValueError("false-positive rates must lie in (0, 1)")
        return sorted(set(value))

    @field_validator("executor")
    @classmethod
    def _executor(cls, value: str) -> str:
        try:
            make_executor(value)
        except AssessmentError as exc:
            raise ValueError(str(exc)) from exc
        return value


def _normaliser(domain: InputDomain) -> Any:
    """The domain's normalisation as a module (applied before a copied architecture)."""
    import torch

    from bastion.assess._training import Affine

    shape = domain.stats_shape()
    mean = torch.tensor(domain.mean, dtype=torch.float32).reshape(shape)
    std = torch.tensor(domain.std, dtype=torch.float32).reshape(shape)
    return Affine(mean, 1.0 / std)


@dataclass(frozen=True, slots=True)
class ArchitectureFactory:
    """A fresh copy of an architecture with re-initialised weights (picklable).

    Attributes:
        template: the trained network (copied, never modified).
        prefix: modules applied before it (the domain's normalisation), or None.
    """

    template: Any
    prefix: Any = None

    def __call__(self) -> Any:
        import torch

        net = copy.deepcopy(self.template)
        for module in net.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        for parameter in net.parameters():
            parameter.requires_grad_(True)
        if self.prefix is None:
            return net
        return torch.nn.Sequential(copy.deepcopy(self.prefix), net)


@dataclass(frozen=True, slots=True)
class MlpFactory:
    """The attacker's default shadow: inputs scaled by the domain's bounds, one hidden layer."""

    features: int
    classes: int
    lower: float
    upper: float
    hidden: int = 128

    def __call__(self) -> Any:
        import torch

        from bastion.assess._training import Affine

        nn = torch.nn
        return nn.Sequential(
            Affine(self.lower, 1.0 / max(self.upper - self.lower, 1e-12)),
            nn.Flatten(),
            nn.Linear(self.features, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, self.classes),
        )


def shadow_trainer(target: Target, config: MembershipConfig) -> tuple[ShadowTrainer | None, str]:
    """The shadow recipe for ``target`` and a description of it for the report."""
    if config.shadow == "none":
        return None, "none"
    if config.shadow in ("auto", "target"):
        estimator = getattr(target, "estimator", None)
        if estimator is not None and hasattr(estimator, "predict_proba"):
            return SklearnShadowTrainer(estimator), f"clone of {type(estimator).__name__}"
        if target.info.access is Access.GRADIENTS:
            model = target.torch_model()
            net = getattr(model, "net", model)
            prefix = _normaliser(target.domain) if target.domain.normalised else None
            factory = ArchitectureFactory(net, prefix)
            trainer = _torch_trainer(factory, config)
            return trainer, f"retrained {type(net).__name__} (Adam, {config.epochs} epochs)"
        if config.shadow == "target":
            raise AssessmentError(
                f"the {target.info.kind} target does not reveal its training recipe; use "
                "shadow = 'mlp' (or 'none')"
            )
    factory_mlp = MlpFactory(
        features=target.domain.size,
        classes=target.info.num_classes,
        lower=target.domain.lower,
        upper=target.domain.upper,
    )
    return _torch_trainer(factory_mlp, config), "MLP (128 hidden units)"


def _torch_trainer(factory: Any, config: MembershipConfig) -> TorchShadowTrainer:
    # The recipe should mirror how the target was trained: LiRA's IN/OUT Gaussians describe
    # models like the target only if they are trained like it (see the shadow accuracy line).
    return TorchShadowTrainer(
        factory,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
    )


def _roc_series(report: MembershipReport) -> tuple[Series, ...]:
    series = []
    for result in report.results:
        low = max(result.summary.min_resolvable_fpr / 2, 1e-5)
        grid = np.unique(np.concatenate([np.geomspace(low, 1.0, 120), result.curve.fpr]))
        grid = grid[grid >= low]
        if grid.size > 240:
            grid = np.geomspace(low, 1.0, 240)
        points = [(float(f), tpr_at_fpr(result.curve, float(f))) for f in grid]
        points = [(f, t) for f, t in points if t > 0]
        if points:
            series.append(
                Series(
                    result.attack.value,
                    tuple(f for f, _ in points),
                    tuple(t for _, t in points),
                    dashed=not result.attack.needs_shadows,
                )
            )
    return tuple(series)


class MembershipFamily:
    """Membership inference: threshold, shadow-model and LiRA attacks."""

    name = "membership"
    summary = "membership inference (loss threshold, Shokri shadow models, LiRA online/offline)"
    config_model = MembershipConfig
    cli_options = (
        CliOption(
            "--attack",
            "attacks",
            "attack: " + ", ".join(a.value for a in MembershipAttack) + " (repeatable)",
            multiple=True,
            metavar="NAME",
            choices=tuple(a.value for a in MembershipAttack),
        ),
        CliOption("--fpr", "fpr", "false-positive rate to report TPR at", multiple=True),
        CliOption("--shadows", "shadows", "shadow models (default 16)", metavar="N"),
        CliOption(
            "--shadow",
            "shadow",
            "shadow recipe (default auto)",
            choices=("auto", "target", "mlp", "none"),
        ),
        CliOption(
            "--executor",
            "executor",
            "where shadows train: auto (default: Ray if installed), serial, process[:N], ray, "
            "ray:ADDRESS",
            metavar="SPEC",
        ),
    )

    def metric_names(self, config: MembershipConfig) -> frozenset[str]:
        names = set()
        for attack in [*(a.value for a in config.attacks), _STRONGEST]:
            names |= {
                f"membership.{attack}.tpr",
                f"membership.{attack}.auc",
                f"membership.{attack}.balanced_accuracy",
            }
        return frozenset(names)

    def run(self, context: RunContext, config: MembershipConfig) -> FamilyResult:
        started = time.perf_counter()
        target = context.target
        members_data = context.aux.get("members")
        if members_data is None:
            raise AssessmentError(
                "membership inference needs known members: --aux members=PATH (examples from "
                "the model's training data; the evaluation data must be held out)"
            )
        wanted = list(dict.fromkeys(config.attacks))
        unavailable: list[tuple[MembershipAttack, str]] = []
        predict: Any = target.predict_proba
        if target.info.access is Access.LABELS:
            # Labels only: the correctness ("gap") attack still runs on one-hot answers.
            unavailable = [
                (a, "needs scores; the target gives labels only")
                for a in wanted
                if a is not MembershipAttack.CORRECTNESS
            ]
            wanted = [a for a in wanted if a is MembershipAttack.CORRECTNESS]
            if not wanted:
                raise AssessmentError(
                    "the target gives labels only: of the membership attacks, only "
                    "'correctness' can run"
                )
            eye = np.eye(target.info.num_classes)

            def predict(batch: Any) -> Any:
                return eye[target.predict_labels(batch)]

        non_members = context.data
        count = config.members or len(non_members)
        members = members_data.subset(min(count, len(members_data)), context.seed)
        x = np.concatenate([members.x, non_members.x]).astype(np.float32)
        y = np.concatenate([members.y, non_members.y])
        is_member = np.concatenate([np.ones(len(members), bool), np.zeros(len(non_members), bool)])
        trainer, recipe = (None, "none")
        if any(a.needs_shadows for a in wanted):
            trainer, recipe = shadow_trainer(target, config)
        population = context.aux.get("population")
        queries_before = target.queries.used

        def progress(done: int, total: int) -> None:
            context.progress("membership shadow models", done, total)

        views = []
        if config.views == "shifts":
            domain = target.domain
            if len(domain.shape) < 3:
                raise AssessmentError(
                    "views = 'shifts' needs image inputs (channels, rows, columns)"
                )
            views = perturb(
                x,
                Transform.SHIFT,
                1,
                (domain.lower, domain.upper),
                channel_axis=domain.channel_axis % len(domain.shape),
            )
        report = run_membership(
            predict,
            x,
            y,
            is_member,
            attacks=wanted,
            trainer=trainer,
            n_shadows=config.shadows,
            fixed_variance=config.fixed_variance,
            fprs=tuple(config.fpr),
            seed=context.seed,
            executor=make_executor(config.executor),
            progress=progress,
            n_classes=target.info.num_classes,
            population=None if population is None else (population.x, population.y),
            views=views,
        )
        if unavailable:
            report = dataclasses.replace(report, skipped=(*report.skipped, *unavailable))
        metrics = self._metrics(report, config)
        return FamilyResult(
            family=self.name,
            metrics=tuple(metrics),
            details=self._details(report, views, recipe, members, non_members, population),
            charts=(
                LineChart(
                    "Membership inference ROC (log-log)",
                    "false-positive rate",
                    "true-positive rate",
                    _roc_series(report),
                    log_x=True,
                    log_y=True,
                    diagonal=True,
                ),
            ),
            summary=self._summary(report, config),
            queries=target.queries.used - queries_before,
            seconds=time.perf_counter() - started,
        )

    @staticmethod
    def _metrics(report: MembershipReport, config: MembershipConfig) -> list[Metric]:
        metrics: list[Metric] = []
        measured = {r.attack: r.summary for r in report.results}
        for attack in dict.fromkeys(config.attacks):
            summary = measured.get(attack)
            for fpr in config.fpr:
                value = math.nan if summary is None else summary.tpr_at_fpr[fpr]
                metrics.append(Metric(f"membership.{attack.value}.tpr", value, fpr))
            metrics.append(
                Metric(
                    f"membership.{attack.value}.auc",
                    math.nan if summary is None else summary.auc,
                )
            )
            metrics.append(
                Metric(
                    f"membership.{attack.value}.balanced_accuracy",
                    math.nan if summary is None else summary.balanced_accuracy,
                )
            )
        summaries = list(measured.values())
        for fpr in config.fpr:
            best = max((s.tpr_at_fpr[fpr] for s in summaries), default=math.nan)
            metrics.append(Metric(f"membership.{_STRONGEST}.tpr", best, fpr))
        metrics.append(
            Metric(
                f"membership.{_STRONGEST}.auc", max((s.auc for s in summaries), default=math.nan)
            )
        )
        metrics.append(
            Metric(
                f"membership.{_STRONGEST}.balanced_accuracy",
                max((s.balanced_accuracy for s in summaries), default=math.nan),
            )
        )
        return metrics

    @staticmethod
    def _details(
        report: MembershipReport,
        views: list[Any],
        recipe: str,
        members: Dataset,
        non_members: Dataset,
        population: Dataset | None,
    ) -> dict[str, Any]:
        return {
            "members": report.members,
            "non_members": report.non_members,
            "members_source": members.source,
            "non_members_source": non_members.source,
            "population": None if population is None else len(population),
            "shadow_models": report.n_shadows,
            "shadow_recipe": recipe,
            "executor": report.executor,
            "fixed_variance": report.fixed_variance,
            "views": 1 + len(views),
            "target_accuracy": {
                "members": report.target_accuracy[0],
                "non_members": report.target_accuracy[1],
            },
            "shadow_accuracy": None
            if report.shadow_accuracy is None
            else {"in": report.shadow_accuracy[0], "out": report.shadow_accuracy[1]},
            "attacks": [
                {
                    "attack": r.attack.value,
                    "tpr_at_fpr": {f"{k:g}": v for k, v in r.summary.tpr_at_fpr.items()},
                    "auc": r.summary.auc,
                    "balanced_accuracy": r.summary.balanced_accuracy,
                    "advantage": r.summary.advantage,
                    "min_resolvable_fpr": r.summary.min_resolvable_fpr,
                }
                for r in report.results
            ],
            "skipped": [{"attack": a.value, "reason": why} for a, why in report.skipped],
        }

    @staticmethod
    def _summary(report: MembershipReport, config: MembershipConfig) -> tuple[str, ...]:
        low = min(config.fpr)
        lines = [
            f"{report.members} members vs {report.non_members} non-members; "
            f"{report.n_shadows} shadow models on {report.executor}",
            f"target accuracy: members {report.target_accuracy[0]:.1%}, non-members "
            f"{report.target_accuracy[1]:.1%}",
        ]
        if report.shadow_accuracy is not None:
            lines.append(
                f"shadow accuracy: IN {report.shadow_accuracy[0]:.1%}, OUT "
                f"{report.shadow_accuracy[1]:.1%} (should match the target's for LiRA to hold)"
            )
        lines.extend(
            f"{r.attack.value}: TPR {r.summary.tpr_at_fpr[low]:.2%} at {low:g} FPR, "
            f"AUC {r.summary.auc:.3f}, balanced accuracy {r.summary.balanced_accuracy:.3f}"
            for r in report.results
        )
        if report.non_members * low < 1:
            lines.append(
                f"note: {report.non_members} non-members resolve FPR only down to "
                f"{1 / report.non_members:.2g}; TPR at {low:g} is interpolated"
            )
        lines.extend(f"{a.value}: skipped ({why})" for a, why in report.skipped)
        return tuple(lines)


MEMBERSHIP = MembershipFamily()
