"""Speed of training and evaluation, measured against the machine's own limits.

For each configuration it prints (and writes to --out) one JSON object with

* training samples/s at batch 16 and evaluation samples/s at a large batch (best of
  --repeats timed runs after a warm-up), and the sweeps the dynamics actually ran;
* model bytes and non-zeros, next to the bytes of the same model stored densely;
* the bare kernels one training step cannot avoid, timed alone in the same run with the
  same shapes and storage (input and label products, one J product per sweep run, the
  readout, the J / W_in / W_out updates), and step_time / bare_time;
* the same step done the way the authors' JAX library does it (dense masked matrices, the
  input drive recomputed at every sweep, every sweep run), timed on the same machine;
* each of --kernels (learning.kernel: torch, the tensor operations; fused, the compiled CPU
  relaxation of darnn.fused; auto, what a user gets), timed in the same run;
* the machine's limits: dense sgemm GFLOP/s and memory read bandwidth, and the GFLOP/s
  (useful products only) and GB/s (weights streamed) the runs achieve;
* the local rule's sparse updates of W_in and J alone, torch's and darnn.sampled's C one, at
  batches 16 and 64 on one thread ("sparse_updates_ms").

Configurations are the shipped recipes, read from configs/*.yaml with the run-config
loader (network, learning and input transform exactly as `darnn train` uses them): A
(configs/recipe_a_sparse_mnist.yaml: N=2000, J 99% sparse as CSR, W_in 90% sparse, raw
pixels), B (configs/recipe_b_binarised_fashion.yaml: dense N=1600, binarised inputs, 5+5
sweeps) and dense8192 (recipe B with network.hidden=[8192]). Inputs are the recipe's data
set when installed, else Fashion-MNIST through the recipe's transform (same shape and value
range), else random sparse images; the "inputs" field says which.

    PYTHONPATH=src python benchmarks/speed.py --out benchmarks/results-cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from darnn import sampled
from darnn.config import KERNELS, LearningConfig
from darnn.couplings import Coupling, SparseCoupling, batch_minor
from darnn.data import DataError, load_dataset
from darnn.dynamics import spin_sign
from darnn.learning import (
    StepStats,
    dynamics_kernels,
    evaluate,
    learning_step,
    post_terms,
    three_phases,
    two_phase,
)
from darnn.network import Network
from darnn.runconfig import DataConfig, RunConfig, load_run_config
from darnn.threads import available_cores, choose_threads, product_work, using_threads

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
BATCH = 16  # the recipes' training batch (checked against each config)


@dataclass(frozen=True)
class Bench:
    """A shipped recipe and how much of it to time."""

    config: str  # file under configs/
    overrides: tuple[str, ...]  # section.key=value, as on the darnn train command line
    eval_batch: int
    train_steps: int  # timed steps per repeat


BENCHES: dict[str, Bench] = {
    "A": Bench("recipe_a_sparse_mnist.yaml", (), eval_batch=8192, train_steps=300),
    "B": Bench("recipe_b_binarised_fashion.yaml", (), eval_batch=4096, train_steps=100),
    # Where the fused kernel stops paying for dense couplings (darnn.fused.AUTO_DENSE_UNITS).
    "B256": Bench("recipe_b_binarised_fashion.yaml", ("network.hidden=[256]",), eval_batch=4096,
                  train_steps=300),
    "B500": Bench("recipe_b_binarised_fashion.yaml", ("network.hidden=[500]",), eval_batch=4096,
                  train_steps=200),
    "dense8192": Bench(
        "recipe_b_binarised_fashion.yaml", ("network.hidden=[8192]",), eval_batch=512,
        train_steps=8,
    ),
}  # fmt: skip


def load_recipe(bench: Bench) -> RunConfig:
    """The bench's recipe with its overrides."""
    return load_run_config(CONFIGS / bench.config, bench.overrides)


# ----------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(
    fn: Callable[[], object], device: torch.device, repeats: int, inner: int = 1
) -> tuple[float, float]:
    """Best (wall, CPU) seconds per call of `inner` back-to-back calls, over `repeats` tries.

    CPU time is what this process used (all its threads): for a single-threaded run on a
    machine other jobs keep busy, it is what the run takes on a core of its own.
    """
    fn()
    sync(device)
    wall = cpu = math.inf
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(inner):
            fn()
        sync(device)
        wall = min(wall, (time.perf_counter() - w0) / inner)
        cpu = min(cpu, (time.process_time() - c0) / inner)
    return wall, cpu


