r"""darnn against darnax on recipe A, in rounds run back to back on the same machine.

Each round runs ``benchmarks/speed.py --configs A --kernels torch,auto`` (this interpreter)
and then ``benchmarks/darnax_speed.py`` (an interpreter with jax and a darnax checkout; see
that script's docstring), and records both training throughputs and their ratio. The
machine is shared and darnax's loop varies by up to 1.7x between runs, so several rounds
are kept, each a fair pair:

    PYTHONPATH=src python benchmarks/vs_darnax.py --darnax /tmp/darnax/src \\
        --jax-python /tmp/jaxvenv/bin/python --rounds 3 --out benchmarks/results-vs-darnax.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def darnn_round(out: Path) -> dict:
    """speed.py's recipe-A record for each kernel, as {kernel: training samples/s, ...}."""
    cmd = [sys.executable, str(HERE / "speed.py"), "--configs", "A", "--kernels", "torch,auto",
           "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    results = json.loads(out.read_text())["results"]
    return {
        r["kernel"]: {
            "samples_per_s": r["train"]["samples_per_s"],
            "threads": r["train"]["threads"],
            "by_threads": {k: v["samples_per_s"] for k, v in r["train"]["by_threads"].items()},
            "step_over_bare": r["train"]["step_over_bare"],
            "kernel_used": r["kernel_used"]["train"],
        }
        for r in results
    }


def darnax_round(jax_python: str, darnax: str) -> dict:
    """darnax_speed.py's record (its tutorial loop and its jitted step alone)."""
    cmd = [jax_python, str(HERE / "darnax_speed.py"), "--darnax", darnax]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the rounds, print one line each, write the record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--darnax", required=True, help="the src folder of a darnax checkout")
    ap.add_argument("--jax-python", required=True, help="a Python with jax, equinox, optax")
    ap.add_argument("--rounds", type=int, default=3, help="pairs of runs (default 3)")
    ap.add_argument("--out", help="write the rounds and ratios to this JSON file")
    args = ap.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            darnn = darnn_round(Path(tmp) / f"speed{k}.json")
            darnax = darnax_round(args.jax_python, args.darnax)
            loop = darnax["train"]["samples_per_s"]  # the tutorial's loop
            step = darnax["train"]["samples_per_s_without_decay"]  # its jitted step alone
            ratios = {
                kernel: {"vs_loop": r["samples_per_s"] / loop,
                         "vs_jitted_step": r["samples_per_s"] / step}
                for kernel, r in darnn.items()
            }  # fmt: skip
            rounds.append({"darnn": darnn, "darnax": darnax, "ratios": ratios})
            speeds = {f"{kn}_samples_per_s": r["samples_per_s"] for kn, r in darnn.items()}
            line = {"round": k, "darnax_loop": loop, "darnax_step": step, **speeds,
                    "auto_vs_loop": ratios["auto"]["vs_loop"]}  # fmt: skip
            print(json.dumps(line), flush=True)
    record = {
        "command": "PYTHONPATH=src python benchmarks/vs_darnax.py " + " ".join(sys.argv[1:]),
        "load_average_after": list(os.getloadavg()),
        "rounds": rounds,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
