"""The fused CPU relaxation: one compiled call per phase instead of hundreds of tensor ops.

At batch 16 a sweep of recipe A is ~25 small tensor operations of 2-5 µs of dispatch each,
and the relaxation of a step costs several times its sparse products (docs/speed.md). The
C kernel in ``fused.c`` runs a whole phase (the fixed-point check before every sweep, the
sweep, every module's field) per block of 16 samples, with the block's states in cache and
no Python between sweeps. It is compiled with the system C compiler (``$CC``, else ``cc``)
on first use into a per-user cache, keyed by the source, the flags and the CPU, and loaded
with ctypes: no build step, and a machine without a compiler runs the torch path.

A training step makes one call for its input drives and its three phases
(`phases`, from `darnn.learning.two_phase`); a batch of exactly 16 is split by
units across the threads, larger batches by blocks. The local rule's sparse updates run in
the same library (`darnn.sampled`).

`learning.kernel` chooses ("auto", "torch", "fused"); `choose` decides, `relax_in_place`
runs one phase. Where the fused path cannot run (no compiler, a CUDA device, float64, tanh units,
the asynchronous schedule, a trace) the torch path runs instead; with ``kernel="fused"`` it
says why in one warning line. The kernel sums every product in the order of MKL's CSR
product, so with CSR couplings it reproduces the torch path bit for bit where torch's CSR
product is MKL's (docs/speed.md); with dense couplings (BLAS sums in blocks) the two agree
to float rounding.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .couplings import Coupling, DenseCoupling, IdentityCoupling, SparseCoupling, edits
from .network import Network, Recurrent

SOURCE = Path(__file__).with_name("fused.c")
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-std=c11", "-shared", "-fPIC")
# Threads come from OpenMP (torch's own libgomp where torch uses it); a compiler without
# OpenMP builds the serial kernel.
OPENMP = "-fopenmp"
# Functions and loops on 64-byte lines: the sweeps' speed otherwise moved by 8-13 % with the
# place the linker gave them, i.e. with unrelated code added to the file (docs/speed.md).
ALIGN = ("-falign-functions=64", "-falign-loops=64")
# Dense couplings: the kernel multiplies row by row, BLAS in cache-blocked tiles. On a
# 2-core machine (benchmarks/results-cpu-dense.json) batch-16 training of recipe B at
# N = 256 ran 7 % faster fused on one thread and level on two; at N = 500, 2 % faster on
# one and 16 % slower on two; BLAS wins every large-batch evaluation.
AUTO_DENSE_UNITS = 256
AUTO_DENSE_BATCH = 64
_KINDS = {DenseCoupling: 1, SparseCoupling: 2, IdentityCoupling: 3}


class _Coupling(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int32),
        ("n_out", ctypes.c_int32),
        ("n_in", ctypes.c_int32),
        ("values", ctypes.c_void_p),
        ("crow", ctypes.c_void_p),
        ("col", ctypes.c_void_p),
        ("ccol", ctypes.c_void_p),  # a CSR J's pattern by columns (or NULL): see fused.c
        ("rows", ctypes.c_void_p),
    ]


class _Chain(ctypes.Structure):
    _fields_ = [
        ("n_layers", ctypes.c_int32),
        ("sizes", ctypes.POINTER(ctypes.c_int32)),
        ("J", ctypes.POINTER(_Coupling)),
        ("fwd", ctypes.POINTER(_Coupling)),
        ("bwd", ctypes.POINTER(_Coupling)),
        ("j_d", ctypes.c_float),
    ]


class KernelUnavailable(RuntimeError):
    """The fused kernel could not be compiled or loaded here."""


class FusedKernelWarning(RuntimeWarning):
    """The torch path runs instead of the fused kernel (said once, with the reason)."""


def cache_dir() -> Path:
    """Where compiled kernels are kept: $XDG_CACHE_HOME/darnn/kernels, else ~/.cache/..."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "darnn" / "kernels"


