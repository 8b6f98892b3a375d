"""Running a bench: every selected method x seed on one dataset, with identical splits.

The data are loaded once, before anything is written, and every method gets them: the
darnn runs through their config's ``data`` section, which the plan set to the bench's own
for every method (each darnn run records the fingerprint of the training data it actually
used, and so does every baseline), the baselines through the arrays themselves. darnn runs
are ordinary ``darnn train`` run directories under OUT/runs/METHOD/seedK.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .. import rundir, training
from ..baselines import Split, fit_perceptron, matched_width, parameter_counts, tune_mlp
from ..data import Dataset, load_data
from ..devices import resolve_device
from ..errors import RunError
from ..files import write_json
from ..modelfiles import load_model
from ..network import Network
from ..probe import fit_probe, representation
from ..runconfig import config_digest
from ..rundir import CHECKPOINT_FILE, MODEL_STEM
from ..threads import using_threads
from .methods import Method, Plan
from .report import write_report

RESULTS_FILE = "results.json"


def check_out(out: Path) -> None:
    """Refuse an --out that exists and is not an empty directory (before any work)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(
            f"Output directory {out} already exists and is not empty; choose another --out "
            "(or omit it for a new directory under runs/)."
        )


def split_digest(data: Dataset) -> str:
    """SHA-256 of all six arrays: the same digest means the same train/val/test splits."""
    digest = hashlib.sha256()
    for a in (data.X_train, data.y_train, data.X_val, data.y_val, data.X_test, data.y_test):
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def count_parameters(method: Method, data: Dataset, seed: int) -> dict[str, int]:
    """Learned and fixed non-zeros of a darnn method's network as built with ``seed``."""
    assert method.config is not None
    try:
        net = Network(method.config.network, data.n_features, data.n_classes, seed=seed)
    except ValueError as exc:  # too large for memory, modules of unequal size, ...
        raise RunError(f"method {method.name!r}: {exc}") from None
    return parameter_counts(net, method.config.learning)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during a run: the bench stops and reports what it finished."""


class Bench:
    """One bench run into ``out`` (see `run_bench`)."""

    def __init__(self, plan: Plan, out: Path, data: Dataset, log: Callable[[str], None]) -> None:
        self.plan, self.out, self.data, self.log = plan, out, data, log
        self.fingerprint = data.fingerprint()
        self.split = {
            "n_train": len(data.y_train),
            "n_val": len(data.y_val),
            "n_test": len(data.y_test),
            "n_features": data.n_features,
            "n_classes": data.n_classes,
            "source": data.source,
            "split_digest": split_digest(data),
            "train_fingerprint": self.fingerprint,
        }
        self.tuned_lr: dict[str, float] = {}  # mlp method -> lr chosen on the first seed
        # (config digest, seed) -> (method that trained it, its result)
        self.done: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}

    def adopt(self, records: list[dict[str, Any]]) -> None:
        """Carry over what earlier runs of a resumed bench decided.

        Each MLP's rate (chosen on the first seed) and the darnn results an identical config
        may reuse.
        """
        for r in records:
            if r["kind"] == "mlp" and "lr_grid" in r:
                self.tuned_lr[r["method"]] = r["lr"]
            if r["kind"] == "darnn" and "reused_from" not in r:
                method = self.plan.method(r["method"])
                assert method.config is not None
                self.done[(config_digest(method.config), r["seed"])] = (r["method"], r)

    # ----- darnn
    def run_darnn(self, method: Method, seed: int) -> dict[str, Any]:
        """Train one darnn run, or reuse the result of an identical config and seed.

        E.g. a reference width that --quick or --hidden made equal to the main method's.
        """
        assert method.config is not None
        key = (config_digest(method.config), seed)
        if key in self.done:
            first, result = self.done[key]
            return {**result, "reused_from": first}
        result = self.train_darnn(method, seed)
        self.done[key] = (method.name, result)
        return result

    def train_darnn(self, method: Method, seed: int) -> dict[str, Any]:
        """Train (or continue) the darnn run of ``method`` at ``seed``; returns its record."""
        config = dataclasses.replace(
            method.config, train=dataclasses.replace(method.config.train, seed=seed)
        )
        run_dir = self.out / "runs" / method.name / f"seed{seed}"
        command = self.plan.train_command(method, seed)
        # A run an interrupted bench left behind continues from its checkpoint; one killed
        # before its first checkpoint starts again.
        resume = (run_dir / CHECKPOINT_FILE).is_file()
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)
        tick = time.perf_counter()
        summary = training.train(
            config, run_dir, resume=resume, progress=False, command=shlex.split(command)
        )
        wall = time.perf_counter() - tick
        if summary["status"] != "completed":
            raise Interrupted
        metrics = summary["metrics"]
        checkpoint = run_dir / CHECKPOINT_FILE
        fingerprint = read_fingerprint(checkpoint)
        checkpoint.unlink()  # the run is complete; its model file stays (saves disk space)
        last = metrics[-1]
        train_time = sum(m["train_time"] for m in metrics)
        counts = count_parameters(method, self.data, seed)
        return {
            "epochs": last["epoch"],
            "val_acc": last["val_acc"],
            "test_acc": last["test_acc"],  # the last epoch's: no epoch is chosen on test
            "val_curve": [m["val_acc"] for m in metrics],
            "wall_time": wall,
            "train_time": train_time,
            "samples_per_s": len(self.data.y_train) * len(metrics) / max(train_time, 1e-9),
            "params": counts["learned"],
            "fixed_weights": counts["fixed"],
            "train_fingerprint": fingerprint,
            "config": config.to_dict(),
            "command": command,
            "run_dir": str(run_dir.relative_to(self.out)),
            "dynamics": {
                k: last[k] for k in ("unstable", "free_sweeps", "eval_sweeps", "eval_converged")
            },
        }

    # ----- baselines
    def splits(self, device: str) -> tuple[Split, Split, Split]:
        """The bench's train, validation and test splits as tensors on ``device``."""
        d = self.data
        return (
            Split.of(d.X_train, d.y_train, device),
            Split.of(d.X_val, d.y_val, device),
            Split.of(d.X_test, d.y_test, device),
        )

    def run_mlp(self, method: Method, seed: int) -> dict[str, Any]:
        """Fit the MLP baseline ``method`` at ``seed``, sized to its darnn method."""
        assert method.match is not None and method.activation is not None
        target = self.plan.method(method.match)
        assert target.config is not None
        params = count_parameters(target, self.data, seed)["learned"]
        if method.size == "width":  # the authors' baseline: as many hidden units
            width = sum(target.config.network.hidden)
        else:
            width = matched_width(params, self.data.n_features, self.data.n_classes)
        tuned = self.tuned_lr.get(method.name)
        lrs = method.lrs if tuned is None else (tuned,)
        tick = time.perf_counter()
        result = tune_mlp(
            *self.splits(target.config.train.device),
            n_classes=self.data.n_classes,
            activation=method.activation,
            width=width,
            epochs=self.plan.epochs,
            batch_size=method.batch_size,
            lrs=lrs,
            seed=seed,
            threads=target.config.train.threads,
            bias=bool(method.bias),
        )
        wall = time.perf_counter() - tick
        if tuned is None:
            self.tuned_lr[method.name] = result["lr"]
            source = f"chosen on validation (seed {seed}) from {list(method.lrs)}"
        else:
            source = f"chosen on validation with seed {self.plan.seeds[0]}"
            result.pop("lr_grid")
        return {
            **result,
            "epochs": self.plan.epochs,
            "wall_time": wall,
            "fixed_weights": 0,
            "params_target": params,
            "lr_source": source,
            "train_fingerprint": self.fingerprint,
            "config": {
                "activation": method.activation,
                "width": width,
                "bias": bool(method.bias),
                "size": method.size,
                "match": method.match,
                "params_target": params,
                "optimizer": "Adam",
                "loss": "cross-entropy",
                "lrs": list(lrs),
                "batch_size": method.batch_size,
                "epochs": self.plan.epochs,
                "device": target.config.train.device,
            },
        }

    def run_perceptron(self, method: Method, seed: int) -> dict[str, Any]:
        """Fit the perceptron baseline at ``seed`` on the raw input."""
        tick = time.perf_counter()
        result = fit_perceptron(
            *self.splits("cpu"),
            n_classes=self.data.n_classes,
            epochs=self.plan.epochs,
            batch_size=method.batch_size,
            seed=seed,
        )
        return {
            **result,
            "epochs": self.plan.epochs,
            "wall_time": time.perf_counter() - tick,
            "fixed_weights": 0,
            "train_fingerprint": self.fingerprint,
            "config": {"batch_size": method.batch_size, "epochs": self.plan.epochs, "bias": True},
        }

    def run_probe(self, method: Method, seed: int) -> dict[str, Any]:
        """A linear probe on the states of the darnn run ``method.of`` of this seed.

        That run is trained first if the bench has not run it yet.
        """
        assert method.of is not None and method.state is not None
        target = self.plan.method(method.of)
        assert target.config is not None
        trained = self.run_darnn(target, seed)
        net = load_model(self.out / trained["run_dir"] / MODEL_STEM)
        cfg, d = target.config.learning, self.data
        tick = time.perf_counter()
        with using_threads(target.config.train.threads or 1):
            splits = [
                (representation(net, torch.as_tensor(X), cfg, method.state), torch.as_tensor(y))
                for X, y in ((d.X_train, d.y_train), (d.X_val, d.y_val), (d.X_test, d.y_test))
            ]
            result = fit_probe(
                *splits,
                d.n_classes,
                seed=seed,
                epochs=method.epochs or 20,
                lr=method.lr or 1e-3,
                batch_size=method.batch_size,
            )
        wall = time.perf_counter() - tick
        n_states = splits[0][0].shape[1]
        return {
            "epochs": result.epochs,
            "val_acc": result.val_acc,
            "test_acc": result.test_acc,  # the last epoch's: no epoch is chosen on test
            "train_acc": result.train_acc,
            "val_curve": [result.val_acc],
            "wall_time": wall,
            "samples_per_s": len(d.y_train) * result.epochs / max(wall, 1e-9),
            "params": n_states * d.n_classes,
            "fixed_weights": trained["params"] + trained["fixed_weights"],
            "train_fingerprint": self.fingerprint,
            "config": {
                "of": method.of,
                "state": method.state,
                "features": n_states,
                "optimizer": "Adam",
                "loss": "cross-entropy",
                "bias": False,
                "lr": method.lr,
                "batch_size": method.batch_size,
                "epochs": method.epochs,
            },
        }

    def run(self, method: Method, seed: int) -> dict[str, Any]:
        """Run ``method`` at ``seed`` (darnn, mlp, perceptron or probe); returns its record."""
        runner = {
            "darnn": self.run_darnn,
            "mlp": self.run_mlp,
            "perceptron": self.run_perceptron,
            "probe": self.run_probe,
        }
        result = runner[method.kind](method, seed)
        return {
            "method": method.name,
            "group": method.group,
            "kind": method.kind,
            "seed": seed,
            "note": method.note,
            **({"lambda": method.lam} if method.lam is not None else {}),
            **({"bench_width": method.width} if method.width is not None else {}),
            "data": dataclasses.asdict(self.plan.data),
            **result,
        }


