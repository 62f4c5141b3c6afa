"""Model extraction: how much of the model can be copied through its answers? (stable API)

Threat model: black box, a query budget, and the answers the API gives: full probability
vectors, the top-k classes with their probabilities, or the label only. The attacker owns
unlabelled inputs from the task's domain (or draws them uniformly from it).

- **Substitute training** (Tramèr et al. 2016, "Stealing Machine Learning Models via
  Prediction APIs", arXiv:1609.02943, section 5; Papernot et al. 2017 for label-only): query
  the victim on ``N`` inputs, train a substitute on the answers, and measure its *fidelity*
  (agreement with the victim's labels on held-out inputs) and *accuracy* (against the true
  labels) as ``N`` grows. Budgets are nested prefixes of one query sequence, so the curve costs
  the largest budget, not their sum.
- **Equation solving** (Tramèr et al. 2016, section 4.1): a multinomial logistic model
  ``softmax(Wx + b)`` answers ``log(p_i / p_0) = (w_i - w_0) . x + (b_i - b_0)``, linear in
  the unknowns, so ``d + 1`` queries with probabilities recover ``W`` and ``b`` exactly up to
  the softmax's invariance (adding one vector to every row), i.e. a functionally identical
  model. More queries give a least-squares fit; the residual tells whether the victim really
  is log-linear.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bastion.errors import AssessmentError

__all__ = [
    "Answers",
    "EquationSolvingResult",
    "ExtractionPoint",
    "LinearModel",
    "SubstituteResult",
    "TorchSubstitute",
    "degrade_answers",
    "fidelity",
    "solve_softmax_regression",
    "train_substitutes",
]

logger = logging.getLogger(__name__)

_TINY = float(np.finfo(np.float64).tiny)


class Answers(StrEnum):
    """What the victim's API reveals per query."""

    PROBABILITIES = "probabilities"
    TOP_K = "top_k"
    LABEL = "label"


def degrade_answers(probs: ArrayLike, answers: Answers, k: int = 1) -> NDArray[np.float64]:
    """The training targets an attacker can build from each kind of answer.

    ``probabilities``: the vectors as given. ``top_k``: the ``k`` largest probabilities as
    given, the remaining mass (known, since they sum to one) spread evenly over the other
    classes. ``label``: one-hot of the top class.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise AssessmentError(f"expected probabilities (n, classes), got shape {p.shape}")
    n, classes = p.shape
    if answers is Answers.PROBABILITIES:
        return p.copy()
    if answers is Answers.LABEL:
        onehot: NDArray[np.float64] = np.eye(classes)[p.argmax(axis=1)]
        return onehot
    if not 1 <= k < classes:
        raise AssessmentError(f"top-k answers need 1 <= k < {classes}, got {k}")
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    rows = np.arange(n)[:, None]
    kept = p[rows, top]
    rest = np.clip(1.0 - kept.sum(axis=1, keepdims=True), 0.0, 1.0) / (classes - k)
    out = np.repeat(rest, classes, axis=1)
    out[rows, top] = kept
    return out


def fidelity(substitute_labels: ArrayLike, victim_labels: ArrayLike) -> float:
    """The fraction of held-out inputs on which the substitute and the victim agree."""
    a = np.asarray(substitute_labels).reshape(-1)
    b = np.asarray(victim_labels).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise AssessmentError("fidelity needs the same, non-zero number of labels from both")
    return float(np.mean(a == b))


# ---------------------------------------------------------------------------------------------
# Substitute training


@dataclass(frozen=True, slots=True)
class TorchSubstitute:
    """The attacker's substitute: an MLP (or softmax regression) trained on soft targets.

    Inputs are scaled from the domain's raw bounds to [0, 1] first; training runs a fixed
    number of Adam steps so the cost does not grow with the budget.

    Attributes:
        hidden: hidden units of the one hidden layer; 0 for a softmax regression.
        steps: Adam steps (minibatches).
        batch_size: minibatch size.
        learning_rate: Adam's step size.
    """

    hidden: int = 128
    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 3e-3

    def fit_predict(
        self,
        x: NDArray[Any],
        targets: NDArray[np.float64],
        x_eval: NDArray[Any],
        bounds: tuple[float, float],
        seed: int,
    ) -> NDArray[np.int64]:
        """Train on ``(x, targets)`` and return the substitute's labels on ``x_eval``."""
        import torch
        from torch import nn

        from bastion.assess._training import small_model_threads

        lower, upper = bounds
        scale = 1.0 / max(upper - lower, 1e-12)
        features = int(np.prod(x.shape[1:]))
        classes = targets.shape[1]
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Flatten()]
        if self.hidden > 0:
            layers += [nn.Linear(features, self.hidden), nn.ReLU(), nn.Linear(self.hidden, classes)]
        else:
            layers.append(nn.Linear(features, classes))
        model = nn.Sequential(*layers)
        xt = torch.as_tensor((np.asarray(x, np.float32) - lower) * scale)
        tt = torch.as_tensor(targets, dtype=torch.float32)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        generator = torch.Generator().manual_seed(seed)
        n = xt.shape[0]
        with small_model_threads(model):
            for _ in range(self.steps):
                batch = torch.randint(0, n, (min(self.batch_size, n),), generator=generator)
                log_probs = torch.log_softmax(model(xt[batch]), dim=1)
                loss = -(tt[batch] * log_probs).sum(dim=1).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
            model.eval()
            with torch.no_grad():
                evaluated = (np.asarray(x_eval, np.float32) - lower) * scale
                logits = model(torch.as_tensor(evaluated))
        labels: NDArray[np.int64] = logits.argmax(dim=1).numpy().astype(np.int64)
        return labels


