"""Output-hardening guard: what each role is shown of a prediction (API not yet stable).

Confidence scores are what model extraction and model inversion feed on: equation-solving and
path-finding extraction need them (Tramèr et al. 2016, "Stealing Machine Learning Models via
Prediction APIs", USENIX Security, arXiv:1609.02943), and inversion climbs them (Fredrikson et
al. 2015, "Model Inversion Attacks that Exploit Confidence Information", CCS). Both papers
name the countermeasures applied here, per role (``gateway.output.<role>``, an
:class:`~bastion.config.OutputPolicy`):

* ``label``: the predicted class only: one ``INT64`` tensor ``label`` of shape ``[n]`` (the
  class index; the names are in the model metadata's ``parameters.classes``).
* ``top-k``: the model's score tensor with its declared name and shape ``[n, classes]``, every
  score outside a row's ``top_k`` best set to 0, so Open Inference Protocol clients (bastion's
  own remote target among them) read it unchanged; the tensor's ``parameters.top_k`` says so.
* ``scores``: every score.

Scores that are shown are perturbed by Gaussian noise of ``noise_std`` (if positive, clipped to
[0, 1]) and rounded to ``decimals``. The predicted class and the top-k set are chosen from the
clean scores, so hardening never changes the answer, only how much of the score vector leaks.
Noise is drawn from an injectable NumPy generator; it is not a secret, and averaging repeated
queries removes it (rounding and top-k are the stronger measures; the rate limits and the
extraction monitor bound the repetitions).

Model metadata is tailored the same way: ``GET /v2/models/{name}`` lists the outputs the
caller's role receives, so a client that asks for outputs by name asks for the right ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bastion.config import OutputPolicy, OutputSettings
from bastion.core.principals import Role
from bastion.gateway.models import ServedEntry

__all__ = ["LABEL_OUTPUT", "OutputHardener"]

#: The name of the label tensor answered to ``label``-mode roles.
LABEL_OUTPUT = "label"
_SMALL = 512  # scores in a batch below which plain Python beats NumPy (see _small)


class OutputHardener:
    """Applies each role's :class:`~bastion.config.OutputPolicy` to a batch of scores.

    Args:
        settings: the policy of every role.
        rng: the noise source (a fresh ``numpy.random.default_rng()`` by default).
    """

    def __init__(self, settings: OutputSettings, rng: np.random.Generator | None = None) -> None:
        self._policies: dict[Role, OutputPolicy] = {
            role: getattr(settings, role.value.replace("-", "_")) for role in Role
        }
        self._rng = rng if rng is not None else np.random.default_rng()

    def policy(self, role: Role) -> OutputPolicy:
        """The policy of ``role``."""
        return self._policies[role]

    def output_names(self, entry: ServedEntry, role: Role) -> tuple[str, ...]:
        """The output tensors ``role`` receives from ``entry``."""
        if self._policies[role].mode == "label":
            return (LABEL_OUTPUT,)
        return (entry.output.name,)

    def metadata_outputs(self, entry: ServedEntry, role: Role) -> list[dict[str, object]]:
        """The ``outputs`` of the model metadata, as ``role`` receives them."""
        if self._policies[role].mode == "label":
            return [{"name": LABEL_OUTPUT, "datatype": "INT64", "shape": [-1]}]
        return [entry.output.to_dict()]

    def harden(
        self, entry: ServedEntry, role: Role, scores: NDArray[np.float64]
    ) -> list[dict[str, Any]]:
        """The Open Inference Protocol output tensors ``role`` is shown for ``scores``.

        Args:
            entry: the model that answered.
            role: the caller's role.
            scores: ``(n, classes)`` finite class scores.
        """
        policy = self._policies[role]
        n, classes = scores.shape
        if policy.mode == "label":
            labels = scores.argmax(axis=1)
            return [
                {"name": LABEL_OUTPUT, "datatype": "INT64", "shape": [n], "data": labels.tolist()}
            ]
        if policy.noise_std == 0 and n * classes <= _SMALL:
            data = _small(scores, policy)
        else:
            data = self._vectorised(scores, policy)
        tensor: dict[str, Any] = {
            "name": entry.output.name,
            "datatype": entry.output.datatype,
            "shape": [n, classes],
            "data": data,
        }
        if policy.mode == "top-k":
            tensor["parameters"] = {"top_k": min(policy.top_k, classes)}
        return [tensor]

    def _vectorised(self, scores: NDArray[np.float64], policy: OutputPolicy) -> list[float]:
        n, classes = scores.shape
        values = scores
        keep: NDArray[np.bool_] | None = None
        if policy.mode == "top-k":
            k = min(policy.top_k, classes)
            if k < classes:
                keep = np.zeros(scores.shape, dtype=bool)
                if k == 1:
                    keep[np.arange(n), scores.argmax(axis=1)] = True
                else:
                    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
                    keep[np.arange(n)[:, None], best] = True
                values = np.where(keep, scores, 0.0)
        if policy.noise_std > 0:
            noise = self._rng.normal(0.0, policy.noise_std, values.shape)
            if keep is not None:
                noise *= keep
            values = np.clip(values + noise, 0.0, 1.0)
            if keep is not None:
                values *= keep
        rounded: list[float] = np.round(values, policy.decimals).ravel().tolist()
        return rounded


def _small(scores: NDArray[np.float64], policy: OutputPolicy) -> list[float]:
    """:meth:`OutputHardener._vectorised` without noise, in plain Python: on a few rows,
    NumPy's per-call cost dominates (3.7 against 14 microseconds for one row of ten scores)."""
    decimals = policy.decimals
    out: list[float] = []
    top = policy.top_k if policy.mode == "top-k" else 0
    for row in scores.tolist():
        if top and top < len(row):
            kept = [0.0] * len(row)
            if top == 1:
                best = max(range(len(row)), key=row.__getitem__)
                kept[best] = round(row[best], decimals)
            else:
                for index in sorted(range(len(row)), key=row.__getitem__, reverse=True)[:top]:
                    kept[index] = round(row[index], decimals)
            out += kept
        else:
            out += [round(value, decimals) for value in row]
    return out
