"""Benchmark: PGD-40 time against the bound of 40 forward+backward passes, beside
torchattacks and ART, in one run.

The *bound* is what any PGD must spend: 40 times one forward pass and one backward pass to
the input (parameters frozen, cross-entropy summed), measured on the same model and batch.
Each implementation runs L-infinity PGD-40 with a random start, eps 8/255 and step 2/255 on
the same batch. Each timing of an implementation is paired with a timing of the bound just
before it (``--repeat`` rounds, implementations in rotating order); the table gives the
median time and the median of the paired ratios (steady on a shared machine, where a ratio
of medians is not), and the robust accuracy reached (the clean accuracy on the bound's line).
Goal for bastion: <= 1.10x the bound (torchattacks is about 1.05-1.24x, ART about 2.6x).
A second table measures the same on a linear model, whose passes are cheap, and prints what
each implementation spends per step beyond them (microseconds): the overhead that a larger
model hides but a smaller one shows.

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


def paired(
    bound: Callable[[], np.ndarray],
    runs: dict[str, Callable[[], np.ndarray]],
    repeat: int,
) -> tuple[float, dict[str, tuple[float, float, float, np.ndarray]]]:
    """Time each run right after a run of the bound, ``repeat`` rounds in rotating order.

    Returns the bound's median time and, per run, its median time, the median of its
    time/bound ratios over the pairs (a neighbour slowing the machine slows both halves of a
    pair alike, so this ratio is far steadier on a shared machine than a ratio of medians),
    the median of its time minus the bound's, and its last result.
    """
    names = list(runs)
    bound()
    results = {name: runs[name]() for name in names}  # warm-up: allocator, kernels, paths
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    extra: dict[str, list[float]] = {name: [] for name in names}
    bounds: list[float] = []
    for round_ in range(repeat):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            started = time.perf_counter()
            bound()
            middle = time.perf_counter()
            results[name] = runs[name]()
            ended = time.perf_counter()
            bounds.append(middle - started)
            times[name].append(ended - middle)
            ratios[name].append((ended - middle) / (middle - started))
            extra[name].append((ended - middle) - (middle - started))
    return statistics.median(bounds), {
        name: (
            statistics.median(times[name]),
            statistics.median(ratios[name]),
            statistics.median(extra[name]),
            results[name],
        )
        for name in names
    }


def compare(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, repeat: int, skip_art: bool
) -> tuple[float, dict[str, tuple[float, float, float, np.ndarray]]]:
    """The bound and every implementation on one model and batch (see :func:`paired`)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    shape = tuple(x.shape[1:])

    def bound() -> np.ndarray:
        for _ in range(STEPS):
            inputs = xt.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(inputs), yt, reduction="sum")
            torch.autograd.grad(loss, inputs)
        return x

    runs: dict[str, Callable[[], np.ndarray]] = {}
    target = TorchTarget.from_module(model, InputDomain(shape, 0.0, 1.0))
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
    if not skip_art:
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        estimator = PyTorchClassifier(
            model,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=shape,
            nb_classes=10,
            clip_values=(0.0, 1.0),
        )
        art = ProjectedGradientDescentPyTorch(
            estimator,
            eps=EPS,
            eps_step=ALPHA,
            max_iter=STEPS,
            num_random_init=1,
            batch_size=len(x),
            verbose=False,
        )
        runs["ART ProjectedGradientDescentPyTorch"] = lambda: art.generate(x, y)
    return paired(bound, runs, repeat)


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

    def accuracy(adv: np.ndarray) -> float:
        with torch.no_grad():
            return float((model(torch.from_numpy(adv)).argmax(1).numpy() == y).mean())

    bound_time, measured = compare(model, x, y, args.repeat, args.skip_art)
    print(
        f"PGD-{STEPS}, L-inf eps 8/255, batch {args.batch}, {args.threads} thread(s), "
        f"median of {args.repeat}"
    )
    print(
        f"{'implementation':40s} {'median s':>9s} {'x bound (paired median)':>24s} "
        f"{'robust acc':>10s}"
    )
    print(
        f"{'bound: 40 x (forward + input backward)':40s} {bound_time:9.3f} {1.0:24.2f} "
        f"{accuracy(x):10.3f}"
    )
    for name, (seconds, ratio, _, adv) in measured.items():
        print(f"{name:40s} {seconds:9.3f} {ratio:24.2f} {accuracy(adv):10.3f}")
    # The same on a linear model, whose passes are cheap: what is left is each
    # implementation's own work per step, in microseconds.
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].size, 10)).eval()
    linear.requires_grad_(False)
    bound_time, measured = compare(linear, x, y, args.repeat * 4, args.skip_art)
    print(
        f"\nper-step overhead beyond the bound, linear model ({bound_time / STEPS * 1e6:.0f} us "
        "per forward+backward step)"
    )
    for name, (_, _, extra, _) in measured.items():
        print(f"{name:40s} {extra / STEPS * 1e6:9.0f} us/step")


if __name__ == "__main__":
    main()
