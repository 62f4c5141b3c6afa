"""The backdoor family: Neural Cleanse through a target, metrics and trigger images."""

from __future__ import annotations

import importlib
from typing import Any

from bastion.assess.data import Dataset
from bastion.assess.families.backdoor import BACKDOOR, BackdoorConfig
from bastion.assess.families.interface import RunContext

importlib.import_module("torch")


def test_reports_anomaly_index_and_triggers(mlp_target: Any, digits: Any) -> None:
    _, _, x_test, y_test = digits
    config = BackdoorConfig(epochs=10, clean_samples=100)
    result = BACKDOOR.run(RunContext(mlp_target, Dataset(x_test, y_test, "test", "")), config)
    values = {m.name: m.value for m in result.metrics}
    assert set(values) == BACKDOOR.metric_names(config)
    assert values["backdoor.neural_cleanse.flagged"] == len(result.details["flagged"])
    assert values["backdoor.neural_cleanse.min_l1"] == min(
        c["l1"] for c in result.details["classes"]
    )
    assert result.details["clean_samples"] == 100
    (grid,) = result.charts
    assert len(grid.images) == 10
    assert grid.images[0][1].shape == (1, 8, 8)
