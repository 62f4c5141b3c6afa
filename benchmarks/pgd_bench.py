"""Benchmark: PGD-40 time against the bound of 40 forward+backward passes, beside
torchattacks and ART, in one run.

The *bound* is what any PGD must spend: 40 times one forward pass and one backward pass to
the input (parameters frozen, cross-entropy summed), measured on the same model and batch
Each implementation runs L-infinity PGD-40 with a random start, eps 8/255 and step 2/255 on
the same batch. Runs are interleaved (every round times each implementation and the bound
once, in rotating order) so a busy machine slows all alike; the table gives the median and
the best of ``--repeat`` rounds, each with its ratio to the bound's, and the robust accuracy
reached (the clean accuracy on the bound's line).
Goal for bastion: <= 1.10x the bound (torchattacks is about 1.05-1.24x, ART about 2.6x).

    .venv/bin/python benchmarks/pgd_bench.py --batch 256 --repeat 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from _digits import trained_cnn
from bastion.assess.attacks import PGD
from bastion.assess.domain import InputDomain
from bastion.assess.targets.torch_target import TorchTarget

STEPS = 40
EPS = 8 / 255
ALPHA = 2 / 255


def interleaved(
    runs: dict[str, Callable[[], np.ndarray]], repeat: int
) -> dict[str, tuple[float, float, np.ndarray]]:
    """Median time of each run over ``repeat`` rounds; each round runs every one once, in a
    rotating order, so that a busy neighbour slows all of them alike."""
    names = list(runs)
    results: dict[str, np.ndarray] = {}
    for name in names:
        results[name] = runs[name]()  # warm-up: allocator, kernels, first-call paths
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeat):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            started = time.perf_counter()
            results[name] = runs[name]()
            times[name].append(time.perf_counter() - started)
    return {
        name: (statistics.median(times[name]), min(times[name]), results[name]) for name in names
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--skip-art", action="store_true", help="ART is slow; leave it out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, x_all, y_all = trained_cnn()
    x, y = x_all[: args.batch], y_all[: args.batch]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def bound() -> np.ndarray:
        for _ in range(STEPS):
            inputs = xt.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(inputs), yt, reduction="sum")
            torch.autograd.grad(loss, inputs)
        return x

    def accuracy(adv: np.ndarray) -> float:
        with torch.no_grad():
            return float((model(torch.from_numpy(adv)).argmax(1).numpy() == y).mean())

    runs: dict[str, Callable[[], np.ndarray]] = {"bound": bound}
    target = TorchTarget.from_module(model, InputDomain((1, 28, 28), 0.0, 1.0))
    attack = PGD(steps=STEPS, step_ratio=ALPHA / EPS)
    final = PGD(steps=STEPS, step_ratio=ALPHA / EPS, keep_best=False)
    rng = np.random.default_rng(0)
    runs["bastion PGD"] = lambda: attack.perturb(target, x, y, EPS, rng=rng)
    runs["bastion PGD (final iterate)"] = lambda: final.perturb(target, x, y, EPS, rng=rng)
    try:
        import torchattacks
    except ImportError:
        print("torchattacks is not installed: skipped")
    else:
        reference = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        runs["torchattacks PGD"] = lambda: reference(xt, yt).numpy()
    if not args.skip_art:
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        estimator = PyTorchClassifier(
            model,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=(1, 28, 28),
            nb_classes=10,
            clip_values=(0.0, 1.0),
        )
        art = ProjectedGradientDescentPyTorch(
            estimator,
            eps=EPS,
            eps_step=ALPHA,
            max_iter=STEPS,
            num_random_init=1,
            batch_size=args.batch,
            verbose=False,
        )
        runs["ART ProjectedGradientDescentPyTorch"] = lambda: art.generate(x, y)
    measured = interleaved(runs, args.repeat)
    bound_time, bound_best, _ = measured.pop("bound")
    print(
        f"PGD-{STEPS}, L-inf eps 8/255, batch {args.batch}, {args.threads} thread(s), "
        f"median of {args.repeat}"
    )
    print(
        f"{'implementation':40s} {'median s':>9s} {'x bound':>8s} {'best s':>8s} {'x bound':>8s} "
        f"{'robust acc':>10s}"
    )
    print(
        f"{'bound: 40 x (forward + input backward)':40s} {bound_time:9.3f} {1.0:8.2f} "
        f"{bound_best:8.3f} {1.0:8.2f} {accuracy(x):10.3f}"
    )
    for name, (median, best, adv) in measured.items():
        print(
            f"{name:40s} {median:9.3f} {median / bound_time:8.2f} {best:8.3f} "
            f"{best / bound_best:8.2f} {accuracy(adv):10.3f}"
        )


if __name__ == "__main__":
    main()
