"""The evasion family: how much of the model's accuracy survives a budgeted attacker.

For each configured attack and budget it measures, over the evaluation points:

- ``evasion.<id>.success_rate`` at eps: the fraction of correctly classified points the
  attack turned into errors;
- ``evasion.<id>.robust_accuracy`` at eps: the fraction of all points still correct;
- ``evasion.<id>.median_norm`` (minimum-norm attacks): the median perturbation needed over the
  correctly classified points (infinite where none was found);
- ``evasion.clean.accuracy``.

``<id>`` is the attack's ``id`` or ``<name>_<norm>`` (``pgd_linf``, ``cw_l2``). Budgets are
raw input units (see :mod:`bastion.assess.domain`); without any, L-infinity attacks use
``[1, 2, 4, 8, 16] / 255`` and L2 attacks ``[0.25, 0.5, 1, 2]``, times the domain's span.
Only correctly classified points are attacked (the others count as broken already). Every
adversarial input is projected onto the budget and the domain before it is scored, so a faulty
attack cannot overstate robustness beyond its budget, and is scored by the target itself.
Without ``attacks``, the attacks the target's access allows run: FGSM and PGD with gradients,
Square with scores, HopSkipJump with labels only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.assess.attacks import ATTACKS, AttackOptions, EvasionAttack, Norm, perturbation_norms
from bastion.assess.domain import parse_budget
from bastion.assess.families.interface import CliOption, RunContext
from bastion.assess.plots import Chart, LineChart, Series
from bastion.assess.results import Direction, FamilyResult, Metric
from bastion.assess.targets.interface import Access
from bastion.errors import AssessmentError

__all__ = ["EVASION", "EvasionConfig", "EvasionFamily"]

logger = logging.getLogger(__name__)

_DEFAULT_EPS = {
    Norm.LINF: (1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255),
    Norm.L2: (0.25, 0.5, 1.0, 2.0),
}
_AUTO = {
    Access.GRADIENTS: ("fgsm", "pgd"),
    Access.SCORES: ("square",),
    Access.LABELS: ("hopskipjump",),
}
_NAMES = tuple(str(model.model_fields["name"].default) for model in ATTACKS)


def _from_shorthand(value: Any) -> Any:
    """``"pgd"``, ``"pgd_l2"`` or ``"hopskipjump_linf"`` -> an options mapping."""
    if not isinstance(value, str):
        return value
    name, _, norm = value.strip().lower().partition("_")
    if name not in _NAMES:
        raise ValueError(f"unknown attack {value!r} (known: {', '.join(_NAMES)})")
    return {"name": name, **({"norm": norm} if norm else {})}


class EvasionConfig(BaseModel):
    """``[evasion]``: which attacks, at which budgets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attacks: list[AttackOptions] | None = Field(
        default=None, description="attacks to run; default: what the target's access allows"
    )
    eps: list[float | str] | None = Field(
        default=None, description="budgets (raw units) for attacks that do not set their own"
    )
    batch_size: int = Field(default=256, ge=1, le=1_000_000)

    @field_validator("attacks", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [_from_shorthand(v) for v in value]
        return value

    @field_validator("eps", mode="before")
    @classmethod
    def _budgets(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            for item in value:
                try:
                    parse_budget(item)
                except AssessmentError as exc:
                    raise ValueError(str(exc)) from exc
        return value


def _attack_id(options: Any) -> str:
    return str(options.id or f"{options.name}_{options.norm.value}")


def _options_for(config: EvasionConfig, access: Access | None) -> list[Any]:
    if config.attacks is not None:
        return list(config.attacks)
    if access is None:
        names = [n for names in _AUTO.values() for n in names]
    else:
        names = [n for a, names in _AUTO.items() if a.rank <= access.rank for n in names]
        names = list(_AUTO[access])
    by_name = {str(m.model_fields["name"].default): m for m in ATTACKS}
    return [by_name[n]() for n in names]


def _budgets(options: Any, config: EvasionConfig, span: float) -> list[float]:
    given = options.eps if options.eps is not None else config.eps
    if given is None:
        return [e * span for e in _DEFAULT_EPS[options.norm]]
    return sorted({parse_budget(e) for e in given})


def _stats(values: NDArray[np.float64]) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "median": None, "max": None}
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "max": float(values.max()),
    }


def _project(
    x: NDArray[np.float32],
    adv: NDArray[np.float32],
    eps: float,
    norm: Norm,
    lower: float,
    upper: float,
) -> NDArray[np.float32]:
    """Put ``adv`` back inside the eps-ball around ``x`` and the domain."""
    if norm is Norm.LINF:
        adv = np.clip(adv, x - eps, x + eps)
    else:
        delta = (adv - x).reshape(x.shape[0], -1).astype(np.float64)
        norms = np.sqrt((delta * delta).sum(axis=1))
        scale = np.minimum(1.0, eps / np.maximum(norms, 1e-30))
        adv = (x + (delta * scale[:, None]).reshape(x.shape)).astype(np.float32)
    return np.clip(adv, lower, upper).astype(np.float32)