def machine_limits(device: torch.device, repeats: int, quick: bool) -> dict[str, float]:
    """Dense float32 matmul throughput and memory read bandwidth of this machine."""
    n = 1024 if quick else 4096 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    gflops = 2 * n**3 / best_time(lambda: a @ b, device, max(5, 2 * repeats + 1))[0] / 1e9
    big = torch.ones(2**24 if quick else 2**26, device=device)  # 64 or 256 MB
    gbs = big.numel() * 4 / best_time(big.sum, device, 2 * repeats + 1, 3)[0] / 1e9
    return {"sgemm_gflops": gflops, "read_gbs": gbs}


# ----------------------------------------------------------------------------- inputs
def load_inputs(data: DataConfig, n_train: int, n_eval: int) -> tuple[Tensor, Tensor, Tensor, str]:
    """Inputs to time on: (X_train, y_train, X_eval, source).

    The recipe's data set through its transform if installed, else Fashion-MNIST through
    the same transform, else random images.
    """
    for name in dict.fromkeys([data.name, "fashion-mnist"]):
        try:
            d = load_dataset(
                name, data_dir=data.data_dir, download=False, limit_train=n_train,
                transform=data.transform, transform_dim=data.transform_dim,
                transform_seed=data.transform_seed,
            )  # fmt: skip
        except (DataError, OSError) as err:
            print(json.dumps({"note": f"{name} unavailable ({err})"}), file=sys.stderr)
            continue
        X, y, Xe = (torch.from_numpy(a) for a in (d.X_train, d.y_train, d.X_test))
        Xe = Xe.repeat(math.ceil(n_eval / Xe.shape[0]), 1)[:n_eval]  # tile up to the batch
        source = name if name == data.name else f"{name} (stand-in for {data.name})"
        return X, y, Xe.contiguous(), source
    # Nothing installed: MNIST-like sparse images in [0, 1] (binarised like recipe B if asked).
    g = torch.Generator().manual_seed(0)
    n = n_train + n_eval
    X = torch.rand(n, 784, generator=g) * (torch.rand(n, 784, generator=g) < 0.5)
    if data.transform == "binarised":
        X = torch.where(X @ torch.randn(784, 784, generator=g) >= 0, 1.0, -1.0)
    y = torch.randint(0, 10, (n_train,), generator=g)
    return X[:n_train], y, X[n_train:], "random"


# ----------------------------------------------------------------------------- measurements
def model_memory(net: Network) -> dict[str, object]:
    """Storage format and bytes of W_in, J and W_out, and the network's total."""
    per = {}
    for name, c in {"w_in": net.w_in[0], "J": net.recurrent.J[0], "w_out": net.w_out}.items():
        per[name] = {
            "format": "csr" if isinstance(c, SparseCoupling) else "dense",
            "shape": [c.n_out, c.n_in],
            "nnz": c.nnz,
            "bytes": c.nbytes,
            "dense_bytes": c.n_out * c.n_in * 4,
        }
    return {
        "model_bytes": net.nbytes,
        "dense_equivalent_bytes": sum(p["dense_bytes"] for p in per.values()),
        "nnz": sum(p["nnz"] for p in per.values()),
        "couplings": per,
    }


def sweep_counts(
    net: Network, X: Tensor, y: Tensor, cfg: LearningConfig, steps: int, start: int
) -> dict:
    """Sweeps per phase, as a mean over samples and as J products per step.

    A batch is swept until its slowest sample settles. From an untimed pass of `steps`
    steps: each batch's phases are relaxed once to count their sweeps, then the step learns from it.
    """
    per_step = []
    for i in range(start, start + steps):
        rows = torch.arange(i * BATCH, (i + 1) * BATCH, device=X.device) % X.shape[0]
        _, phases = three_phases(net, X[rows], y[rows], cfg)
        per_step.append(torch.stack([p.sweeps for p in phases]).cpu())
        learning_step(net, X[rows], y[rows], cfg)
    counts = torch.stack(per_step)  # (steps, 3 phases, batch)
    mean, products = counts.double().mean(dim=(0, 2)), counts.amax(dim=2).double().mean(dim=0)
    phases = ("warmup", "clamped", "free")
    return {
        "mean_sweeps": {p: float(mean[k]) for k, p in enumerate(phases)},
        "J_products": {p: float(products[k]) for k, p in enumerate(phases)},
    }


