"""Benchmark: Square attack queries per point to reach ART's robust accuracy.

On the CNN of ``_digits.py`` (28x28 digits) and ``--points`` held-out digits, ART's
``SquareAttack`` (L-infinity, its defaults otherwise) runs ``--art-iters`` iterations; a
wrapper counts every sample its estimator is asked about, so its queries per point and the
robust accuracy it reached are known. bastion's Square attack then runs with growing query
budgets (fractions of ART's queries per point); the first budget whose robust accuracy is at
most ART's gives bastion's queries per point (counted by the target: every sample scored) and
the ratio to ART's. Goal: at most half of ART's.

    .venv/bin/python benchmarks/square_bench.py --points 300 --eps 0.15 --art-iters 50 100
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from _digits import trained_cnn
from bastion.assess.attacks import SquareAttack
from bastion.assess.domain import InputDomain
from bastion.assess.targets.torch_target import TorchTarget

FRACTIONS = (1 / 16, 1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 1.0)


class Counted(torch.nn.Module):
    """Counts the samples ART's estimator sends through the model."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.queries = 0

    def forward(self, x: torch.Tensor) -> Any:
        self.queries += int(x.shape[0])
        return self.module(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--eps", type=float, default=0.15)
    parser.add_argument("--art-iters", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from art.attacks.evasion import SquareAttack as ArtSquare
    from art.estimators.classification import PyTorchClassifier

    model, x_all, y_all = trained_cnn()
    x, y = x_all[: args.points], y_all[: args.points]

    def accuracy(adv: np.ndarray) -> float:
        with torch.no_grad():
            return float((model(torch.from_numpy(adv)).argmax(1).numpy() == y).mean())

    counted = Counted(model)
    estimator = PyTorchClassifier(
        counted,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    print(
        f"Square attack, L-inf eps {args.eps}, {args.points} points, clean accuracy "
        f"{accuracy(x):.3f}"
    )
    print(
        f"{'ART iterations':>14s} {'ART robust':>10s} {'ART q/pt':>9s} | {'bastion robust':>14s} "
        f"{'bastion q/pt':>12s} {'ratio':>6s} {'ART s':>7s} {'bastion s':>9s}"
    )
    for iterations in args.art_iters:
        np.random.seed(0)
        counted.queries = 0
        started = time.perf_counter()
        adv = ArtSquare(
            estimator,
            norm=np.inf,
            eps=args.eps,
            max_iter=iterations,
            batch_size=1024,
            verbose=False,
        ).generate(x, y)
        art_seconds = time.perf_counter() - started
        art_robust, art_queries = accuracy(adv), counted.queries / len(x)
        found = None
        for fraction in FRACTIONS:
            budget = max(2, int(art_queries * fraction))
            target = TorchTarget.from_module(model, InputDomain((1, 28, 28), 0.0, 1.0))
            started = time.perf_counter()
            ours = SquareAttack(max_queries=budget).perturb(
                target, x, y, args.eps, rng=np.random.default_rng(0)
            )
            seconds = time.perf_counter() - started
            robust = accuracy(ours)
            if robust <= art_robust:
                found = (robust, target.queries.used / len(x), seconds)
                break
        if found is None:
            print(f"{iterations:14d} {art_robust:10.3f} {art_queries:9.1f} | not reached")
            continue
        robust, queries, seconds = found
        print(
            f"{iterations:14d} {art_robust:10.3f} {art_queries:9.1f} | {robust:14.3f} "
            f"{queries:12.1f} {queries / art_queries:6.2f} {art_seconds:7.1f} {seconds:9.1f}"
        )


if __name__ == "__main__":
    main()
