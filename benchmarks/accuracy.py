"""Accuracy of dynamical learning against the paper's baselines, on the same splits.

Trains DARN (the estimator's default recipe), the reservoir (J and W_in frozen), random
features (no recurrence) and a sign-activation MLP trained by backpropagation, and
reports validation/test accuracy and fit time, one JSON object per (dataset, method).

    python benchmarks/accuracy.py --out benchmarks/results-accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import torch
from sklearn.base import ClassifierMixin

from darnn import DARNClassifier
from darnn.baselines import BinaryMLPClassifier, random_features, reservoir
from darnn.data import DataError, load_dataset


def methods(hidden: int, epochs: int, seed: int) -> dict[str, Callable[[], ClassifierMixin]]:
    common = {"hidden": (hidden,), "n_epochs": epochs, "random_state": seed}
    return {
        "darn": lambda: DARNClassifier(**common),  # type: ignore[arg-type]
        "reservoir": lambda: reservoir(**common),
        "random_features": lambda: random_features(**common),
        "binary_mlp_backprop": lambda: BinaryMLPClassifier(
            hidden=hidden, n_epochs=epochs, random_state=seed
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", default="digits,fashion-mnist")
    p.add_argument("--methods", default="darn,reservoir,random_features,binary_mlp_backprop")
    p.add_argument("--hidden", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument(
        "--limit-train",
        type=int,
        default=20000,
        help="training samples per dataset (after the validation split)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write all results to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for name in args.datasets.split(","):
        try:
            data = load_dataset(name, seed=args.seed, limit_train=args.limit_train)
        except DataError as err:
            print(f"skipping {name}: {err}", file=sys.stderr)
            continue
        table = methods(args.hidden, args.epochs, args.seed)
        for method in args.methods.split(","):
            clf = table[method]()
            start = time.perf_counter()
            clf.fit(data.X_train, data.y_train)
            fit_s = time.perf_counter() - start
            row = {
                "dataset": name,
                "method": method,
                "hidden": args.hidden,
                "epochs": args.epochs,
                "n_train": len(data.y_train),
                "val_accuracy": round(float(clf.score(data.X_val, data.y_val)), 4),
                "test_accuracy": round(float(clf.score(data.X_test, data.y_test)), 4),
                "fit_seconds": round(fit_s, 1),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