@dataclass(frozen=True, slots=True)
class ExtractionPoint:
    """One point of the fidelity-versus-queries curve.

    Attributes:
        queries: victim queries the substitute was trained on.
        fidelity: agreement with the victim on the held-out inputs.
        accuracy: accuracy against the true labels (None without labels).
    """

    queries: int
    fidelity: float
    accuracy: float | None


@dataclass(frozen=True, slots=True)
class SubstituteResult:
    """The curve of one kind of answers.

    Attributes:
        answers: what the API revealed.
        k: the ``k`` of top-k answers (None otherwise).
        points: one per budget, ascending.
        victim_accuracy: the victim's own accuracy on the held-out inputs (None without labels).
    """

    answers: Answers
    k: int | None
    points: tuple[ExtractionPoint, ...]
    victim_accuracy: float | None


def train_substitutes(
    victim_probs: Callable[[NDArray[Any]], ArrayLike],
    query_x: NDArray[Any],
    eval_x: NDArray[Any],
    *,
    budgets: Sequence[int],
    answers: Sequence[tuple[Answers, int]] = ((Answers.PROBABILITIES, 0), (Answers.LABEL, 0)),
    eval_y: ArrayLike | None = None,
    victim_eval_labels: ArrayLike | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    substitute: TorchSubstitute | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SubstituteResult, ...]:
    """Substitute training at each budget, for each kind of answers.

    The victim is queried once on the first ``max(budgets)`` inputs of ``query_x``; each kind
    of answers is derived from those same probabilities (what a hardened API would have
    returned instead), so the curves differ only in what the answers reveal.

    Args:
        victim_probs: the victim: raw inputs to probabilities (charged per input).
        query_x: the attacker's inputs, in query order.
        eval_x: held-out inputs for fidelity (never queried for training).
        budgets: query counts to measure at.
        answers: ``(kind, k)`` pairs; ``k`` matters for top-k only.
        eval_y: true labels of ``eval_x``, for accuracy.
        victim_eval_labels: the victim's labels on ``eval_x`` if already known (else queried).
        bounds: the raw input bounds (the substitute scales them to [0, 1]).
        substitute: the substitute's architecture and training.
        seed: seeds the substitutes.
        progress: ``(done, total)`` after each substitute.
    """
    wanted = sorted({int(b) for b in budgets})
    if not wanted or wanted[0] < 1:
        raise AssessmentError("extraction budgets must be positive query counts")
    if wanted[-1] > len(query_x):
        raise AssessmentError(
            f"a budget of {wanted[-1]} queries needs as many attacker inputs; {len(query_x)} given"
        )
    model = substitute or TorchSubstitute()
    probs = np.asarray(victim_probs(query_x[: wanted[-1]]), dtype=np.float64)
    if victim_eval_labels is None:
        victim_eval = np.asarray(victim_probs(eval_x), dtype=np.float64).argmax(axis=1)
    else:
        victim_eval = np.asarray(victim_eval_labels).reshape(-1)
    truth = None if eval_y is None else np.asarray(eval_y).reshape(-1)
    victim_accuracy = None if truth is None else float(np.mean(victim_eval == truth))
    results = []
    total = len(answers) * len(wanted)
    done = 0
    for kind, k in answers:
        targets = degrade_answers(probs, kind, k)
        points = []
        for budget in wanted:
            labels = model.fit_predict(
                query_x[:budget], targets[:budget], eval_x, bounds, seed + budget
            )
            points.append(
                ExtractionPoint(
                    queries=budget,
                    fidelity=fidelity(labels, victim_eval),
                    accuracy=None if truth is None else float(np.mean(labels == truth)),
                )
            )
            done += 1
            if progress is not None:
                progress(done, total)
        results.append(
            SubstituteResult(
                answers=kind,
                k=k if kind is Answers.TOP_K else None,
                points=tuple(points),
                victim_accuracy=victim_accuracy,
            )
        )
    return tuple(results)