def bare_kernels(
    net: Network, device: torch.device, repeats: int
) -> dict[str, tuple[float, float]]:
    """Seconds of each kernel a training step needs, alone, on copies of the weights."""
    g = torch.Generator(device=device).manual_seed(0)

    def spins(n: int) -> Tensor:  # (n, B): the batch-minor layout the library uses
        return torch.randn(n, BATCH, device=device, generator=g).sign()

    def product(c: Coupling, xt: Tensor) -> Callable[[], object]:
        if isinstance(c, SparseCoupling):
            csr, out = c.csr, xt.new_empty(c.n_out, BATCH)
            return lambda: torch.addmm(out, csr, xt, beta=0.0, out=out)
        w = c.to_dense()
        return lambda: torch.mm(w, xt)

    def update(c: Coupling, post: Tensor, pre: Tensor) -> Callable[[], object]:
        if isinstance(c, SparseCoupling):
            csr = c.csr.clone()
            return lambda: torch.sparse.sampled_addmm(csr, post, pre.T, beta=0.999, out=csr)
        w = c.to_dense()
        return lambda: w.addmm_(post, pre.T, beta=0.999)

    w_in, J, w_out = net.w_in[0], net.recurrent.J[0], net.w_out
    n, d, c = J.n_out, w_in.n_in, w_out.n_out
    s, x, post, t = spins(n), spins(d), spins(n), spins(c)
    w_back, code = net.w_back, torch.randn(c, BATCH, device=device, generator=g)
    kernels = {
        "drive": product(w_in, x),
        "label": lambda: torch.mm(w_back, code),  # W_back label, for the clamped phase
        "J_product": product(J, s),
        "readout": product(w_out, s),
        "J_update": update(J, post, s),
        "w_in_update": update(w_in, post, x),
        "w_out_update": update(w_out, t, s),
    }
    inner = 2 if n > 4000 else 10
    return {k: best_time(f, device, repeats, inner) for k, f in kernels.items()}


