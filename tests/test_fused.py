"""The fused CPU kernel (darnn.fused) against the torch path it replaces.

The two compute the same sums in different orders. So that the comparisons are exact and
portable (no rounding anywhere can decide a spin), every weight, field and input lies on a
dyadic grid and the learning rates are powers of two: every sum and update is then exact
in float32, in any order, and the two paths must agree bit for bit.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from darnn import fused
from darnn.config import LearningConfig, NetworkConfig
from darnn.dynamics import relax
from darnn.learning import dynamics_kernels, evaluate, learning_step, three_phases, two_phase
from darnn.network import Network

pytestmark = pytest.mark.skipif(
    fused.library() is None, reason="no C compiler here: the fused kernel cannot be built"
)

D = 64  # input features
GRID = {"j_d": 0.5, "label_encoding": "pm1"}  # dyadic constants
CHAINS = {
    "csr-1": NetworkConfig(hidden=(64,), j_density=0.25, w_in_density=0.25, sparse_format="csr",
                           **GRID),
    "csr-2": NetworkConfig(hidden=(64, 64), j_density=0.25, w_in_density=0.25,
                           sparse_format="csr", inter="sparse", inter_fan_in=3, **GRID),
    "dense-1": NetworkConfig(hidden=(64,), j_density=1.0, w_in_density=1.0, **GRID),
    "dense-2": NetworkConfig(hidden=(64, 64), j_density=1.0, w_in_density=1.0, **GRID),
}  # fmt: skip
# Rates 1 make every update alpha = 1 / sqrt(B * fan_in) a power of two (B = 1 or 16; fan-ins
# 16 or 64); margins on the grid; no decay (1 - decay would leave the grid).
RULE = LearningConfig(schedule="sequential", kappa_in=0.5, kappa_j=0.5, kappa_out=1.0,
                      lr_in=1.0, lr_j=1.0, lr_out=1.0)  # fmt: skip


def network(name: str | NetworkConfig, seed: int = 0) -> Network:
    """One of CHAINS (or the given config), its weights on the dyadic grid."""
    net = Network(CHAINS[name] if isinstance(name, str) else name, D, 10, seed=seed)
    for t in [*net.parameters(), *net.buffers()]:
        if t.is_floating_point():
            t.data = torch.round(t.data * 64) / 64  # masks (0/1) and J_D = 0.5 stay as they are
    return net


def inputs(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.rand(batch, D, generator=g) * 16) / 16
    return x, torch.randint(0, 10, (batch,), generator=g)


def assert_same_relaxation(a, b) -> None:  # type: ignore[no-untyped-def]
    for name in ("states", "fields", "internal"):
        for ta, tb in zip(getattr(a, name), getattr(b, name)):
            assert torch.equal(ta, tb), name
    assert torch.equal(a.sweeps, b.sweeps)
    assert torch.equal(a.converged, b.converged)


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("schedule", ["synchronous", "sequential"])
@pytest.mark.parametrize("batch", [1, 16, 37])
def test_relax_matches_the_torch_path(name: str, schedule: str, batch: int) -> None:
    net = network(name)
    x, y = inputs(batch)
    drives = net.input_drives(x)
    kw = {"schedule": schedule, "max_sweeps": 6}
    ref = relax(net.recurrent, drives, kernel="torch", **kw)
    assert_same_relaxation(ref, relax(net.recurrent, drives, kernel="fused", **kw))
    # A second phase from where the first ended, under another field (the clamped phase).
    clamped = [*drives[:-1], drives[-1] + net.label_field(y)]
    start = {"states": ref.states, "internal": ref.internal, "max_sweeps": 3}
    ref2 = relax(net.recurrent, clamped, kernel="torch", schedule=schedule, **start)
    got2 = relax(net.recurrent, clamped, kernel="fused", schedule=schedule, **start)
    assert_same_relaxation(ref2, got2)
    # From given states without their fields, and with no sweep at all.
    for sweeps in (0, 2):
        a = relax(net.recurrent, drives, ref.states, kernel="torch", schedule=schedule,
                  max_sweeps=sweeps)  # fmt: skip
        b = relax(net.recurrent, drives, ref.states, kernel="fused", schedule=schedule,
                  max_sweeps=sweeps)  # fmt: skip
        assert_same_relaxation(a, b)


@pytest.mark.parametrize("hidden", [(160,), (128, 128)])
@pytest.mark.parametrize("schedule", ["synchronous", "sequential"])
def test_a_team_of_threads_on_one_block_gives_the_same_bits(
    hidden: tuple[int, ...], schedule: str
) -> None:
    """A batch of 16 on a chain this large is split by units across the threads."""
    from darnn.threads import using_threads

    net = network(NetworkConfig(hidden=hidden, j_density=1.0, w_in_density=1.0, **GRID))
    drives = net.input_drives(inputs(16)[0])
    kw = {"schedule": schedule, "max_sweeps": 8}
    ref = relax(net.recurrent, drives, kernel="torch", **kw)
    for threads in (1, 2, 3):
        with using_threads(threads):
            assert_same_relaxation(ref, relax(net.recurrent, drives, kernel="fused", **kw))
            start = {"states": ref.states, "internal": ref.internal}
            assert_same_relaxation(
                relax(net.recurrent, drives, kernel="torch", **start, **kw),
                relax(net.recurrent, drives, kernel="fused", **start, **kw),
            )


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("batch", [1, 16, 37])
@pytest.mark.parametrize("caps", [(1, 5, 5), (0, 2, 0), (2, 0, 3)])
def test_the_three_phases_in_one_call_equal_three_relaxations(
    name: str, batch: int, caps: tuple[int, int, int]
) -> None:
    """two_phase's single fused call ends where three relax calls (either kernel) end."""
    net = network(name)
    x, y = inputs(batch)
    sweeps = dict(zip(("warmup_sweeps", "clamped_sweeps", "free_sweeps"), caps))
    cfg = dataclasses.replace(RULE, **sweeps)
    drives, got = two_phase(net, x, y, dataclasses.replace(cfg, kernel="fused"))
    for kernel in ("torch", "fused"):
        ref_drives, phases = three_phases(net, x, y, dataclasses.replace(cfg, kernel=kernel))
        assert all(torch.equal(a, b) for a, b in zip(drives, ref_drives))
        assert_same_relaxation(phases[-1], got)


