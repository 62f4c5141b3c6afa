"""The input domain: validation, preprocessing, bounds checks, budgets, the domain file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bastion.assess.domain import InputDomain, load_domain, parse_budget
from bastion.errors import AssessmentError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": ()}, "positive dimensions"),
        ({"shape": (0, 3)}, "positive dimensions"),
        ({"shape": (4,), "lower": 1.0, "upper": 1.0}, "empty"),
        ({"shape": (4,), "upper": float("inf")}, "finite"),
        ({"shape": (3, 2), "mean": (0.5,), "std": ()}, "same length"),
        ({"shape": (3, 2), "mean": (0.5,), "std": (0.0,)}, "positive"),
        ({"shape": (3, 2), "mean": (0.1, 0.2), "std": (1.0, 1.0)}, "2 normalisation values for 3"),
        ({"shape": (3, 2), "mean": (0.1,), "std": (1.0,), "channel_axis": 2}, "outside"),
    ],
)
def test_invalid_domains(kwargs: dict[str, object], message: str):
    with pytest.raises(AssessmentError, match=message):
        InputDomain(**kwargs)  # type: ignore[arg-type]


def test_preprocess_per_channel_on_any_axis():
    first = InputDomain((3, 2, 2), mean=(0.1, 0.2, 0.3), std=(0.5, 1.0, 2.0))
    x = np.ones((2, 3, 2, 2), dtype=np.float32)
    out = first.preprocess(x)
    np.testing.assert_allclose(out[:, 0], 1.8)
    np.testing.assert_allclose(out[:, 2], 0.35)
    last = InputDomain((2, 2, 3), mean=(0.1, 0.2, 0.3), std=(0.5, 1.0, 2.0), channel_axis=-1)
    np.testing.assert_allclose(last.preprocess(np.moveaxis(x, 1, -1)), np.moveaxis(out, 1, -1))
    plain = InputDomain((4,))
    assert plain.preprocess(np.zeros((1, 4))).dtype == np.float32
    assert not plain.normalised
    assert plain.span == 1.0
    assert InputDomain((1, 8, 8), 0, 16).size == 64


def test_check_names_the_problem():
    domain = InputDomain((2,), 0.0, 1.0)
    domain.check(np.array([[0.0, 1.0]]))
    with pytest.raises(AssessmentError, match=r"shape \(3,\) per sample"):
        domain.check(np.zeros((1, 3)))
    with pytest.raises(AssessmentError, match="NaN"):
        domain.check(np.array([[np.nan, 0.0]]))
    with pytest.raises(AssessmentError, match=r"\[0, 255\], outside the declared bounds \[0, 1\]"):
        domain.check(np.array([[0.0, 255.0]]))


@pytest.mark.parametrize(
    ("text", "value"), [("8/255", 8 / 255), (0.5, 0.5), (" 1/4 ", 0.25), (0, 0.0)]
)
def test_budgets(text: str | float, value: float):
    assert parse_budget(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["-1", "abc", "1/0", "inf", True])
def test_bad_budgets(text: str | bool):
    with pytest.raises(AssessmentError):
        parse_budget(text)


def test_domain_file_and_overrides(tmp_path: Path):
    path = tmp_path / "domain.toml"
    path.write_text("shape = [3, 4, 4]\nbounds = [0.0, 255.0]\nmean = [1, 2, 3]\nstd = [4, 5, 6]\n")
    domain = load_domain(path)
    assert domain == InputDomain((3, 4, 4), 0.0, 255.0, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    override = load_domain(path, bounds=(0.0, 1.0), mean=[], std=[])
    assert (override.lower, override.upper, override.mean) == (0.0, 1.0, ())
    assert load_domain(None, default_shape=(64,)).shape == (64,)
    with pytest.raises(AssessmentError, match="shape is unknown"):
        load_domain(None)
    path.write_text("shape = [4]\nbogus = 1\n")
    with pytest.raises(AssessmentError, match="bogus"):
        load_domain(path)
    path.write_text("shape = [")
    with pytest.raises(AssessmentError, match="not valid TOML"):
        load_domain(path)
    with pytest.raises(AssessmentError, match="cannot read"):
        load_domain(tmp_path / "missing.toml")