def sparse_updates(
    net: Network, lc: LearningConfig, X: Tensor, y: Tensor, repeats: int
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Milliseconds of the rule's sparse updates of W_in and J, one thread, batches 16 and 64.

    torch: `SparseCoupling.add_outer_` (torch.sparse.sampled_addmm); c: darnn.sampled's C
    update (None where it declines). The post terms are the rule's (kappa_j) on a relaxed
    batch; each update works on a copy of the coupling.
    """
    cpu = torch.device("cpu")

    def ms(update: Callable[[], object]) -> float:
        return 1e3 * best_time(update, cpu, repeats, 10)[0]

    out: dict[str, dict[str, dict[str, float | None]]] = {}
    with using_threads(1):
        for batch in (16, 64):
            x, yb = batch_minor(X[:batch]), y[:batch]
            free = two_phase(net, x, yb, lc)[1]
            s = free.states[0]
            post = post_terms(s, free.fields[0], lc.kappa_j)[0]
            timed: dict[str, dict[str, float | None]] = {}
            for name, coupling, pre in (("w_in", net.w_in[0], x), ("J", net.recurrent.J[0], s)):
                if not isinstance(coupling, SparseCoupling):
                    continue
                shape = (coupling.n_out, coupling.n_in)
                ours, theirs = (
                    SparseCoupling(coupling.crow.clone(), coupling.col.clone(),
                                   coupling.values.detach().clone(), shape)
                    for _ in range(2)
                )  # fmt: skip
                declined = not sampled.add_outer_(ours, post, pre, 0.01, 1e-5)
                timed[name] = {
                    "torch": ms(lambda c=theirs, p=post, q=pre: c.add_outer_(p, q, 0.01, 1e-5)),
                    "c": None if declined else ms(
                        lambda c=ours, p=post, q=pre: sampled.add_outer_(c, p, q, 0.01, 1e-5)
                    ),
                }  # fmt: skip
            out[str(batch)] = timed
    return out


def authors_style_step(net: Network, cfg: LearningConfig) -> Callable[[Tensor, Tensor], None]:
    """A training step done the way the authors' JAX library does it, for comparison.

    Masked couplings as dense matrices, the input drive recomputed at every sweep, every sweep run.
    (Weights stored pre-masked; the mask is applied once per update; elementwise work uses
    the same fast float kernels as darnn, as XLA would fuse it. Works on copies.)
    """
    w_in, J, w_out = (c.to_dense() for c in (net.w_in[0], net.recurrent.J[0], net.w_out))
    m_in, m_j = (c.support().to(w_in.dtype) for c in (net.w_in[0], net.recurrent.J[0]))
    jd, k = (
        net.recurrent.j_d_value,
        cfg.kappa_j + (net.recurrent.j_d_value if cfg.margin_convention == "offdiag" else 0.0),
    )
    phases = [False] * cfg.warmup_sweeps + [True] * cfg.clamped_sweeps + [False] * cfg.free_sweeps
    a_in = cfg.lr_in / math.sqrt(BATCH * net.n_features * net.config.w_in_density)
    a_j = cfg.lr_j / math.sqrt(BATCH * J.shape[0] * net.config.j_density)
    a_out = cfg.lr_out / math.sqrt(BATCH * J.shape[0])

    def step(x: Tensor, y: Tensor) -> None:
        label = net.label_field(y)
        s = x.new_zeros(x.shape[0], J.shape[0])
        for clamped in phases:
            h = x @ w_in.T + s @ J.T + jd * s + (label if clamped else 0.0)
            s = spin_sign(h)
        h = x @ w_in.T + s @ J.T + jd * s
        post = torch.le(s * h, k, out=torch.empty_like(h)).mul_(s)
        t = net.targets(y)
        t_post = torch.le(t * (s @ w_out.T), cfg.kappa_out, out=torch.empty_like(t)).mul_(t)
        w_in.add_((post.T @ x) * m_in, alpha=a_in).mul_(1 - cfg.decay_in)
        J.add_((post.T @ s) * m_j, alpha=a_j).mul_(1 - cfg.decay_j)
        w_out.add_(t_post.T @ s, alpha=a_out).mul_(1 - cfg.decay_out)

    return step


def cuda_graph_step(
    net: Network, cfg: LearningConfig, x: Tensor, y: Tensor
) -> Callable[[Tensor, Tensor], StepStats]:
    """Capture one batch-16 training step as a CUDA graph.

    Each call replays it on a new batch (launch overhead gone). relax does not sync while a
    graph is being captured.
    """
    static_x, static_y = x.clone(), y.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
        for _ in range(3):
            learning_step(net, static_x, static_y, cfg)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        stats = learning_step(net, static_x, static_y, cfg)

    def step(xb: Tensor, yb: Tensor) -> StepStats:
        static_x.copy_(xb)
        static_y.copy_(yb)
        graph.replay()
        return stats

    return step


# ----------------------------------------------------------------------------- one config
def run_config(name: str, kernel: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Time one bench configuration (A, B or dense8192) on ``device``; returns its record.

    ``kernel`` is the `learning.kernel` the steps and evaluations run with.
    """
    bench = BENCHES[name]
    recipe = load_recipe(bench)
    lc = dataclasses.replace(recipe.learning, kernel=kernel)
    if recipe.train.batch_size != BATCH:
        raise SystemExit(f"{bench.config}: batch_size {recipe.train.batch_size}, expected {BATCH}")
    steps = max(4, bench.train_steps // (8 if args.quick else 1))
    eval_batch = min(bench.eval_batch, 512) if args.quick else bench.eval_batch
    warm = min(30, 2 * steps)
    n_train = BATCH * (warm + 2 * (args.repeats + 1) * steps + 40)  # every step new data
    X, y, Xe, source = load_inputs(recipe.data, n_train, eval_batch)
    X, y, Xe = X.to(device), y.to(device), Xe.to(device)
    net = Network(recipe.network, X.shape[1], 10, seed=recipe.train.seed, device=device)

    step = lambda xb, yb: learning_step(net, xb, yb, lc)  # noqa: E731
    graphs = "off"
    if device.type == "cuda" and not args.no_cuda_graphs:
        try:
            step = cuda_graph_step(net, lc, X[:BATCH], y[:BATCH])
            graphs = "on"
        except Exception as err:  # e.g. a kernel that cannot be captured: stay eager
            graphs = f"failed: {type(err).__name__}: {err}"[:200]
    pos = 0

    def train(k: int) -> None:
        nonlocal pos
        for _ in range(k):
            if (pos + 1) * BATCH > X.shape[0]:
                pos = 0
            step(X[pos * BATCH : (pos + 1) * BATCH], y[pos * BATCH : (pos + 1) * BATCH])
            pos += 1

    train(warm)  # the first steps have more unstable units; time the typical regime
    result_eval: dict = {}

    def run_eval() -> None:
        result_eval.update(evaluate(net, Xe, None, lc, batch_size=eval_batch))

    # Batch-16 kernels are tiny: on a busy machine one thread can beat several (OpenMP
    # threads wait for each other), so everything is timed at 1 and at --threads threads;
    # single-threaded CPU runs also report CPU time ("1cpu", see best_time).
    step_s: dict[str, float] = {}
    bare_s: dict[str, dict[str, float]] = {}
    eval_s: dict[str, float] = {}
    for threads in sorted({1, args.threads}) if device.type == "cpu" else [args.threads]:
        keys = [str(threads)] + (["1cpu"] if threads == 1 and device.type == "cpu" else [])
        with using_threads(threads):
            times = best_time(lambda: train(steps), device, args.repeats)
            bare = bare_kernels(net, device, args.repeats)
            t_eval = best_time(run_eval, device, args.repeats)
        for i, key in enumerate(keys):
            step_s[key] = times[i] / steps
            bare_s[key] = {k: v[i] for k, v in bare.items()}
            eval_s[key] = t_eval[i]
    # The authors' way, same machine, same batches, at the thread count that suits it best.
    naive = authors_style_step(net, lc)
    naive_steps = max(2, steps // 10)
    batches = [(X[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
               for i in range(naive_steps)]  # fmt: skip
    naive_s = math.inf
    for threads in sorted({1, args.threads}) if device.type == "cpu" else [args.threads]:
        with using_threads(threads):
            t_naive = best_time(lambda: [naive(xb, yb) for xb, yb in batches], device, args.repeats)
        naive_s = min(naive_s, t_naive[0] / naive_steps)
    walls = [k for k in step_s if k.isdigit()]
    best = min(walls, key=step_s.__getitem__)
    t_step, bare = step_s[best], bare_s[best]
    best_eval = min(walls, key=eval_s.__getitem__)
    t_eval = eval_s[best_eval]
    updates = sparse_updates(net, lc, X, y, args.repeats) if device.type == "cpu" else {}
    sweeps = sweep_counts(net, X, y, lc, min(steps, 40), pos)
    mem = model_memory(net)

    run = sweeps["J_products"]
    products_run = run["warmup"] + run["clamped"] + run["free"]
    # The warm-up from s = 0 needs no product; every sweep after it needs one.
    products_max = lc.warmup_sweeps + lc.clamped_sweeps + lc.free_sweeps

    def bare_step(kernels: dict[str, float], products: float) -> float:
        fixed = sum(v for k, v in kernels.items() if k != "J_product")
        return fixed + products * kernels["J_product"]

    by_threads = {
        k: {"samples_per_s": BATCH / step_s[k],
            "step_over_bare": step_s[k] / bare_step(bare_s[k], products_run)}
        for k in step_s
    }  # fmt: skip
    # Useful work: 2 flops per stored weight and sample in each product and update.
    nnz = {k: v["nnz"] for k, v in mem["couplings"].items()}  # type: ignore[attr-defined]
    flops_step = 2 * BATCH * (2 * nnz["w_in"] + (products_run + 1) * nnz["J"] + 2 * nnz["w_out"])
    eval_sweeps = float(result_eval["sweeps"])
    flops_eval = 2 * eval_batch * (nnz["w_in"] + eval_sweeps * nnz["J"] + nnz["w_out"])
    # At batch 16 a dense step streams its weights: once per product, twice per update.
    J_bytes = mem["couplings"]["J"]["bytes"]  # type: ignore[index]
    win_bytes = mem["couplings"]["w_in"]["bytes"]  # type: ignore[index]
    bytes_step = (products_run + 2) * J_bytes + 3 * win_bytes
    return {
        "config": name,
        "kernel": kernel,
        # What that setting ran (darnn.fused): "fused" or "torch", for training and evaluation.
        "kernel_used": dynamics_kernels(net, lc, BATCH, eval_batch),
        "device": str(device),
        "cuda_graphs": graphs,
        "inputs": source,
        "hidden": list(net.sizes),
        "recipe": " ".join([f"configs/{bench.config}", *bench.overrides]),
        "j_density": recipe.network.j_density,
        "w_in_density": recipe.network.w_in_density,
        "max_sweeps": {"warmup": lc.warmup_sweeps, "clamped": lc.clamped_sweeps,
                       "free": lc.free_sweeps, "eval": lc.warmup_sweeps + lc.eval_sweeps},
        "train": {
            "batch": BATCH,
            "samples_per_s": BATCH / t_step,
            "threads": int(best),
            # What darnn.threads picks for these steps when nothing is set explicitly.
            "policy_threads": choose_threads(product_work(max(nnz.values()), BATCH)),
            "step_ms": 1e3 * t_step,
            "step_over_bare": t_step / bare_step(bare, products_run),
            "step_over_bare_all_sweeps": t_step / bare_step(bare, products_max),
            "authors_style_samples_per_s": BATCH / naive_s,
            "speedup_over_authors_style": naive_s / t_step,
            "by_threads": by_threads,
            "mean_sweeps": sweeps["mean_sweeps"],
            "J_products_per_step": run,
            "gflops": flops_step / t_step / 1e9,
            "weight_gbs": bytes_step / t_step / 1e9,
        },
        "eval": {
            "batch": eval_batch,
            "samples_per_s": eval_batch / t_eval,
            "threads": int(best_eval),
            "by_threads": {k: eval_batch / v for k, v in eval_s.items()},
            "mean_sweeps": eval_sweeps,
            "gflops": flops_eval / t_eval / 1e9,
        },
        "bare_ms": {**{k: 1e3 * v for k, v in bare.items()},
                    "step": 1e3 * bare_step(bare, products_run),
                    "step_all_sweeps": 1e3 * bare_step(bare, products_max)},
        "sparse_updates_ms": updates,
        "memory": mem,
    }  # fmt: skip


def main() -> None:
    """Parse the command line, time every configuration, write the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--configs", default="A,B,dense8192", help=f"comma-separated: {', '.join(BENCHES)}"
    )
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats; the best is kept")
    ap.add_argument(
        "--threads", type=int, default=available_cores(), help="CPU threads timed besides 1"
    )
    ap.add_argument("--out", help="also write every result to this JSON file")
    ap.add_argument("--quick", action="store_true", help="few steps, small batches (smoke test)")
    ap.add_argument("--no-cuda-graphs", action="store_true", help="eager batch-16 steps on CUDA")
    ap.add_argument(
        "--kernels", default="torch,auto",
        help="comma-separated learning.kernel values, each timed (auto: what users get)",
    )  # fmt: skip
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in names:
        if c not in BENCHES:
            ap.error(f"unknown config {c!r}; accepted: {', '.join(BENCHES)}")
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    for k in kernels:
        if k not in KERNELS:
            ap.error(f"unknown kernel {k!r}; accepted: {', '.join(KERNELS)}")
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    results = []
    for name in names:
        for kernel in kernels:
            results.append(run_config(name, kernel, args, device))
            done = time.perf_counter() - t0
            print(f"{name} ({kernel}): done after {done:.0f} s", file=sys.stderr)
    # Measured after the runs (big allocations and multi-threaded BLAS first slow down the
    # single-threaded runs), twice: the less disturbed measurement counts.
    with using_threads(args.threads):
        first, again = (machine_limits(device, args.repeats, args.quick) for _ in range(2))
    limits = {k: max(v, again[k]) for k, v in first.items()}
    for r in results:
        r["train"]["fraction_of_sgemm"] = r["train"]["gflops"] / limits["sgemm_gflops"]
        r["train"]["fraction_of_read_bandwidth"] = r["train"]["weight_gbs"] / limits["read_gbs"]
        r["eval"]["fraction_of_sgemm"] = r["eval"]["gflops"] / limits["sgemm_gflops"]
        print(json.dumps(r))
    meta = {
        "command": " ".join(["PYTHONPATH=src python benchmarks/speed.py", *sys.argv[1:]]),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_s": time.perf_counter() - t0,
        **limits,
    }
    print(json.dumps({"meta": meta}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