def _cpu_flags() -> str:
    """The CPU's feature flags: a kernel built with -march=native only runs where they match."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(compiler: str | None = None, folder: Path | None = None) -> Path:
    """Compile ``fused.c`` (once per source, flags, compiler and CPU); returns the library.

    Raises:
        KernelUnavailable: no compiler, or it failed (the message says which and why).
    """
    cc = compiler or os.environ.get("CC") or "cc"
    source = SOURCE.read_bytes()
    options = " ".join((*FLAGS, *ALIGN, OPENMP)).encode()
    key = hashlib.sha256(b"\0".join([source, options, cc.encode(), _cpu_flags().encode()]))
    lib_name = f"fused-{key.hexdigest()[:16]}.so"
    folder = folder or cache_dir()
    lib = folder / lib_name
    if lib.exists():
        return lib
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KernelUnavailable(f"cannot write to {folder} ({err.strerror})") from err
    first_error = ""
    for flags in ((*FLAGS, *ALIGN, OPENMP), (*FLAGS, OPENMP), FLAGS):
        error = _compile(cc, flags, folder, lib)
        if error is None:
            return lib
        first_error = first_error or error
    raise KernelUnavailable(first_error)


def _compile(cc: str, flags: tuple[str, ...], folder: Path, lib: Path) -> str | None:
    """Build ``lib`` with these flags; None, or why it failed (one line)."""
    try:
        # Compile beside the target, then rename: concurrent processes never load half a file.
        fd, tmp = tempfile.mkstemp(prefix=".fused-", suffix=".so", dir=folder)
        os.close(fd)
    except OSError as err:
        return f"cannot write to {folder} ({err.strerror})"
    try:
        done = subprocess.run(
            [cc, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["no message"])[0]
            return f"{cc} failed to compile {SOURCE.name}: {first}"
        os.replace(tmp, lib)
        return None
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cannot run the C compiler {cc!r} ({err})"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernel, built on first use; None (with one warning) if it cannot be."""
    try:
        lib = ctypes.CDLL(str(build()))
        fn, phases, update = lib.darnn_relax_f32, lib.darnn_phases_f32, lib.darnn_sampled_update_f32
        post = lib.darnn_post_f32
    except (KernelUnavailable, OSError, AttributeError) as err:  # AttributeError: no symbol
        warnings.warn(f"darnn: the fused CPU kernel is unavailable, using the torch path: {err}",
                      FusedKernelWarning, stacklevel=2)  # fmt: skip
        return None
    # Both entries end in (..., sweeps, converged, threads, chunk, below, align, minimum).
    tail = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float,
            ctypes.c_int32, ctypes.c_int32]  # fmt: skip
    chain, sequential_batch = ctypes.POINTER(_Chain), [ctypes.c_int32, ctypes.c_int64]
    fn.restype = phases.restype = ctypes.c_int
    fn.argtypes = [chain, *sequential_batch, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                   *[ctypes.c_void_p] * 4, *tail]  # fmt: skip
    phases.argtypes = [chain, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                       *sequential_batch, *[ctypes.c_void_p] * 7, *tail]  # fmt: skip
    update.restype = lib.darnn_update_compiled.restype = ctypes.c_int
    update.argtypes = [ctypes.c_int64, *[ctypes.c_void_p] * 5, ctypes.c_int64, ctypes.c_int64,
                       ctypes.c_double, ctypes.c_double, *[ctypes.c_int32] * 3]  # fmt: skip
    post.restype = ctypes.c_int64
    strided = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]  # an array and its strides
    post.argtypes = [ctypes.c_int64, ctypes.c_int64, *strided, *strided, ctypes.c_float,
                     ctypes.c_void_p]  # fmt: skip
    return lib


def unsupported(
    net: Recurrent,
    schedule: str,
    device: torch.device,
    dtype: torch.dtype,
    trace: bool = False,
    chain: Chain | None = None,
) -> str | None:
    """Why the fused kernel cannot relax this network this way, or None if it can."""
    if device.type != "cpu":
        return f"it runs on the CPU, not on {device.type}"
    if dtype != torch.float32:
        return f"it computes in float32, not {str(dtype).removeprefix('torch.')}"
    if getattr(net, "activation", "sign") != "sign":
        return "it runs sign units only (network.activation=sign)"
    if schedule not in ("synchronous", "sequential"):
        return f"it runs the synchronous and sequential schedules, not {schedule}"
    if trace:
        return "it keeps no trace of the states"
    return (chain or chain_of(net)).reason