def test_the_one_call_keeps_float32_whatever_the_default_dtype() -> None:
    net = network("csr-1")
    x, y = inputs(16)
    cfg = dataclasses.replace(RULE, kernel="fused")
    ref_drives, ref = two_phase(net, x, y, cfg)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        drives, got = two_phase(net, x, y, cfg)
    finally:
        torch.set_default_dtype(default)
    assert all(t.dtype == torch.float32 for t in (*drives, *got.states, *got.fields))
    assert all(torch.equal(a, b) for a, b in zip(drives, ref_drives))
    assert_same_relaxation(ref, got)


@pytest.mark.parametrize("name", ["csr-2", "dense-2"])
def test_the_one_call_computes_every_module_s_drive(name: str) -> None:
    """With input to every module (network.input_to_all), each W_in x as the torch path."""
    net = network(dataclasses.replace(CHAINS[name], input_to_all=True))
    x, y = inputs(16)
    cfg = dataclasses.replace(RULE, kernel="fused")
    drives, got = two_phase(net, x, y, cfg)
    ref_drives, phases = three_phases(net, x, y, dataclasses.replace(cfg, kernel="torch"))
    assert len(net.w_in) == 2
    assert all(torch.equal(a, b) for a, b in zip(drives, ref_drives))
    assert_same_relaxation(phases[-1], got)


def test_a_batch_of_the_wrong_shape_is_refused_before_the_kernel_reads_it() -> None:
    net = network("csr-1")
    x, y = inputs(16)
    cfg = dataclasses.replace(RULE, kernel="fused")
    for bad_x, bad_y in ((x[:, :-3], y), (x, y[:15]), (x, y.view(4, 4))):
        with pytest.raises(ValueError, match=rf"x must have shape \(B, {D}\) and y shape"):
            two_phase(net, bad_x, bad_y, cfg)


