"""The invariance family: stability per transform and magnitude; shifts need images."""

from __future__ import annotations

import importlib
import math
from typing import Any

from bastion.assess.data import Dataset
from bastion.assess.families.interface import RunContext
from bastion.assess.families.invariance import INVARIANCE, InvarianceConfig

importlib.import_module("torch")


def test_images(mlp_target: Any, digits: Any) -> None:
    _, _, x_test, y_test = digits
    config = InvarianceConfig()
    result = INVARIANCE.run(RunContext(mlp_target, Dataset(x_test, y_test, "test", "")), config)
    assert {m.name for m in result.metrics} == INVARIANCE.metric_names(config)
    shifts = {m.at: m.value for m in result.metrics if m.name == "invariance.shift.stability"}
    assert set(shifts) == {1.0, 2.0}
    assert 0.0 < shifts[2.0] < shifts[1.0] <= 1.0
    assert len(result.charts) == 3
    assert result.queries == len(x_test) * (1 + 2 * 3 + 3 + 4 * 2)


def test_flat_inputs_cannot_shift(sklearn_target: Any, flat_digits: Any) -> None:
    config = InvarianceConfig.model_validate({"brightness": "0.1", "noise": [], "shift": [1]})
    result = INVARIANCE.run(RunContext(sklearn_target, flat_digits), config)
    values = {(m.name, m.at): m.value for m in result.metrics}
    assert math.isnan(values[("invariance.shift.stability", 1.0)])
    assert 0.5 < values[("invariance.brightness.stability", 0.1)] <= 1.0
    assert "invariance.noise.stability" not in INVARIANCE.metric_names(config)