def choose(
    net: Recurrent,
    kernel: str,
    schedule: str,
    device: torch.device,
    dtype: torch.dtype,
    batch: int,
    trace: bool = False,
) -> Chain | None:
    """The chain `relax` hands the fused kernel, or None when the torch path runs.

    kernel: "auto" picks the fused kernel where it is faster (docs/speed.md): always when
    every coupling is sparse (CSR or one-to-one); with dense couplings only for small
    products, a chain of at most AUTO_DENSE_UNITS units and a batch of at most
    AUTO_DENSE_BATCH (BLAS wins beyond). "fused" asks for it wherever it can run, and
    warns once, saying why, where it cannot. "torch": never.
    """
    if kernel == "torch":
        return None
    chain = chain_of(net)
    reason = unsupported(net, schedule, device, dtype, trace, chain)
    if reason is not None:
        if kernel == "fused":
            _warn_once(f"darnn: learning.kernel=fused runs the torch path here: {reason}")
        return None
    small = sum(net.sizes) <= AUTO_DENSE_UNITS and batch <= AUTO_DENSE_BATCH
    if kernel == "auto" and chain.dense and not small:
        return None
    return chain if library() is not None else None


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, FusedKernelWarning, stacklevel=4)


class Chain:
    """A network's couplings as the kernel reads them (pointers into their tensors)."""

    def __init__(self, net: Recurrent, key: tuple[tuple[int, int | None], ...]) -> None:
        self.key = key  # addresses and index versions: a replaced tensor means a new Chain
        self.sizes = tuple(net.sizes)
        self.starts = [sum(self.sizes[:l]) for l in range(len(self.sizes))]  # of each module
        couplings = _couplings(net)
        present = [c for c in couplings if c is not None]
        self.dense = any(isinstance(c, DenseCoupling) for c in present)
        self.reason = _unsupported_couplings(net, present)  # why the kernel cannot run it
        self.struct: _Chain | None = None
        self._keep: list = []  # the ctypes arrays the struct points into
        if self.reason is None:
            L = net.n_layers
            structs = [_describe(c) for c in couplings]
            by_columns = []
            J = net.J[0]
            if (
                L == 1
                and isinstance(J, SparseCoupling)
                and None not in (edits(J.crow), edits(J.col))
            ):
                # For the skip of fused.c; indices with no edit count (inference tensors)
                # could change unseen, so they get no derived pattern.
                by_columns = list(_by_columns(J))
                structs[0].ccol, structs[0].rows = (t.data_ptr() for t in by_columns)
            arrays = [(_Coupling * L)(*structs[i * L : (i + 1) * L]) for i in range(3)]
            sizes = (ctypes.c_int32 * L)(*net.sizes)
            self.struct = _Chain(L, sizes, *arrays, 0.0)
            self._keep = [sizes, *arrays, *by_columns]


def _by_columns(c: SparseCoupling) -> tuple[Tensor, Tensor]:
    """A CSR coupling's pattern by columns: column pointers (n_in + 1) and the rows (nnz).

    Kept: 4 bytes per stored coupling; while it is built, about 12 more.
    """
    order = torch.argsort(c.col, stable=True)  # int64, the largest temporary
    ccol = torch.zeros(c.n_in + 1, dtype=torch.int32)
    ccol[1:] = torch.bincount(c.col, minlength=c.n_in).cumsum(0)
    counts = c.crow[1:] - c.crow[:-1]
    rows = torch.repeat_interleave(torch.arange(c.n_out, dtype=torch.int32), counts)
    return ccol, rows[order]


def _unsupported_couplings(net: Recurrent, couplings: list[Coupling]) -> str | None:
    if net.n_layers > 64:
        return "it runs chains of at most 64 modules"
    for c in couplings:
        if type(c) not in _KINDS:
            return f"it has no {type(c).__name__}"
        if isinstance(c, SparseCoupling) and c.col.dtype != torch.int32:
            return "it takes int32 CSR indices (fewer than 2^31 stored couplings)"
        if not all(t.is_contiguous() for t in _tensors(c)):
            return "it takes contiguous coupling tensors"
    return None


