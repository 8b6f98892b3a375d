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
* the machine's limits: dense sgemm GFLOP/s and memory read bandwidth, and the GFLOP/s
  (useful products only) and GB/s (weights streamed) the runs achieve.

Configurations: A (SPEC §4 A: N=2000, J 99% sparse as CSR, W_in 90% sparse, raw pixels),
B (SPEC §4 B: dense N=1600, binarised inputs, 7+7 sweeps) and dense8192 (recipe B at
N=8192). Inputs are Fashion-MNIST when installed, else random sparse images.

    PYTHONPATH=src python benchmarks/speed.py --out benchmarks/results-cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import darnn.learning as learning
from darnn.config import LearningConfig, NetworkConfig
from darnn.couplings import Coupling, SparseCoupling
from darnn.data import load_dataset
from darnn.dynamics import spin_sign
from darnn.learning import StepStats, evaluate, learning_step
from darnn.network import Network

BATCH = 16


@dataclass
class Recipe:
    net: NetworkConfig
    learn: LearningConfig
    binarised: bool  # inputs sign(x R) in {-1, +1} (SPEC §4 B), else pixels in [0, 1]
    eval_batch: int
    train_steps: int  # timed steps per repeat


def recipe_a() -> Recipe:
    """SPEC §4 A (the authors' JAX "sparse MNIST" recipe)."""
    p_in, p_j, n, d = 0.9, 0.99, 2000, 784
    lr_in, lr_j, lr_out = 0.159 / math.sqrt(1 - p_in), 0.058 / math.sqrt(1 - p_j), 0.17
    net = NetworkConfig(
        hidden=(n,), j_d=0.95, j_density=1 - p_j, w_in_density=1 - p_in, w_in_strength=5.0,
        w_back_strength=1.3, label_encoding="rescaled", sparse_format="csr",
    )  # fmt: skip
    learn = LearningConfig(
        warmup_sweeps=1, clamped_sweeps=5, free_sweeps=5, eval_sweeps=5,
        kappa_in=1.78, kappa_j=1.78, kappa_out=7.0, lr_in=lr_in, lr_j=lr_j, lr_out=lr_out,
        # decays are "times the rate / sqrt(fan_in)" (SPEC §4 A)
        decay_in=0.01 * lr_in / math.sqrt(d * (1 - p_in)),
        decay_j=6e-5 * lr_j / math.sqrt(n * (1 - p_j)),
        decay_out=0.02 * lr_out / math.sqrt(n),
    )  # fmt: skip
    return Recipe(net, learn, binarised=False, eval_batch=8192, train_steps=300)


def recipe_b(n: int = 1600) -> Recipe:
    """SPEC §4 B (the authors' PyTorch code; Fashion-MNIST strengths), 7+7 sweeps."""
    net = NetworkConfig(hidden=(n,), j_d=0.5, w_in_strength=3.0, w_back_strength=0.7,
                        label_encoding="pm1")  # fmt: skip
    learn = LearningConfig(
        warmup_sweeps=1, clamped_sweeps=7, free_sweeps=7, eval_sweeps=7,
        margin_convention="offdiag", kappa_in=0.9, kappa_j=0.9, kappa_out=3.0,
        lr_j=0.005, lr_out=0.1, lr_in=0.03 * 3.0, decay_j=0.005, decay_out=0.005,
    )  # fmt: skip
    if n <= 2000:
        return Recipe(net, learn, binarised=True, eval_batch=4096, train_steps=100)
    return Recipe(net, learn, binarised=True, eval_batch=512, train_steps=8)


RECIPES: dict[str, Callable[[], Recipe]] = {
    "A": recipe_a,
    "B": recipe_b,
    "dense8192": lambda: recipe_b(8192),
}


# ----------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(
    fn: Callable[[], object], device: torch.device, repeats: int, inner: int = 1
) -> tuple[float, float]:
    """Best (wall, CPU) seconds per call of `inner` back-to-back calls, over `repeats` tries.

    CPU time is what this process used (all its threads): for a single-threaded run on a
    machine other jobs keep busy, it is what the run takes on a core of its own."""
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
def load_inputs(binarised: bool, n_train: int, n_eval: int) -> tuple[Tensor, Tensor, Tensor, str]:
    """(X_train, y_train, X_eval, source): Fashion-MNIST if installed, else random images."""
    try:
        kind = "binarised" if binarised else None
        d = load_dataset("fashion-mnist", download=False, limit_train=n_train, transform=kind)
        X, y, Xe = (torch.from_numpy(a) for a in (d.X_train, d.y_train, d.X_test))
        Xe = Xe.repeat(math.ceil(n_eval / Xe.shape[0]), 1)[:n_eval]  # tile up to the batch
        return X, y, Xe.contiguous(), "fashion-mnist"
    except Exception as err:  # not installed: MNIST-like sparse images in [0, 1]
        print(json.dumps({"note": f"fashion-mnist unavailable ({err}); random images"}))
        g = torch.Generator().manual_seed(0)
        n = n_train + n_eval
        X = torch.rand(n, 784, generator=g) * (torch.rand(n, 784, generator=g) < 0.5)
        if binarised:
            X = torch.where(X @ torch.randn(784, 784, generator=g) >= 0, 1.0, -1.0)
        y = torch.randint(0, 10, (n_train,), generator=g)
        return X[:n_train], y, X[n_train:], "random"


