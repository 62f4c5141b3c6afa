"""scikit-learn targets: two gates before any unpickling, exact PyTorch copies for linear and
MLP models (so gradient attacks run), black box for the rest."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.assess.attacks import PGD
from bastion.assess.domain import InputDomain
from bastion.assess.targets import TargetOptions, open_target
from bastion.assess.targets.interface import Access, OutputKind
from bastion.assess.targets.sklearn_target import SklearnTarget
from bastion.errors import AssessmentError

torch = importlib.import_module("torch")
DOMAIN = InputDomain((64,), 0.0, 1.0)


@pytest.fixture(scope="module")
def flat(digits: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, y_train, x_test, y_test = digits
    return x_train.reshape(-1, 64), y_train, x_test.reshape(-1, 64)[:200], y_test[:200]


class _Threshold:
    """A decision-only classifier (no scores of any kind): bright images are class 1."""

    classes_ = np.array([0, 1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x.mean(axis=1) > 0.3).astype(np.int64)


def _models(flat: Any) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    x, y = flat[0][:600], flat[1][:600]
    binary = y < 5
    return {
        "logistic": (LogisticRegression(max_iter=200).fit(x, y), Access.GRADIENTS),
        "binary": (LogisticRegression(max_iter=200).fit(x, binary), Access.GRADIENTS),
        "sgd": (SGDClassifier(random_state=0, max_iter=20, tol=None).fit(x, y), Access.GRADIENTS),
        "mlp": (
            MLPClassifier((16,), activation="tanh", max_iter=60, random_state=0).fit(x, y),
            Access.GRADIENTS,
        ),
        "pipeline": (
            make_pipeline(StandardScaler(), MinMaxScaler(), LogisticRegression(max_iter=200)).fit(
                x, y
            ),
            Access.GRADIENTS,
        ),
        "tree": (DecisionTreeClassifier(max_depth=6, random_state=0).fit(x, y), Access.SCORES),
        "labels-only": (_Threshold(), Access.LABELS),
    }


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_access_and_exact_copies(flat: Any):
    x_test = flat[2]
    for name, (model, access) in _models(flat).items():
        target = SklearnTarget(model, DOMAIN, name=name)
        assert target.info.access is access, name
        np.testing.assert_array_equal(
            target.predict_labels(x_test),
            np.searchsorted(model.classes_, model.predict(x_test)),
            err_msg=name,
        )
        if access is Access.GRADIENTS:
            with torch.no_grad():
                logits = target.torch_model()(torch.from_numpy(x_test)).double().numpy()
            if target.info.output is OutputKind.PROBABILITIES and name != "sgd":
                expected = model.predict_proba(x_test)
                np.testing.assert_allclose(
                    torch.softmax(torch.from_numpy(logits), 1).numpy(),
                    expected,
                    atol=1e-4,
                    err_msg=name,
                )
        else:
            with pytest.raises(AssessmentError, match="no gradients"):
                target.torch_model()
    assert SklearnTarget(_models(flat)["binary"][0], DOMAIN).info.classes == ("False", "True")


def test_gradient_attack_on_a_pipeline(flat: Any, logistic_model: Any):
    target = SklearnTarget(logistic_model, DOMAIN)
    x, y = flat[2], flat[3]
    clean = (target.predict_labels(x) == y).mean()
    adv = PGD(steps=10).perturb(target, x, y, 0.15, rng=np.random.default_rng(0))
    assert (target.predict_labels(adv) == y).mean() < clean - 0.3


def test_loading_needs_allow_pickle_then_a_clean_scan(tmp_path: Path, logistic_model: Any):
    import joblib

    path = tmp_path / "model.joblib"
    joblib.dump(logistic_model, path)
    scanned: list[Sequence[Path]] = []

    def record(paths: Sequence[Path]) -> None:
        scanned.append(paths)

    with pytest.raises(AssessmentError, match="--allow-pickle"):
        open_target(str(path), DOMAIN, TargetOptions(scan=record))
    assert scanned == []  # refused before even scanning

    def refuse(paths: Sequence[Path]) -> None:
        raise AssessmentError("the model scan did not pass: PICKLE-DANGEROUS-GLOBAL")

    with pytest.raises(AssessmentError, match="scan did not pass"):
        open_target(str(path), DOMAIN, TargetOptions(allow_pickle=True, scan=refuse))
    target = open_target(f"sklearn:{path}", DOMAIN, TargetOptions(allow_pickle=True))
    assert target.info.digest.startswith("sha256:")
    assert target.info.access is Access.GRADIENTS


def test_real_scanner_refuses_a_malicious_pickle(tmp_path: Path):
    import pickle

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(AssessmentError, match="scan did not pass"):
        open_target(str(path), DOMAIN, TargetOptions(allow_pickle=True))


def test_not_a_classifier(tmp_path: Path):
    with pytest.raises(AssessmentError, match="not a fitted scikit-learn classifier"):
        SklearnTarget(object(), DOMAIN)