def read_previous(out: Path, plan: Plan) -> list[dict[str, Any]]:
    """The records of the bench in ``out``, after checking it ran this very plan."""
    try:
        stored = yaml.safe_load((out / rundir.CONFIG_FILE).read_text())
        records = json.loads((out / RESULTS_FILE).read_text())["records"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise RunError(
            f"Cannot resume the bench in {out}: its {rundir.CONFIG_FILE} or {RESULTS_FILE} is "
            f"missing or unreadable ({exc}). Resume only a directory a darnn bench wrote."
        ) from None
    wanted = plan.to_dict()
    if not isinstance(stored, dict) or not isinstance(records, list):
        raise RunError(f"Cannot resume the bench in {out}: its files are not a bench's.")
    differ = sorted(
        k
        for k in set(stored) | set(wanted)
        if k != "bench_file" and not same_plan(stored.get(k), wanted.get(k))
    )
    if differ:
        raise RunError(
            f"The bench in {out} ran another plan (different: {', '.join(differ)}); resume it "
            "with the options it was started with, or start a new --out."
        )
    return records


def same_plan(stored: Any, wanted: Any) -> bool:
    """Does a stored plan (part) describe the wanted one?

    Keys the stored plan lacks are options added to darnn since it was written: at their
    defaults (the bench file did not set them) they leave every run as it was.
    """
    if isinstance(stored, dict) and isinstance(wanted, dict):
        return set(stored) <= set(wanted) and all(
            same_plan(v, wanted[k]) for k, v in stored.items()
        )
    if isinstance(stored, list) and isinstance(wanted, list):
        return len(stored) == len(wanted) and all(map(same_plan, stored, wanted))
    return bool(stored == wanted)


def read_fingerprint(checkpoint: Path) -> str | None:
    """The training-data fingerprint a darnn run recorded in its checkpoint."""
    import safetensors

    with safetensors.safe_open(str(checkpoint), framework="pt") as f:
        state = json.loads((f.metadata() or {}).get("state", "{}"))
    return state.get("data_fingerprint")


def run_bench(
    plan: Plan,
    out: Path,
    *,
    command: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run ``plan`` into the new directory ``out``; returns results.json's content.

    Everything a user can get wrong (the directory, the data, a network that cannot be
    built) fails before anything is written. "status" is "completed", or "interrupted"
    after Ctrl-C / SIGTERM (the files then hold the runs that finished). ``resume``:
    continue the bench in ``out`` (same plan): recorded runs are kept, an interrupted darnn
    run continues from its checkpoint, the rest run.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    previous = read_previous(out, plan) if resume else None
    if previous is None:
        check_out(out)
    data = load_data(plan.data)
    for method in plan.methods:  # every network builds (memory, shapes) and its device exists
        target = plan.method(method.match) if method.match else method
        if target.config is not None:
            resolve_device(target.config.train.device)
            count_parameters(target, data, plan.seeds[0])
    if previous is None:
        created = rundir.claim(out, resumable=False)
        try:
            rundir.write_run_info(out, plan.to_dict(), seed=None, command=command)
        except BaseException:
            rundir.discard(out, created)
            raise
    bench = Bench(plan, out, data, log)
    records: list[dict[str, Any]] = [] if previous is None else previous
    finished = {(r["method"], r["seed"]) for r in records}
    bench.adopt(records)
    status, started = "completed", time.perf_counter()
    total = len(plan.methods) * len(plan.seeds)

    def save() -> dict[str, Any]:
        results = {
            "status": status,
            "command": list(sys.argv if command is None else command),
            "bench": plan.to_dict(),
            "split": bench.split,
            "wall_time": time.perf_counter() - started,
            "records": records,
        }
        write_json(out / RESULTS_FILE, results)
        return results

    try:
        for method in plan.methods:
            for seed in plan.seeds:
                if (method.name, seed) in finished:
                    continue
                record = bench.run(method, seed)
                records.append(record)
                took = (
                    f"same config as {record['reused_from']}: reused"
                    if "reused_from" in record
                    else f"{record['wall_time']:.0f} s"
                )
                log(
                    f"[{len(records)}/{total}] {method.name} seed {seed}: val "
                    f"{record['val_acc']:.4f} test {record['test_acc']:.4f} ({took})"
                )
                save()
    except (Interrupted, KeyboardInterrupt):
        status = "interrupted"
    results = save()
    write_report(out, plan, results)
    return results