# ----------------------------------------------------------------------------- measurements
def model_memory(net: Network) -> dict[str, object]:
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
    """Sweeps per phase, as a mean over samples and as J products per step (a batch is
    swept until its slowest sample settles), from an untimed pass of `steps` steps."""
    calls: list[Tensor] = []
    real = learning.relax

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        calls.append(out.sweeps)
        return out

    learning.relax = spy  # learning_step makes three relax calls: warm-up, clamped, free
    try:
        for i in range(start, start + steps):
            rows = torch.arange(i * BATCH, (i + 1) * BATCH, device=X.device) % X.shape[0]
            learning_step(net, X[rows], y[rows], cfg)
    finally:
        learning.relax = real
    phases = ("warmup", "clamped", "free")
    return {
        "mean_sweeps": {p: sum(float(c.float().mean()) for c in calls[k::3]) / steps
                        for k, p in enumerate(phases)},
        "J_products": {p: sum(int(c.max()) for c in calls[k::3]) / steps
                       for k, p in enumerate(phases)},
    }  # fmt: skip


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


def authors_style_step(net: Network, cfg: LearningConfig) -> Callable[[Tensor, Tensor], None]:
    """A training step done the way the authors' JAX library does it, for comparison: masked
    couplings as dense matrices, the input drive recomputed at every sweep, every sweep run.
    (Weights stored pre-masked; the mask is applied once per update; elementwise work uses
    the same fast float kernels as darnn, as XLA would fuse it. Works on copies.)"""
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
    """Capture one batch-16 training step as a CUDA graph; each call replays it on a new
    batch (launch overhead gone). relax does not sync while a graph is being captured."""
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
def run_config(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    recipe = RECIPES[name]()
    lc = recipe.learn
    steps = max(4, recipe.train_steps // (8 if args.quick else 1))
    eval_batch = min(recipe.eval_batch, 512) if args.quick else recipe.eval_batch
    warm = min(30, 2 * steps)
    n_train = BATCH * (warm + 2 * (args.repeats + 1) * steps + 40)  # every step new data
    X, y, Xe, source = load_inputs(recipe.binarised, n_train, eval_batch)
    X, y, Xe = X.to(device), y.to(device), Xe.to(device)
    net = Network(recipe.net, X.shape[1], 10, seed=0, device=device)

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
        torch.set_num_threads(threads)
        keys = [str(threads)] + (["1cpu"] if threads == 1 and device.type == "cpu" else [])
        times = best_time(lambda: train(steps), device, args.repeats)
        bare = bare_kernels(net, device, args.repeats)
        t_eval = best_time(run_eval, device, args.repeats)
        for i, key in enumerate(keys):
            step_s[key] = times[i] / steps
            bare_s[key] = {k: v[i] for k, v in bare.items()}
            eval_s[key] = t_eval[i]
    torch.set_num_threads(args.threads)
    # The authors' way, same machine, same batches, at the thread count that suits it best.
    naive = authors_style_step(net, lc)
    naive_steps = max(2, steps // 10)
    batches = [(X[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
               for i in range(naive_steps)]  # fmt: skip
    naive_s = math.inf
    for threads in sorted({1, args.threads}) if device.type == "cpu" else [args.threads]:
        torch.set_num_threads(threads)
        t_naive = best_time(lambda: [naive(xb, yb) for xb, yb in batches], device, args.repeats)
        naive_s = min(naive_s, t_naive[0] / naive_steps)
    torch.set_num_threads(args.threads)
    walls = [k for k in step_s if k.isdigit()]
    best = min(walls, key=step_s.__getitem__)
    t_step, bare = step_s[best], bare_s[best]
    best_eval = min(walls, key=eval_s.__getitem__)
    t_eval = eval_s[best_eval]
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
        "device": str(device),
        "cuda_graphs": graphs,
        "inputs": source,
        "hidden": list(net.sizes),
        "j_density": recipe.net.j_density,
        "w_in_density": recipe.net.w_in_density,
        "max_sweeps": {"warmup": lc.warmup_sweeps, "clamped": lc.clamped_sweeps,
                       "free": lc.free_sweeps, "eval": lc.warmup_sweeps + lc.eval_sweeps},
        "train": {
            "batch": BATCH,
            "samples_per_s": BATCH / t_step,
            "threads": int(best),
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
        "memory": mem,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--configs", default="A,B,dense8192", help="comma-separated: A, B, dense8192")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats; the best is kept")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads")
    ap.add_argument("--out", help="also write every result to this JSON file")
    ap.add_argument("--quick", action="store_true", help="few steps, small batches (smoke test)")
    ap.add_argument("--no-cuda-graphs", action="store_true", help="eager batch-16 steps on CUDA")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in names:
        if c not in RECIPES:
            ap.error(f"unknown config {c!r}; accepted: {', '.join(RECIPES)}")
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    results = []
    for name in names:
        results.append(run_config(name, args, device))
        print(f"{name}: done after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    # Measured after the runs (big allocations and multi-threaded BLAS first slow down the
    # single-threaded runs), twice: the less disturbed measurement counts.
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