# ---------------------------------------------------------------------------------------------
# Equation solving


@dataclass(frozen=True, slots=True)
class LinearModel:
    """A softmax-linear model ``softmax(x @ weight.T + bias)`` over flattened raw inputs."""

    weight: NDArray[np.float64]
    bias: NDArray[np.float64]

    def logits(self, x: NDArray[Any]) -> NDArray[np.float64]:
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        result: NDArray[np.float64] = flat @ self.weight.T + self.bias
        return result

    def predict(self, x: NDArray[Any]) -> NDArray[np.int64]:
        labels: NDArray[np.int64] = self.logits(x).argmax(axis=1).astype(np.int64)
        return labels

    def canonical(self) -> LinearModel:
        """The same function with class 0's row and bias at zero (softmax invariance removed)."""
        return LinearModel(self.weight - self.weight[:1], self.bias - self.bias[:1])


@dataclass(frozen=True, slots=True)
class EquationSolvingResult:
    """What equation solving recovered.

    Attributes:
        model: the recovered parameters, canonical (class 0 at zero).
        queries: queries spent (solving and verification).
        residual: the largest absolute error of the recovered log-ratios on the verification
            queries, which the solve never saw (about 1e-10 for a truly softmax-linear
            victim; large when the victim is not). With ``d + 1`` queries the system is
            square and fits *any* answers exactly, so only fresh queries can tell.
        exact: whether the residual is within the tolerance.
    """

    model: LinearModel
    queries: int
    residual: float
    exact: bool


def solve_softmax_regression(
    victim_probs: Callable[[NDArray[Any]], ArrayLike],
    shape: tuple[int, ...],
    *,
    bounds: tuple[float, float],
    rng: np.random.Generator,
    queries: int | None = None,
    verify: int = 16,
    tolerance: float = 1e-3,
) -> EquationSolvingResult:
    """Recover a softmax-linear victim's parameters from ``d + 1`` probability answers.

    Queries are drawn uniformly inside the raw bounds (random points are in general
    position, so the system has full rank). For each class ``i`` the equations
    ``[x, 1] @ [w_i - w_0; b_i - b_0] = log p_i - log p_0`` are solved by least squares.

    Args:
        victim_probs: the victim: raw inputs to probabilities.
        shape: the shape of one input (flattened to ``d`` features).
        bounds: the raw input bounds.
        rng: draws the queries.
        queries: how many to solve with (at least ``d + 1``; default ``d + 1``).
        verify: further queries that check the recovered model (at least 1).
        tolerance: the largest residual still counted as an exact recovery (log-ratio units:
            float64 answers give about 1e-12, float32 answers about 1e-5; a victim that is not
            softmax-linear, 1e-1 and more).

    Raises:
        AssessmentError: too few queries, or answers with a zero probability (the log-ratio
            is then unknown: the API rounds, or the model is not softmax-linear).
    """
    d = int(np.prod(shape))
    n = d + 1 if queries is None else int(queries)
    if n < d + 1:
        raise AssessmentError(f"equation solving needs at least d + 1 = {d + 1} queries")
    if verify < 1:
        raise AssessmentError("equation solving needs at least one verification query")
    lower, upper = bounds
    total = n + verify
    # The victim sees float32 inputs; solve with exactly those.
    x = rng.uniform(lower, upper, size=(total, *shape)).astype(np.float32)
    p = np.asarray(victim_probs(x), dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != total:
        raise AssessmentError(f"the victim answered {p.shape} for {total} queries")
    if np.any(p <= 0.0):
        raise AssessmentError(
            "a probability answer is 0: the log-ratios are unknown (rounded outputs?)"
        )
    design = np.hstack([x.astype(np.float64).reshape(total, d), np.ones((total, 1))])
    log_ratio = np.log(p[:, 1:]) - np.log(p[:, :1])
    solution, *_ = np.linalg.lstsq(design[:n], log_ratio[:n], rcond=None)
    errors = np.abs(design[n:] @ solution - log_ratio[n:])
    residual = float(errors.max()) if errors.size else 0.0
    classes = p.shape[1]
    weight = np.zeros((classes, d))
    bias = np.zeros(classes)
    weight[1:] = solution[:d].T
    bias[1:] = solution[d]
    return EquationSolvingResult(
        model=LinearModel(weight, bias),
        queries=total,
        residual=residual,
        exact=residual <= tolerance,
    )