# Per network, rebuilt when a coupling tensor was replaced (.to(), load_state_dict, a new
# format); in-place weight updates keep the pointers.
_CHAINS: weakref.WeakKeyDictionary[Recurrent, Chain] = weakref.WeakKeyDictionary()


def _couplings(net: Recurrent) -> list[Coupling | None]:
    """J_1..J_L, then forward couplings into modules 1..L, then backward ones out of them."""
    return [*net.J, None, *net.forward_couplings, *net.backward_couplings, None]


def chain_of(net: Recurrent) -> Chain:
    """The network's `Chain`, built once and again only after a tensor was replaced.

    An index tensor changed in place (load_state_dict) also counts: the chain holds a CSR
    J's pattern by columns, derived from its indices.
    """
    key = tuple(
        (t.data_ptr(), 0 if t.is_floating_point() else edits(t))
        for c in _couplings(net) if c is not None for t in _tensors(c)
    )  # fmt: skip
    found = _CHAINS.get(net)
    if found is None or found.key != key:
        found = _CHAINS[net] = Chain(net, key)
    return found


def _tensors(c: Coupling) -> tuple[Tensor, ...]:
    if isinstance(c, SparseCoupling):
        return c.values, c.crow, c.col
    if isinstance(c, DenseCoupling | IdentityCoupling):
        return (c.weight,)
    return ()


def _describe(c: Coupling | None) -> _Coupling:
    if c is None:
        return _Coupling(0, 0, 0, None, None, None)
    ptrs = [t.data_ptr() for t in _tensors(c)]
    return _Coupling(_KINDS[type(c)], c.n_out, c.n_in, *ptrs, *[None] * (5 - len(ptrs)))


def _pointers(ts: Sequence[Tensor]) -> ctypes.Array:
    # Batch-minor float32: (B, N) values in a contiguous (N, B) storage (the callers' layout).
    if any(not t.T.is_contiguous() or t.dtype != torch.float32 for t in ts):
        raise ValueError("the fused kernel takes batch-minor float32 tensors")
    return (ctypes.c_void_p * len(ts))(*[t.data_ptr() for t in ts])


def relax_in_place(
    chain: Chain,
    j_d: float,
    ext: Sequence[Tensor],
    s: Sequence[Tensor],
    h: Sequence[Tensor],
    h_int: Sequence[Tensor],
    sweeps: Tensor,
    *,
    max_sweeps: int,
    sequential: bool,
    unchecked: bool,
    given_internal: bool,
    compaction: tuple[int, float, int, int],
) -> Tensor:
    """One phase of the dynamics of ``chain`` (from `choose`) on batch-minor float32 tensors.

    ``s`` and ``h`` (states and total fields at them) are updated in place, ``h_int`` set
    to the internal fields (kept where no sweep ran if ``given_internal``: it then holds
    them on entry), ``sweeps`` (int64) counts the sweeps each sample ran. ``unchecked``: the
    start is s = 0 and the caller counted the first sweep. ``compaction``: the torch path's
    (chunk, fraction, alignment, minimum size) of dropping settled samples (darnn.dynamics),
    which the kernel follows so that it computes a field afresh exactly where that path
    does. Returns ``converged`` (bool).
    """
    lib, struct = _runnable(chain, j_d)
    batch = ext[0].shape[0]
    converged = torch.empty(batch, dtype=torch.bool)  # the kernel writes bytes 0 and 1
    status = lib.darnn_relax_f32(
        struct, int(sequential), batch, max_sweeps, int(unchecked), int(given_internal),
        _pointers(ext), _pointers(s), _pointers(h), _pointers(h_int),
        sweeps.data_ptr(), converged.data_ptr(), torch.get_num_threads(), *compaction,
    )  # fmt: skip
    _check_status(status, len(ext), compaction)
    return converged


