"""The extraction family: how much of the model can be copied through its API?

Runs :mod:`bastion.assess.privacy.extraction` against the target as a black box. The
attacker's query pool is the ``--aux queries=PATH`` dataset (its labels are ignored), or by
default the first half of the evaluation data; the other half (or all of it, with a pool
given) is held out to measure fidelity. ``query_source = "uniform"`` draws the queries
uniformly from the input domain instead (an attacker without data).

Metrics, ``<answers>`` being ``probabilities``, ``top<k>`` or ``label``:

- ``extraction.substitute_<answers>.fidelity`` at each budget (queries): agreement of the
  substitute with the target on the held-out inputs;
- ``extraction.substitute_<answers>.accuracy`` at each budget;
- ``extraction.equation_solving.fidelity`` at d + 1 queries and
  ``extraction.equation_solving.residual`` (Tramèr et al.'s attack on softmax-linear models;
  fidelity near 1 with a residual near 0 means the parameters were recovered exactly).

A budget larger than the pool, or an answer kind the target does not give (probabilities from
a labels-only endpoint), reports NaN: a rule on it fails closed.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.assess.families.interface import CliOption, RunContext
from bastion.assess.plots import LineChart, Series
from bastion.assess.privacy.extraction import (
    Answers,
    SubstituteResult,
    TorchSubstitute,
    fidelity,
    solve_softmax_regression,
    train_substitutes,
)
from bastion.assess.results import Direction, FamilyResult, Metric
from bastion.assess.targets.interface import Access
from bastion.errors import AssessmentError

__all__ = ["EXTRACTION", "ExtractionConfig", "ExtractionFamily"]


def _parse_answers(value: str) -> tuple[Answers, int]:
    text = value.strip().lower()
    if text in ("probabilities", "label"):
        return Answers(text), 0
    if text.startswith("top") and text[3:].lstrip("_-").isdigit():
        return Answers.TOP_K, int(text[3:].lstrip("_-"))
    raise ValueError(f"unknown answers {value!r} (probabilities, top<k>, label)")


def _answers_id(kind: Answers, k: int) -> str:
    return f"top{k}" if kind is Answers.TOP_K else kind.value


class ExtractionConfig(BaseModel):
    """``[extraction]``: budgets, answer kinds, the substitute, equation solving."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budgets: list[int] = Field(
        default_factory=lambda: [50, 100, 250, 500], description="query budgets"
    )
    answers: list[str] = Field(
        default_factory=lambda: ["probabilities", "top1", "label"],
        description="what the API reveals: probabilities, top<k>, label",
    )
    query_source: Literal["data", "uniform"] = Field(
        default="data", description="the attacker's inputs: a data pool or uniform noise"
    )
    hidden: int = Field(default=128, ge=0, le=65_536, description="substitute hidden units")
    steps: int = Field(default=400, ge=1, le=1_000_000, description="substitute Adam steps")
    equation_solving: bool = Field(default=True, description="run Tramèr's equation solving")

    @field_validator("budgets", "answers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("budgets")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1:
            raise ValueError("budgets must be positive query counts")
        return sorted(set(value))

    @field_validator("answers")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one kind of answers is needed")
        return [_answers_id(*_parse_answers(v)) for v in value]


class ExtractionFamily:
    """Model extraction: substitute fidelity versus queries, and equation solving."""

    name = "extraction"
    summary = "model extraction (substitute training per answer kind, Tramèr equation solving)"
    config_model = ExtractionConfig
    cli_options = (
        CliOption("--budget", "budgets", "query budget (repeatable)", multiple=True, metavar="N"),
        CliOption(
            "--answers",
            "answers",
            "what the API reveals: probabilities, top<k>, label (repeatable)",
            multiple=True,
        ),
        CliOption("--query-source", "query_source", "attacker inputs", choices=("data", "uniform")),
    )

    def metric_names(self, config: ExtractionConfig) -> frozenset[str]:
        names = set()
        for answers in config.answers:
            names |= {
                f"extraction.substitute_{answers}.fidelity",
                f"extraction.substitute_{answers}.accuracy",
            }
        if config.equation_solving:
            names |= {
                "extraction.equation_solving.fidelity",
                "extraction.equation_solving.residual",
            }
        return frozenset(names)

    def run(self, context: RunContext, config: ExtractionConfig) -> FamilyResult:
        started = time.perf_counter()
        target, data = context.target, context.data
        domain = target.domain
        bounds = (domain.lower, domain.upper)
        rng = context.rng("extraction")
        pool = context.aux.get("queries")
        if config.query_source == "uniform":
            query_x = rng.uniform(
                domain.lower, domain.upper, (max(config.budgets), *domain.shape)
            ).astype(np.float32)
            eval_x, eval_y = data.x, data.y
        elif pool is not None:
            query_x = pool.x[rng.permutation(len(pool))]
            eval_x, eval_y = data.x, data.y
        else:
            order = rng.permutation(len(data))
            half = len(data) // 2
            query_x = data.x[order[:half]]
            eval_x, eval_y = data.x[order[half:]], data.y[order[half:]]
        if len(eval_x) == 0:
            raise AssessmentError("extraction needs held-out inputs to measure fidelity")
        queries_before = target.queries.used
        scores = target.info.access is not Access.LABELS
        kinds = [_parse_answers(a) for a in config.answers]
        runnable = [(kind, k) for kind, k in kinds if scores or kind is Answers.LABEL]
        budgets = [b for b in config.budgets if b <= len(query_x)]
        victim_eval = target.predict_labels(eval_x)

        def victim(x: NDArray[Any]) -> NDArray[np.float64]:
            if scores:
                return target.predict_proba(x)
            labels = target.predict_labels(x)
            onehot: NDArray[np.float64] = np.eye(target.info.num_classes)[labels]
            return onehot

        results: tuple[SubstituteResult, ...] = ()
        if runnable and budgets:
            results = train_substitutes(
                victim,
                query_x,
                eval_x,
                budgets=budgets,
                answers=runnable,
                eval_y=eval_y,
                victim_eval_labels=victim_eval,
                bounds=bounds,
                substitute=TorchSubstitute(hidden=config.hidden, steps=config.steps),
                seed=context.seed,
                progress=lambda d, t: context.progress("extraction substitutes", d, t),
            )
        metrics: list[Metric] = []
        by_id = {_answers_id(r.answers, r.k or 0): r for r in results}
        series = []
        for answers in config.answers:
            result = by_id.get(answers)
            points = {p.queries: p for p in result.points} if result else {}
            for budget in config.budgets:
                point = points.get(budget)
                metrics.append(
                    Metric(
                        f"extraction.substitute_{answers}.fidelity",
                        math.nan if point is None else point.fidelity,
                        float(budget),
                        unit="queries",
                    )
                )
                accuracy = None if point is None else point.accuracy
                metrics.append(
                    Metric(
                        f"extraction.substitute_{answers}.accuracy",
                        math.nan if accuracy is None else accuracy,
                        float(budget),
                        unit="queries",
                    )
                )
            if result:
                series.append(
                    Series(
                        answers,
                        tuple(float(p.queries) for p in result.points),
                        tuple(p.fidelity for p in result.points),
                    )
                )
        equation: dict[str, Any] | None = None
        if config.equation_solving:
            equation = self._equation_solving(context, eval_x, victim_eval, scores, metrics)
        summary = [
            f"{len(query_x)} attacker inputs ({config.query_source}), {len(eval_x)} held out; "
            f"target accuracy {float(np.mean(victim_eval == eval_y)):.1%}"
        ]
        for result in results:
            last = result.points[-1]
            summary.append(
                f"substitute from {_answers_id(result.answers, result.k or 0)}: fidelity "
                f"{last.fidelity:.1%} after {last.queries} queries"
            )
        skipped = [a for a in config.answers if a not in by_id]
        if skipped:
            summary.append(f"not measured: {', '.join(skipped)} (not given by the target)")
        dropped = [b for b in config.budgets if b not in budgets]
        if dropped:
            summary.append(f"budgets above the {len(query_x)} attacker inputs: {dropped}")
        if equation is not None:
            summary.append(
                f"equation solving: fidelity {equation['fidelity']:.1%} from "
                f"{equation['queries']} queries (residual {equation['residual']:.2g})"
                if equation.get("fidelity") is not None
                else f"equation solving: {equation['skipped']}"
            )
        return FamilyResult(
            family=self.name,
            metrics=tuple(metrics),
            details={
                "query_source": config.query_source,
                "attacker_inputs": len(query_x),
                "held_out": len(eval_x),
                "substitute": {"hidden": config.hidden, "steps": config.steps},
                "curves": [
                    {
                        "answers": _answers_id(r.answers, r.k or 0),
                        "points": [
                            {"queries": p.queries, "fidelity": p.fidelity, "accuracy": p.accuracy}
                            for p in r.points
                        ],
                    }
                    for r in results
                ],
                "equation_solving": equation,
            },
            charts=(
                LineChart(
                    "Extraction: substitute fidelity vs queries",
                    "queries",
                    "fidelity (agreement with the target)",
                    tuple(series),
                    log_x=True,
                    y_range=(0.0, 1.0),
                ),
            )
            if series
            else (),
            summary=tuple(summary),
            queries=target.queries.used - queries_before,
            seconds=time.perf_counter() - started,
        )

    @staticmethod
    def _equation_solving(
        context: RunContext,
        eval_x: NDArray[Any],
        victim_eval: NDArray[np.int64],
        scores: bool,
        metrics: list[Metric],
    ) -> dict[str, Any]:
        target = context.target
        domain = target.domain
        d = domain.size
        outcome: dict[str, Any]
        if not scores:
            outcome = {"skipped": "the target gives labels only"}
        else:
            try:
                solved = solve_softmax_regression(
                    target.predict_proba,
                    domain.shape,
                    bounds=(domain.lower, domain.upper),
                    rng=context.rng("extraction", "equation_solving"),
                )
            except AssessmentError as exc:
                outcome = {"skipped": str(exc)}
            else:
                outcome = {
                    "queries": solved.queries,
                    "residual": solved.residual,
                    "exact": solved.exact,
                    "fidelity": fidelity(solved.model.predict(eval_x), victim_eval),
                }
        metrics.append(
            Metric(
                "extraction.equation_solving.fidelity",
                outcome.get("fidelity", math.nan),
                float(d + 1),  # the solve's queries; verification adds a few more
                unit="queries",
            )
        )
        metrics.append(
            Metric(
                "extraction.equation_solving.residual",
                outcome.get("residual", math.nan),
                direction=Direction.LOWER_IS_WORSE,  # a small residual means an exact copy
            )
        )
        return outcome


EXTRACTION = ExtractionFamily()
