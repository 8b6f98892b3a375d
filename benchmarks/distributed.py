"""Data-parallel scaling: training samples/s with 1 and K torchrun processes.

Each cell is one epoch of ``darnn train`` on a shipped recipe (configs/*.yaml) over the
first --samples training images, launched as

    torchrun --standalone --nproc-per-node K -m darnn train --config RECIPE ...

with one thread per process (OMP_NUM_THREADS=1), plus one process with K threads for
comparison. The figure is the run's own ``samples_per_s`` (time inside the training loop,
evaluation and start-up excluded).

    PYTHONPATH=src .venv/bin/python benchmarks/distributed.py \
        --out benchmarks/results-distributed.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(recipe: str, procs: int, threads: int, batch: int, samples: int) -> float:
    """Training samples/s of one epoch of ``recipe`` with ``procs`` ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(procs), "-m", "darnn", "train", "--quiet",
            "--config", str(ROOT / "configs" / recipe), "--out", str(out),
            f"data.limit_train={samples}", "train.epochs=1", f"train.batch_size={batch}",
            f"train.threads={threads}", "train.probe_size=64",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, env=env, capture_output=True, text=True)
        record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        return float(record["samples_per_s"])


def main() -> None:
    """Parse the command line and time each recipe and batch size over processes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recipes", default="recipe_b_binarised_fashion.yaml,default.yaml", help="configs/ files"
    )
    parser.add_argument("--batches", default="16,64,256")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    k = args.procs
    rows = []
    for recipe in args.recipes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            row = {
                "recipe": recipe,
                "batch": batch,
                "1 process, 1 thread": run(recipe, 1, 1, batch, args.samples),
                f"1 process, {k} threads": run(recipe, 1, k, batch, args.samples),
                f"{k} processes, 1 thread each": run(recipe, k, 1, batch, args.samples),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