class EvasionFamily:
    """Evasion attacks: success rate and robust accuracy per budget."""

    name = "evasion"
    summary = "evasion attacks (FGSM, PGD, Carlini-Wagner, Square, HopSkipJump)"
    config_model = EvasionConfig
    cli_options = (
        CliOption(
            "--attack",
            "attacks",
            "attack to run, e.g. pgd, pgd_l2, cw, square, hopskipjump (repeatable; default: "
            "what the target's access allows)",
            multiple=True,
            metavar="NAME",
        ),
        CliOption(
            "--eps",
            "eps",
            "budget in raw input units, a number or a fraction like 8/255 (repeatable)",
            multiple=True,
            metavar="EPS",
        ),
        CliOption("--batch-size", "batch_size", "points attacked at once (default 256)"),
    )

    def metric_names(self, config: EvasionConfig) -> frozenset[str]:
        names = {"evasion.clean.accuracy"}
        for options in _options_for(config, None):
            ident = _attack_id(options)
            names |= {f"evasion.{ident}.success_rate", f"evasion.{ident}.robust_accuracy"}
            if not options.build().bounded:
                names.add(f"evasion.{ident}.median_norm")
        return frozenset(names)

    def run(self, context: RunContext, config: EvasionConfig) -> FamilyResult:
        started = time.perf_counter()
        target, data = context.target, context.data
        domain = target.domain
        queries_before = target.queries.used
        clean = target.predict_labels(data.x)
        correct = clean == data.y
        n = len(data)
        metrics = [
            Metric("evasion.clean.accuracy", float(correct.mean()), None, Direction.LOWER_IS_WORSE)
        ]
        attacks_json: list[dict[str, Any]] = []
        summary = [f"clean accuracy {correct.mean():.1%} on {n} points"]
        charts: dict[Norm, list[Series]] = {}
        ran = 0
        for index, options in enumerate(_options_for(config, target.info.access)):
            attack: EvasionAttack = options.build()
            ident = _attack_id(options)
            budgets = _budgets(options, config, domain.span)
            entry: dict[str, Any] = {
                "id": ident,
                "name": attack.name,
                "norm": attack.norm.value,
                "access": attack.access.value,
                "bounded": attack.bounded,
                "options": options.model_dump(mode="json", exclude={"eps", "id", "name"}),
                "points": [],
                "skipped": None,
            }
            attacks_json.append(entry)
            if attack.access.rank > target.info.access.rank:
                entry["skipped"] = (
                    f"needs {attack.access.value}; the target gives {target.info.access.value}"
                )
                summary.append(f"{ident}: skipped ({entry['skipped']})")
                logger.warning("evasion %s skipped: %s", ident, entry["skipped"])
                continue
            ran += 1
            rng = context.rng("evasion", index, ident)
            if attack.bounded:
                points = self._bounded(context, attack, ident, budgets, correct, config, rng)
            else:
                points = self._minimum_norm(
                    context, attack, ident, budgets, correct, config, rng, entry
                )
            entry["points"] = points
            for point in points:
                eps = point["eps"]
                metrics.append(
                    Metric(
                        f"evasion.{ident}.success_rate",
                        point["success_rate"],
                        eps,
                        unit=attack.norm.value,
                    )
                )
                metrics.append(
                    Metric(
                        f"evasion.{ident}.robust_accuracy",
                        point["robust_accuracy"],
                        eps,
                        Direction.LOWER_IS_WORSE,
                        attack.norm.value,
                    )
                )
            if "median_norm" in entry:
                metrics.append(
                    Metric(
                        f"evasion.{ident}.median_norm",
                        entry["median_norm"],
                        None,
                        Direction.LOWER_IS_WORSE,
                        attack.norm.value,
                    )
                )
            charts.setdefault(attack.norm, []).append(
                Series(
                    ident,
                    (0.0, *(p["eps"] for p in points)),
                    (float(correct.mean()), *(p["robust_accuracy"] for p in points)),
                    dashed=not attack.bounded,
                )
            )
            worst = points[-1] if points else None
            if worst is not None:
                summary.append(
                    f"{ident}: robust accuracy {worst['robust_accuracy']:.1%}, success "
                    f"{_pct(worst['success_rate'])} at eps={worst['eps']:.4g}"
                )
        if ran == 0:
            raise AssessmentError(
                f"no evasion attack can run on this target (it gives "
                f"{target.info.access.value} only)"
            )
        chart_list: list[Chart] = [
            LineChart(
                f"Robust accuracy vs eps ({'L-infinity' if norm is Norm.LINF else 'L2'})",
                f"eps ({norm.value}, raw input units)",
                "robust accuracy",
                tuple(series),
                y_range=(0.0, 1.0),
            )
            for norm, series in charts.items()
        ]
        return FamilyResult(
            family=self.name,
            metrics=tuple(metrics),
            details={
                "samples": n,
                "clean_accuracy": float(correct.mean()),
                "attacks": attacks_json,
            },
            charts=tuple(chart_list),
            summary=tuple(summary),
            queries=target.queries.used - queries_before,
            seconds=time.perf_counter() - started,
        )

    def _attack(
        self,
        context: RunContext,
        attack: EvasionAttack,
        task: str,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        eps: float,
        batch_size: int,
        rng: np.random.Generator,
    ) -> NDArray[np.float32]:
        out = np.empty_like(x)
        total = x.shape[0]
        context.progress(task, 0, total)
        for start in range(0, total, batch_size):
            stop = min(total, start + batch_size)
            out[start:stop] = attack.perturb(
                context.target, x[start:stop], y[start:stop], eps, rng=rng
            )
            context.progress(task, stop, total)
        return out

    def _bounded(
        self,
        context: RunContext,
        attack: EvasionAttack,
        ident: str,
        budgets: Sequence[float],
        correct: NDArray[np.bool_],
        config: EvasionConfig,
        rng: np.random.Generator,
    ) -> list[dict[str, Any]]:
        target, data = context.target, context.data
        domain = target.domain
        x, y = data.x[correct], data.y[correct]
        n, attacked = len(data), int(correct.sum())
        points = []
        for eps in budgets:
            started, before = time.perf_counter(), target.queries.used
            if attacked:
                adv = self._attack(
                    context,
                    attack,
                    f"evasion {ident} eps={eps:.4g}",
                    x,
                    y,
                    eps,
                    config.batch_size,
                    rng,
                )
                adv = _project(x, adv, eps, attack.norm, domain.lower, domain.upper)
                broken = target.predict_labels(adv) != y
            else:
                adv, broken = x, np.zeros(0, dtype=bool)
            linf, l2 = perturbation_norms(x[broken], adv[broken])
            points.append(
                {
                    "eps": eps,
                    "attacked": attacked,
                    "broken": int(broken.sum()),
                    "success_rate": float(broken.mean()) if attacked else math.nan,
                    "robust_accuracy": float((attacked - broken.sum()) / n),
                    "queries": target.queries.used - before,
                    "seconds": round(time.perf_counter() - started, 4),
                    "linf": _stats(linf),
                    "l2": _stats(l2),
                }
            )
        return points

    def _minimum_norm(
        self,
        context: RunContext,
        attack: EvasionAttack,
        ident: str,
        budgets: Sequence[float],
        correct: NDArray[np.bool_],
        config: EvasionConfig,
        rng: np.random.Generator,
        entry: dict[str, Any],
    ) -> list[dict[str, Any]]:
        target, data = context.target, context.data
        domain = target.domain
        x, y = data.x[correct], data.y[correct]
        n, attacked = len(data), int(correct.sum())
        started, before = time.perf_counter(), target.queries.used
        if attacked:
            adv = self._attack(
                context, attack, f"evasion {ident}", x, y, 0.0, config.batch_size, rng
            )
            adv = np.clip(adv, domain.lower, domain.upper)
            fooled = target.predict_labels(adv) != y
        else:
            adv, fooled = x, np.zeros(0, dtype=bool)
        linf, l2 = perturbation_norms(x, adv)
        size = linf if attack.norm is Norm.LINF else l2
        needed = np.where(fooled, size, np.inf)
        entry["median_norm"] = float(np.median(needed)) if attacked else math.nan
        entry["found"] = int(fooled.sum())
        entry["queries"] = target.queries.used - before
        entry["seconds"] = round(time.perf_counter() - started, 4)
        entry["norms"] = {"linf": _stats(linf[fooled]), "l2": _stats(l2[fooled])}
        points = []
        for eps in budgets:
            # A float32 round-off of the returned input must not hide a perturbation at eps.
            broken = needed <= eps * (1 + 1e-6) + 1e-9
            points.append(
                {
                    "eps": eps,
                    "attacked": attacked,
                    "broken": int(broken.sum()),
                    "success_rate": float(broken.mean()) if attacked else math.nan,
                    "robust_accuracy": float((attacked - broken.sum()) / n),
                }
            )
        return points


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


#: The evasion family instance listed in ``FAMILIES``.
EVASION = EvasionFamily()
