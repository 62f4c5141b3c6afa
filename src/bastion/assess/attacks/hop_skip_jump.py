"""HopSkipJump: decision-based, minimum-norm, L2 or L-infinity (stable API).

Chen, Jordan and Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE S&P 2020, arXiv:1904.02144 (Algorithm 2; binary search, gradient-direction estimate at
the boundary and geometric step-size search as in the authors' reference code).

Threat model: black box with the decision only (labels), untargeted, minimum-norm: it starts
from a random input that is already misclassified and walks along the decision boundary
towards the original, so one run gives the whole robust-accuracy-versus-eps curve. Everything
is computed in units of the domain's span (the reference code's [0, 1]) and reported in raw
units. Samples are processed together: every model query of an iteration, for all samples, is
one batch.

Defaults (the paper's): ``iterations = 40``, ``init_evals = 100`` growing as ``sqrt(t)``,
``max_evals = 10000``, ``gamma = 1.0`` (binary-search threshold ``gamma / d^1.5`` for L2,
``gamma / d^2`` for L-infinity), ``init_tries = 100`` random starts, and an optional per-point
``max_queries`` cap. A sample for which no misclassified start is found is returned
unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from bastion.assess.attacks.interface import Norm, StepCallback
from bastion.assess.targets.interface import Access, Target

__all__ = ["HopSkipJump", "HopSkipJumpOptions"]

Array = NDArray[np.float64]

#: Largest number of floats one gradient-estimation batch holds.
_CHUNK_FLOATS = 4_000_000


class HopSkipJump:
    """HopSkipJump (see the module docstring)."""

    name = "hopskipjump"
    access = Access.LABELS
    bounded = False

    def __init__(
        self,
        norm: Norm = Norm.L2,
        *,
        iterations: int = 40,
        init_evals: int = 100,
        max_evals: int = 10_000,
        gamma: float = 1.0,
        init_tries: int = 100,
        max_queries: int | None = None,
    ) -> None:
        self.norm = norm
        self.iterations = iterations
        self.init_evals = init_evals
        self.max_evals = max_evals
        self.gamma = gamma
        self.init_tries = init_tries
        self.max_queries = max_queries

    def perturb(
        self,
        target: Target,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        eps: float,
        *,
        rng: np.random.Generator,
        on_step: StepCallback | None = None,
    ) -> NDArray[np.float32]:
        run = _Run(self, target, x, y, rng)
        run.initialise()
        for iteration in range(1, self.iterations + 1):
            if not run.step(iteration):
                break
            if on_step is not None:
                on_step(iteration, self.iterations)
        return run.result()


class _Run:
    """The state of one batch: samples in unit space, flattened to ``(n, d)``."""

    def __init__(
        self,
        attack: HopSkipJump,
        target: Target,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        rng: np.random.Generator,
    ) -> None:
        self.attack = attack
        self.target = target
        self.shape = x.shape
        self.lower, self.span = target.domain.lower, target.domain.span
        self.orig: Array = ((x.reshape(x.shape[0], -1) - self.lower) / self.span).astype(np.float64)
        self.orig = np.clip(self.orig, 0.0, 1.0)
        self.y = y
        self.rng = rng
        self.n, self.d = self.orig.shape
        self.linf = attack.norm is Norm.LINF
        self.theta = attack.gamma / (self.d**2 if self.linf else self.d * math.sqrt(self.d))
        self.pert = self.orig.copy()
        self.alive = np.zeros(self.n, dtype=bool)
        self.dist = np.full(self.n, np.inf)
        self.dist_post = np.full(self.n, np.inf)
        self.queries = np.zeros(self.n, dtype=np.int64)

    # -- the model ------------------------------------------------------------------------
    def adversarial(self, points: Array, owners: NDArray[np.intp]) -> NDArray[np.bool_]:
        """Whether each point (unit space) is misclassified; ``owners`` are sample indices."""
        if points.shape[0] == 0:
            return np.zeros(0, dtype=bool)
        raw = (self.lower + self.span * np.clip(points, 0.0, 1.0)).astype(np.float32)
        labels = self.target.predict_labels(raw.reshape((-1, *self.shape[1:])))
        np.add.at(self.queries, owners, 1)
        result: NDArray[np.bool_] = labels != self.y[owners]
        return result

    def distance(self, a: Array, b: Array) -> Array:
        delta = a - b
        if self.linf:
            result: Array = np.abs(delta).max(axis=1)
            return result
        norms: Array = np.sqrt((delta * delta).sum(axis=1))
        return norms

    def project(self, orig: Array, pert: Array, alpha: Array) -> Array:
        if self.linf:
            return np.clip(pert, orig - alpha[:, None], orig + alpha[:, None])
        return (1 - alpha[:, None]) * orig + alpha[:, None] * pert

    def within_budget(self) -> NDArray[np.bool_]:
        cap = self.attack.max_queries
        ok = self.alive.copy()
        if cap is not None:
            ok &= self.queries < cap
        return ok

    # -- the algorithm --------------------------------------------------------------------
    def initialise(self) -> None:
        """Random uniform starts until misclassified, then a coarse binary search."""
        todo = np.arange(self.n)
        start = np.zeros_like(self.orig)
        for _ in range(self.attack.init_tries):
            if todo.size == 0:
                break
            noise = self.rng.uniform(0.0, 1.0, size=(todo.size, self.d))
            hit = self.adversarial(noise, todo)
            start[todo[hit]] = noise[hit]
            self.alive[todo[hit]] = True
            todo = todo[~hit]
        found = np.flatnonzero(self.alive)
        if found.size == 0:
            return
        low, high = np.zeros(found.size), np.ones(found.size)
        while True:
            open_ = np.flatnonzero(high - low > 0.001)
            if open_.size == 0:
                break
            mid = (high[open_] + low[open_]) / 2
            owners = found[open_]
            blend = (1 - mid[:, None]) * self.orig[owners] + mid[:, None] * start[owners]
            hit = self.adversarial(blend, owners)
            high[open_] = np.where(hit, mid, high[open_])
            low[open_] = np.where(hit, low[open_], mid)
        self.pert[found] = (1 - high[:, None]) * self.orig[found] + high[:, None] * start[found]
        self.binary_search(found)

    def binary_search(self, idx: NDArray[np.intp]) -> None:
        """Move ``pert[idx]`` to the boundary between it and the original."""
        orig, pert = self.orig[idx], self.pert[idx]
        if self.linf:
            high = self.distance(pert, orig)
            threshold = np.maximum(np.minimum(high * self.theta, self.theta), 1e-12)
        else:
            high = np.ones(idx.size)
            threshold = np.full(idx.size, self.theta)
        low = np.zeros(idx.size)
        while True:
            open_ = np.flatnonzero((high - low) / threshold > 1)
            if open_.size == 0:
                break
            mid = (high[open_] + low[open_]) / 2
            candidate = self.project(orig[open_], pert[open_], mid)
            hit = self.adversarial(candidate, idx[open_])
            high[open_] = np.where(hit, mid, high[open_])
            low[open_] = np.where(hit, low[open_], mid)
        self.pert[idx] = self.project(orig, pert, high)
        self.dist_post[idx] = self.distance(self.pert[idx], orig)
        self.dist[idx] = self.dist_post[idx]

    def gradient(self, idx: NDArray[np.intp], evals: int, delta: Array) -> Array:
        """Monte-Carlo estimate of the boundary's normal at ``pert[idx]`` (unit length)."""
        grads = np.zeros((idx.size, self.d))
        per_chunk = max(1, _CHUNK_FLOATS // max(1, evals * self.d))
        for start in range(0, idx.size, per_chunk):
            part = idx[start : start + per_chunk]
            k = part.size
            if self.linf:
                rv = self.rng.uniform(-1.0, 1.0, size=(k, evals, self.d))
            else:
                rv = self.rng.standard_normal(size=(k, evals, self.d))
            rv /= np.sqrt((rv * rv).sum(axis=2, keepdims=True))

            base = self.pert[part][:, None, :]
            step = delta[start : start + k][:, None, None]
            moved = np.clip(base + step * rv, 0.0, 1.0)
            rv = (moved - base) / step
            hit = self.adversarial(moved.reshape(-1, self.d), np.repeat(part, evals))
            fval = 2.0 * hit.reshape(k, evals).astype(np.float64) - 1.0
            mean = fval.mean(axis=1, keepdims=True)
            centred = np.where(np.abs(mean) == 1.0, fval, fval - mean)
            g = (centred[:, :, None] * rv).mean(axis=1)
            norms = np.sqrt((g * g).sum(axis=1, keepdims=True))
            grads[start : start + k] = g / np.maximum(norms, 1e-20)
        return grads

    def step(self, iteration: int) -> bool:
        idx = np.flatnonzero(self.within_budget())
        if idx.size == 0:
            return False
        if iteration == 1:
            delta = np.full(idx.size, 0.1)
        elif self.linf:
            delta = self.d * self.theta * self.dist_post[idx]
        else:
            delta = math.sqrt(self.d) * self.theta * self.dist_post[idx]
        delta = np.maximum(delta, 1e-12)
        evals = int(min(self.attack.init_evals * math.sqrt(iteration), self.attack.max_evals))
        grad = self.gradient(idx, evals, delta)
        update = np.sign(grad) if self.linf else grad
        size = self.dist[idx] / math.sqrt(iteration)
        pending = np.arange(idx.size)
        for _ in range(30):
            if pending.size == 0:
                break
            moved = np.clip(
                self.pert[idx[pending]] + size[pending, None] * update[pending], 0.0, 1.0
            )
            hit = self.adversarial(moved, idx[pending])
            size[pending[~hit]] /= 2.0
            pending = pending[~hit]
        size[pending] = 0.0
        self.pert[idx] = np.clip(self.pert[idx] + size[:, None] * update, 0.0, 1.0)
        self.binary_search(idx)
        return True

    def result(self) -> NDArray[np.float32]:
        out = np.where(self.alive[:, None], self.pert, self.orig)
        raw = self.lower + self.span * out
        return raw.reshape(self.shape).astype(np.float32)


class HopSkipJumpOptions(BaseModel):
    """``[[evasion.attacks]] name = "hopskipjump"``: see :class:`HopSkipJump`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["hopskipjump"] = "hopskipjump"
    id: str | None = None
    eps: list[float | str] | None = None
    norm: Norm = Norm.L2
    iterations: int = Field(default=40, ge=1, le=10_000)
    init_evals: int = Field(default=100, ge=1, le=100_000)
    max_evals: int = Field(default=10_000, ge=1, le=1_000_000)
    gamma: float = Field(default=1.0, gt=0)
    init_tries: int = Field(default=100, ge=1, le=100_000)
    max_queries: int | None = Field(default=None, ge=1)

    def build(self) -> HopSkipJump:
        return HopSkipJump(
            self.norm,
            iterations=self.iterations,
            init_evals=self.init_evals,
            max_evals=self.max_evals,
            gamma=self.gamma,
            init_tries=self.init_tries,
            max_queries=self.max_queries,
        )