def phases(
    chain: Chain,
    j_d: float,
    inputs: tuple[ctypes.Array, Tensor],
    label: Tensor,
    *,
    max_sweeps: tuple[int, int, int],
    sequential: bool,
    compaction: tuple[int, float, int, int],
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], Tensor, Tensor]:
    """A training step's input drives and its three phases in one call.

    ``inputs``: (`input_couplings`, the batch x, batch-minor float32 (B, D)). The kernel
    computes the drives W_in x, then the warm-up from s = 0 under them, the clamped phase
    (the contiguous ``label`` field (B, N_L) added to the last module's drive) and the free
    phase, each from where the one before ended, with the torch path's arithmetic
    (darnn.learning.three_phases). ``max_sweeps``: the three phases' caps.

    Returns (drives, s, h, h_int, sweeps, converged): one batch-minor (B, N_l) tensor per
    module for the first four (views of one buffer), the last five as the free phase ends
    (see `relax_in_place`).
    """
    lib, struct = _runnable(chain, j_d)
    w_in, x = inputs
    batch, sizes = x.shape[0], chain.sizes
    if not (x.T.is_contiguous() and label.is_contiguous()) or (
        x.dtype != torch.float32
        or label.dtype != torch.float32
        or label.shape != (batch, sizes[-1])
    ):
        raise ValueError("the fused kernel takes batch-minor x and a contiguous label field "
                         "(float32)")  # fmt: skip
    total = sum(sizes)
    # Drives, states, fields, internal fields, then the clamped drive of the last module.
    buf = torch.empty((4 * total + sizes[-1]) * batch, dtype=torch.float32)
    kinds = buf[: 4 * total * batch].view(4, total, batch).transpose(1, 2).unbind(0)
    base, starts = buf.data_ptr(), chain.starts

    def pointers(kind: int) -> ctypes.Array:
        ptrs = [base + 4 * batch * (kind * total + start) for start in starts]
        return (ctypes.c_void_p * len(ptrs))(*ptrs)

    sweeps = torch.empty(batch, dtype=torch.int64)
    converged = torch.empty(batch, dtype=torch.bool)  # the kernel writes bytes 0 and 1
    status = lib.darnn_phases_f32(
        struct, w_in, x.data_ptr(), x.shape[1], int(sequential), batch,
        (ctypes.c_int32 * 3)(*max_sweeps), pointers(0), label.data_ptr(),
        base + 16 * total * batch, pointers(1), pointers(2), pointers(3),
        sweeps.data_ptr(), converged.data_ptr(), torch.get_num_threads(), *compaction,
    )  # fmt: skip
    _check_status(status, len(sizes), compaction)
    drives, s, h, h_int = ([k] if len(sizes) == 1 else [*k.split(sizes, dim=1)] for k in kinds)
    return drives, s, h, h_int, sweeps, converged


_INPUTS: weakref.WeakKeyDictionary[Network, tuple[tuple[int, ...], ctypes.Array]] = (
    weakref.WeakKeyDictionary()
)


def input_couplings(net: Network) -> ctypes.Array:
    """Every module's W_in (dense or CSR; none without input), as the kernel reads it.

    Rebuilt after a tensor was replaced, like `chain_of`.
    """
    key = tuple(t.data_ptr() for w in net.w_in for t in _tensors(w))
    found = _INPUTS.get(net)
    if found is None or found[0] != key:
        missing = [None] * (net.recurrent.n_layers - len(net.w_in))
        structs = [_describe(w) for w in [*net.w_in, *missing]]
        found = _INPUTS[net] = (key, (_Coupling * len(structs))(*structs))
    return found[1]


def _runnable(chain: Chain, j_d: float) -> tuple[ctypes.CDLL, Any]:
    """The loaded library and the chain's struct, with J_D set (set_j_d may change it)."""
    lib = library()
    if lib is None or chain.struct is None:
        raise KernelUnavailable(f"the fused kernel cannot run here: {chain.reason}")
    chain.struct.j_d = j_d
    return lib, ctypes.byref(chain.struct)


def _check_status(status: int, modules: int, compaction: tuple[int, float, int, int]) -> None:
    if status == -2:
        raise ValueError(f"the fused kernel refused its arguments (chain of {modules} "
                         f"modules, chunking {compaction}); run with kernel='torch'")  # fmt: skip
    if status != 0:
        raise MemoryError("the fused kernel could not allocate its working buffers")
