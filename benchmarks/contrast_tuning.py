"""Equal tuning effort for the contrast benches: one small Optuna study per method.

Every method of ``configs/bench/contrast.yaml`` (or ``contrast-fashion.yaml``) gets the same
search: the same number of trials (12), the bench's own budget (20,000 training samples, 10
epochs, seed 0), the same sampler seed, scored on validation only. The learning rules
search ``configs/spaces/contrast.yaml``; random features (learning off) have only a readout
to tune and search ``contrast_readout.yaml`` with the same number of trials. The best trial
of each study is printed as the overrides to paste into the bench file, and written with the
summaries to ``benchmarks/bench/tuning/<bench>.md`` (beside the bench outputs: a bench claims
an empty ``--out``).

    python benchmarks/contrast_tuning.py contrast            # Entangled Fashion-MNIST, N = 400
    python benchmarks/contrast_tuning.py contrast-fashion    # Fashion-MNIST, N = 200

Studies live in ``benchmarks/sweeps/<bench>/<method>/`` (not committed); rerunning resumes them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from darnn.bench.methods import VARIANT_OVERRIDES
from darnn.cli import main
from darnn.sweep.summary import open_study, summary_lines

ROOT = Path(__file__).resolve().parents[1]
BENCHES = {"contrast": "best_entangled_fashion", "contrast-fashion": "narrow_fashion"}
RULES = {
    "dynamical": (),
    "contrastive_difference": ("learning.rule=contrastive_difference",),
    "contrastive_hebbian": ("learning.rule=contrastive_hebbian",),
}


def methods() -> Iterator[tuple[str, tuple[str, ...], str]]:
    """(bench method name, overrides of the recipe, search space) for every method."""
    for activation in ("sign", "tanh"):
        suffix, unit = ("", ()) if activation == "sign" else ("_tanh", ("network.activation=tanh",))
        for rule, sets in RULES.items():
            yield rule + suffix, (*sets, *unit), "contrast"
        frozen = VARIANT_OVERRIDES["random_features"]
        yield "random_features" + suffix, (*frozen, *unit), "contrast_readout"


def tune(
    bench: str,
    trials: int,
    limit_train: int,
    epochs: int,
    workers: int,
    sweeps: Path,
    extra: tuple[str, ...] = (),
) -> str:
    """Run (or resume) every method's study; the markdown report of their best trials."""
    recipe = BENCHES[bench]
    lines = [
        f"# Tuning for `darnn bench --dataset {bench}`",
        "",
        f"Command: `python benchmarks/contrast_tuning.py {bench} --trials {trials} "
        f"--limit-train {limit_train} --epochs {epochs} --workers {workers}"
        + "".join(f" --set {item}" for item in extra)
        + "`. Base recipe "
        f"`{recipe}`; {trials} trials per method on {limit_train} training samples, {epochs} "
        "epochs, validation accuracy of the last epoch, TPE (sampler seed 0) with the median "
        "pruner after 5 random trials.",
        "",
    ]
    for name, overrides, space in methods():
        out = Path(os.path.relpath(sweeps / bench / name))
        argv = ["sweep", "--config", recipe, "--space", space, "--study", name]
        argv += ["--trials", str(trials), "--workers", str(workers), "--out", str(out)]
        argv += ["--pruner", "median", "--sampler-seed", "0"]
        budget = (f"data.limit_train={limit_train}", f"train.epochs={epochs}")
        for item in (*overrides, *budget, *extra):
            argv += ["--set", item]
        code = main(argv)
        if code != 0:
            raise SystemExit(f"contrast_tuning: the study of {name} failed (exit {code})")
        study, url = open_study(f"sqlite:///{out / 'study.db'}", name)
        lines += [f"## {name}", "", f"Fixed: `{' '.join(overrides) or '-'}`", "", "```"]
        lines += [*summary_lines(study, url, top=3), "```", ""]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line: which bench, and the search budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=sorted(BENCHES))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--limit-train", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report", type=Path, help="default benchmarks/bench/tuning/BENCH.md")
    parser.add_argument("--sweeps", type=Path, default=ROOT / "benchmarks" / "sweeps")
    parser.add_argument("--set", action="append", default=[], help="override for every study")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    text = tune(
        args.bench,
        args.trials,
        args.limit_train,
        args.epochs,
        args.workers,
        args.sweeps,
        tuple(args.set),
    )
    report = args.report or ROOT / "benchmarks" / "bench" / "tuning" / f"{args.bench}.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text + "\n")
    print(text)