def test_the_inputs_are_not_modified() -> None:
    net = network("csr-1")
    drives = net.input_drives(inputs(16)[0])
    start = relax(net.recurrent, drives, max_sweeps=1, kernel="torch")
    copies = [[t.clone() for t in ts] for ts in (drives, start.states, start.internal)]
    relax(net.recurrent, drives, start.states, internal=start.internal, max_sweeps=4,
          kernel="fused")  # fmt: skip
    for given, copy in zip((drives, start.states, start.internal), copies):
        assert all(torch.equal(a, b) for a, b in zip(given, copy))


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("batch", [1, 16, 64])
def test_training_gives_the_same_weights(name: str, batch: int) -> None:
    nets = {k: network(name, seed=3) for k in ("torch", "fused")}
    x, y = inputs(6 * batch, seed=4)
    stats = {}
    for kernel, net in nets.items():
        cfg = dataclasses.replace(RULE, kernel=kernel)
        for i in range(6):
            rows = slice(i * batch, (i + 1) * batch)
            stats[kernel] = learning_step(net, x[rows], y[rows], cfg)
    ref, got = (n.state_dict() for n in nets.values())
    assert not torch.equal(ref["w_out.weight"], network(name, seed=3).w_out.weight)  # learnt
    for key in ref:
        assert torch.equal(got[key], ref[key]), key
    for field in ("correct", "unstable", "converged", "free_sweeps"):
        assert torch.equal(getattr(stats["torch"], field), getattr(stats["fused"], field)), field
    scores = [
        evaluate(net, x, y, dataclasses.replace(RULE, kernel=k))["scores"]
        for k, net in nets.items()
    ]
    assert torch.equal(scores[0], scores[1])


def test_auto_picks_the_faster_kernel() -> None:
    cpu, f32 = torch.device("cpu"), torch.float32

    def fused_runs(rec, kernel: str, batch: int) -> bool:  # type: ignore[no-untyped-def]
        return fused.choose(rec, kernel, "synchronous", cpu, f32, batch=batch) is not None

    sparse = network("csr-2").recurrent
    assert fused_runs(sparse, "auto", 4096)
    assert not fused_runs(sparse, "torch", 16)
    small = network("dense-1").recurrent
    assert fused_runs(small, "auto", 16)
    assert not fused_runs(small, "auto", 4096)
    assert fused_runs(small, "fused", 4096)
    big = Network(NetworkConfig(hidden=(600,), j_density=1.0), D, 10, seed=0).recurrent
    assert not fused_runs(big, "auto", 16)
    assert fused.unsupported(sparse, "asynchronous", cpu, f32) is not None
    assert fused.unsupported(sparse, "synchronous", cpu, torch.float64) is not None


def test_kernel_fused_where_it_cannot_run_warns_once_and_runs_the_torch_path() -> None:
    net = network("csr-1").to(torch.float64)
    drives = net.input_drives(inputs(8)[0].double())
    with pytest.warns(RuntimeWarning, match="runs the torch path here: it computes in float32"):
        got = relax(net.recurrent, drives, max_sweeps=4, kernel="fused")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not at every call
        relax(net.recurrent, drives, max_sweeps=4, kernel="fused")
    assert_same_relaxation(relax(net.recurrent, drives, max_sweeps=4, kernel="torch"), got)


def test_dynamics_kernel_names_the_choice() -> None:
    net = network("csr-1")
    assert dynamics_kernels(net, LearningConfig(), 16, 4096) == {"train": "fused", "eval": "fused"}
    assert dynamics_kernels(net, LearningConfig(kernel="torch"), 16, 16)["train"] == "torch"
    assert (
        dynamics_kernels(net, LearningConfig(schedule="asynchronous"), 16, 16)["train"] == "torch"
    )


def test_an_unknown_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="kernel='numba' is not valid; accepted values: auto"):
        LearningConfig(kernel="numba")
    net = network("csr-1")
    with pytest.raises(ValueError, match="kernel='gpu' is not valid"):
        relax(net.recurrent, net.input_drives(inputs(2)[0]), max_sweeps=1, kernel="gpu")


