"""Extraction: Tramèr et al.'s equation solving is exact; substitutes improve with queries."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from bastion.assess.privacy.extraction import (
    Answers,
    LinearModel,
    TorchSubstitute,
    degrade_answers,
    fidelity,
    solve_softmax_regression,
    train_substitutes,
)
from bastion.errors import AssessmentError


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return np.asarray(data.data, np.float64) / 16.0, np.asarray(data.target, np.int64)


@pytest.fixture(scope="module")
def victim(digits: tuple[np.ndarray, np.ndarray]) -> LogisticRegression:
    x, y = digits
    return LogisticRegression(C=1.0, max_iter=2000).fit(x[:1000], y[:1000])


def test_equation_solving_recovers_logistic_regression(
    victim: LogisticRegression, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """d + 1 = 65 probability answers recover W and b to 1e-6 (Tramèr et al. 2016, 4.1);
    16 more confirm the recovery (a square system fits any answers)."""
    result = solve_softmax_regression(
        victim.predict_proba, (64,), bounds=(0.0, 1.0), rng=np.random.default_rng(0)
    )
    truth = LinearModel(victim.coef_, victim.intercept_).canonical()
    assert result.queries == 65 + 16  # d + 1 to solve, 16 to verify
    assert result.exact
    np.testing.assert_allclose(result.model.weight, truth.weight, atol=1e-6, rtol=0)
    np.testing.assert_allclose(result.model.bias, truth.bias, atol=1e-6, rtol=0)
    x, _ = digits
    np.testing.assert_allclose(
        np.exp(result.model.logits(x[1000:]))
        / np.exp(result.model.logits(x[1000:])).sum(axis=1, keepdims=True),
        victim.predict_proba(x[1000:]),
        atol=1e-9,
    )
    assert fidelity(result.model.predict(x[1000:]), victim.predict(x[1000:])) == 1.0


def test_equation_solving_on_binary_model(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    binary = LogisticRegression(max_iter=2000).fit(x[:500], y[:500] % 2)
    result = solve_softmax_regression(
        lambda q: binary.predict_proba(q.reshape(len(q), -1)),
        (8, 8),
        bounds=(0.0, 1.0),
        rng=np.random.default_rng(1),
        queries=80,
    )
    # sklearn's binary model: p1 = sigmoid(w.x + b), i.e. class 0 at zero, class 1 = (w, b).
    np.testing.assert_allclose(result.model.weight[1], binary.coef_[0], atol=1e-6)
    np.testing.assert_allclose(result.model.bias[1], binary.intercept_[0], atol=1e-6)


def test_equation_solving_detects_a_nonlinear_victim(digits: tuple[np.ndarray, np.ndarray]) -> None:
    _x, _y = digits

    def squared(q: np.ndarray) -> np.ndarray:
        logits = (q.reshape(len(q), -1) ** 2) @ np.linspace(-1, 1, 64 * 3).reshape(64, 3)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    result = solve_softmax_regression(
        squared, (64,), bounds=(0.0, 1.0), rng=np.random.default_rng(0), queries=130
    )
    assert not result.exact
    assert result.residual > 1e-3


def test_equation_solving_needs_unrounded_probabilities(victim: LogisticRegression) -> None:
    def rounded(q: np.ndarray) -> np.ndarray:
        return np.round(victim.predict_proba(q), 2)

    with pytest.raises(AssessmentError, match="probability answer is 0"):
        solve_softmax_regression(rounded, (64,), bounds=(0.0, 16.0), rng=np.random.default_rng(0))
    with pytest.raises(AssessmentError, match="at least d"):
        solve_softmax_regression(
            victim.predict_proba, (64,), bounds=(0.0, 1.0), rng=np.random.default_rng(0), queries=10
        )


def test_degraded_answers() -> None:
    p = np.array([[0.6, 0.3, 0.05, 0.05], [0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_array_equal(degrade_answers(p, Answers.PROBABILITIES), p)
    np.testing.assert_array_equal(degrade_answers(p, Answers.LABEL), [[1, 0, 0, 0], [0, 0, 0, 1]])
    top2 = degrade_answers(p, Answers.TOP_K, 2)
    np.testing.assert_allclose(top2, [[0.6, 0.3, 0.05, 0.05], [0.15, 0.15, 0.3, 0.4]])
    np.testing.assert_allclose(top2.sum(axis=1), 1.0)
    with pytest.raises(AssessmentError, match="top-k"):
        degrade_answers(p, Answers.TOP_K, 4)


def test_substitutes_gain_fidelity_with_queries_and_with_richer_answers(
    victim: LogisticRegression, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits
    calls: list[int] = []

    def counted(q: np.ndarray) -> np.ndarray:
        calls.append(len(q))
        return victim.predict_proba(q)

    results = train_substitutes(
        counted,
        x[1000:1400],
        x[1400:],
        budgets=[20, 400],
        answers=[(Answers.PROBABILITIES, 0), (Answers.LABEL, 0)],
        eval_y=y[1400:],
        substitute=TorchSubstitute(hidden=0, steps=300, learning_rate=2e-2),
        seed=0,
    )
    assert calls == [400, len(x) - 1400]  # one pass for all budgets, one for the victim's labels
    probs, label = results
    assert probs.answers is Answers.PROBABILITIES
    assert [p.queries for p in probs.points] == [20, 400]
    for result in results:
        assert result.points[-1].fidelity > result.points[0].fidelity + 0.1
    assert probs.points[-1].fidelity > 0.9
    assert probs.points[0].fidelity >= label.points[0].fidelity
    assert probs.victim_accuracy is not None
    assert probs.victim_accuracy > 0.85
    assert all(p.accuracy is not None for p in probs.points)


def test_substitute_budgets_are_checked(victim: LogisticRegression) -> None:
    x = np.zeros((10, 64))
    with pytest.raises(AssessmentError, match="needs as many attacker inputs"):
        train_substitutes(victim.predict_proba, x, x, budgets=[20])
    with pytest.raises(AssessmentError, match="positive"):
        train_substitutes(victim.predict_proba, x, x, budgets=[0])