def test_a_missing_compiler_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(fused.KernelUnavailable, match="cannot run the C compiler"):
        fused.build(compiler=str(tmp_path / "no-such-cc"), folder=tmp_path)
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: error: out of licences' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(fused.KernelUnavailable, match=r"failed to compile fused\.c: cc: error"):
        fused.build(compiler=str(broken), folder=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["cc"]  # no partial library left behind


def test_without_a_compiler_the_torch_path_runs_after_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no library built before
    fused.library.cache_clear()
    try:
        net = network("csr-1")
        drives = net.input_drives(inputs(16)[0])
        with pytest.warns(RuntimeWarning, match="fused CPU kernel is unavailable, using the torch"):
            got = relax(net.recurrent, drives, max_sweeps=5, kernel="fused")
        assert_same_relaxation(relax(net.recurrent, drives, max_sweeps=5, kernel="torch"), got)
        assert dynamics_kernels(net, LearningConfig(), 16, 16)["train"] == "torch"
    finally:
        fused.library.cache_clear()


def test_the_library_is_built_once_per_source_and_cpu(tmp_path: Path) -> None:
    first = fused.build(folder=tmp_path)
    assert fused.build(folder=tmp_path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_the_cli_says_it_once_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "darnn", "train", "--quiet", "--out", str(tmp_path / "run"),
         "data.name=digits", "data.limit_train=200", "train.epochs=1", "network.hidden=[32]"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    notice = [line for line in done.stderr.splitlines() if "fused" in line]
    assert notice == [
        f"darnn: the fused CPU kernel is unavailable, using the torch path: cannot run the C "
        f"compiler {str(tmp_path / 'no-such-cc')!r} ([Errno 2] No such file or directory: "
        f"{str(tmp_path / 'no-such-cc')!r})"
    ]
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"kernel": "torch"' in metrics


def test_a_damaged_library_in_the_cache_is_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    name = fused.build().name  # the cache is keyed: write garbage where the library would be
    lib = fused.cache_dir() / name
    lib.write_bytes(b"\x7fELF not really a library")
    fused.library.cache_clear()
    try:
        with pytest.warns(fused.FusedKernelWarning, match="unavailable, using the torch path"):
            assert fused.library() is None
    finally:
        fused.library.cache_clear()


def test_arguments_the_kernel_refuses_are_a_clear_error() -> None:
    net = network("csr-1")
    ext = [d.T.contiguous().T for d in net.input_drives(inputs(37)[0])]
    s, h, h_int = ([torch.zeros_like(e) for e in ext] for _ in range(3))
    sweeps = torch.zeros(37, dtype=torch.int64)
    chain = fused.chain_of(net.recurrent)
    with pytest.raises(ValueError, match=r"refused its arguments .* run with kernel='torch'"):
        fused.relax_in_place(
            chain, 0.5, ext, s, h, h_int, sweeps, max_sweeps=2, sequential=False,
            unchecked=True, given_internal=False, compaction=(7, 0.5, 1, 32),
        )  # fmt: skip


def test_the_chain_is_rebuilt_when_indices_change_in_place() -> None:
    # The chain holds a single CSR module's pattern by columns (for the skip of unchanged
    # fields): an in-place change of the indices, as load_state_dict makes, must rebuild it.
    net = network("csr-1")
    rec = net.recurrent
    first = fused.chain_of(rec)
    assert fused.chain_of(rec) is first
    rec.J[0].values.data.mul_(1.0)  # weights change in place at every step: same chain
    assert fused.chain_of(rec) is first
    rec.J[0].col.mul_(1)
    assert fused.chain_of(rec) is not first
    drives = net.input_drives(inputs(16)[0])
    kw = {"max_sweeps": 6, "schedule": "synchronous"}
    assert_same_relaxation(
        relax(rec, drives, kernel="torch", **kw), relax(rec, drives, kernel="fused", **kw)
    )


def test_indices_without_an_edit_count_get_no_derived_pattern() -> None:
    # Inference tensors keep no version: a pattern derived from them could go stale unseen.
    with torch.inference_mode():
        net = network("csr-1")
        chain = fused.chain_of(net.recurrent)
        assert chain.struct is not None and chain.struct.J[0].ccol is None
        drives = net.input_drives(inputs(16)[0])
        kw = {"max_sweeps": 6, "schedule": "synchronous"}
        assert_same_relaxation(
            relax(net.recurrent, drives, kernel="torch", **kw),
            relax(net.recurrent, drives, kernel="fused", **kw),
        )
    assert fused.chain_of(network("csr-1").recurrent).struct.J[0].ccol is not None
