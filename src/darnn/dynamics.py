"""Zero-temperature dynamics s <- sign(h) of a recurrent chain (docs/model.md#fixed-points).

`relax` runs at most `max_sweeps` sweeps of one schedule under given external fields
(input drive, label field, or anything a theory experiment wants). A sample whose state
is a fixed point (s_i h_i > 0 for every unit) would be left unchanged by any further
sweep, so "a fixed number of sweeps" and "until a fixed point, with a cap" are the same
call: every schedule stops when every sample has settled.

A schedule is one function, a `Sweep` (see `make_sweep`): one sweep of every unit, in
place, given the states, the external fields and the total fields at the states. One
driver, `relax`, does the rest for all of them: the start, the fixed-point check before
every sweep, the sweep counts, the trace, dropping settled samples from the working set
and running a large CPU batch chunk by chunk (`chunk_size` decides). The field itself is
computed in one place, `Recurrent.layer_total_field_`. On the CPU a whole phase can run in
one call of the fused kernel instead (`darnn.fused`, ``relax(..., kernel=...)``), which
follows this driver's rules (start, checks, counts, chunks, compaction) sample for sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from . import fused
from .asynchronous import AsynchronousSweep
from .checks import check_choice
from .config import KERNELS, SCHEDULES
from .couplings import SparseCoupling, batch_minor
from .network import Recurrent

# On the CPU a large batch is relaxed in chunks of this many samples: with CSR couplings
# the (N, chunk) states and fields of a chunk then stay in cache between the sweeps (2x
# faster than 4096 at once). Dense products (BLAS) run best on wide operands: there the
# chunk only bounds the memory of the working set. See `chunk_size`.
_RELAX_CHUNK = 128
_DENSE_CHUNK = 4096
# Settled samples are dropped from the working set (a gather of the rest) once less than
# this fraction of it is still active. A CSR product costs about as much per sample as the
# gather, so it waits until half of the set has settled; a dense product costs ~N times
# more, so it drops them as soon as one has settled (fraction 1.0), but keeps a multiple of
# _DENSE_ALIGN samples (BLAS slows down ~1.5x on rows of odd length; the batch is the
# contiguous dimension). Below _COMPACT_MIN samples a product's cost hardly depends on the
# batch: never compact.
_COMPACT_SPARSE = 0.5
_COMPACT_DENSE = 1.0
_DENSE_ALIGN = 16
_COMPACT_MIN = 32
Sweep = Callable[[list[Tensor], Sequence[Tensor], list[Tensor], "Tensor | None"], None]
"""One sweep of a schedule: ``sweep(states, external, fields, active)``.

Updates every unit of every module once, in place. On entry `fields` are the total fields
(external + internal) at `states`; on exit they are the total fields at the new states.
`active` is None or a (B,) bool tensor marking the samples that are not yet at a fixed
point; a sweep may leave the others alone (a fixed point never moves under any schedule).
"""


def spin_sign(h: Tensor, out: Tensor | None = None) -> Tensor:
    """The spin of each field: +1 where h >= 0, else -1, in h's dtype.

    Args:
        h: Fields of any shape.
        out: Tensor of h's shape and dtype to write into; a new one if None.

    Returns:
        The spins, ``out`` if given.
    """
    # Float-only ops: CPU kernels with bool inputs or outputs (where, >=) run 10-30x slower.
    out = torch.ge(h, 0, out=torch.empty_like(h) if out is None else out)
    return out.mul_(2).sub_(1)


def _unstable_counts(
    states: Sequence[Tensor],
    fields: Sequence[Tensor],
    kappa: float = 0.0,
    scratch: Sequence[Tensor] | None = None,
) -> Tensor:
    """(B,) number of units with s_i h_i <= kappa, as floats (exact up to 2^24 units)."""
    count = None
    for l, (s, h) in enumerate(zip(states, fields)):
        sh = torch.mul(s, h) if scratch is None else torch.mul(s, h, out=scratch[l])
        c = sh.le_(kappa).sum(dim=1)
        count = c if count is None else count.add_(c)
    assert count is not None
    return count


@dataclass
class Relaxation:
    """Outcome of `relax` for a batch of B samples."""

    states: list[Tensor]  # final s_l, (B, N_l) in {-1, +1}
    internal: list[Tensor]  # internal fields at the final states (fields - external)
    fields: list[Tensor]  # total fields external + internal at the final states
    converged: Tensor  # (B,) bool: final state is a fixed point, s_i h_i > 0 for all i
    sweeps: Tensor  # (B,) int64: sweeps run before the state became a fixed point
    trace: list[list[Tensor]] | None = None  # states after every sweep, if asked


def is_fixed_point(
    states: Sequence[Tensor], fields: Sequence[Tensor], kappa: float = 0.0
) -> Tensor:
    """Whether each sample is a fixed point: s_i h_i > kappa for every unit of every module.

    Args:
        states: One (B, N_l) tensor of spins ±1 per module.
        fields: The total fields at ``states``, shaped like them.
        kappa: The margin (0: plain stability).

    Returns:
        (B,) bool.
    """
    return _unstable_counts(states, fields, kappa) == 0


# ----------------------------------------------------------------------------- schedules
def make_sweep(net: Recurrent, schedule: str, generator: torch.Generator | None = None) -> Sweep:
    """The `Sweep` of a schedule on `net`.

    "synchronous": every unit of every module from the old state (one product per module).
    "sequential": modules one after the other, each synchronously from the state the
        modules below it have just reached.
    "asynchronous": one unit at a time, in an independent random order per sample and
        sweep drawn from `generator` (default: seed 0); the loop over units runs on the CPU.
    """
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "asynchronous":
        return AsynchronousSweep(net, generator)

    def synchronous(
        s: list[Tensor], ext: Sequence[Tensor], h: list[Tensor], active: Tensor | None
    ) -> None:
        for sl, hl in zip(s, h):
            spin_sign(hl, out=sl)
        net.total_fields_(s, ext, h)

    def sequential(
        s: list[Tensor], ext: Sequence[Tensor], h: list[Tensor], active: Tensor | None
    ) -> None:
        for l in range(net.n_layers):
            if l > 0:  # the modules below have moved: this module's field is out of date
                net.layer_total_field_(l, s, ext[l], h[l])
            spin_sign(h[l], out=s[l])
        net.total_fields_(s, ext, h)

    # With one module the two are the same computation.
    return synchronous if schedule == "synchronous" or net.n_layers == 1 else sequential


# ----------------------------------------------------------------------------- the driver
def _sparse(net: Recurrent) -> bool:
    return all(isinstance(j, SparseCoupling) for j in net.J)


def _compaction(net: Recurrent) -> tuple[float, int]:
    """(active fraction below which settled samples are dropped, alignment of the rest)."""
    return (_COMPACT_SPARSE, 1) if _sparse(net) else (_COMPACT_DENSE, _DENSE_ALIGN)


def chunk_size(
    net: Recurrent, schedule: str = "synchronous", device: torch.device | str = "cpu"
) -> int | None:
    """Samples per chunk when a batch is relaxed (or evaluated) piece by piece.

    None means the whole batch at once. The one place that decides it (`relax`,
    `evaluate`):

    * only on the CPU, where a chunk's states and fields then stay in cache between the
      sweeps; an accelerator wants the whole batch;
    * never for the asynchronous schedule: its random unit orders are drawn for the whole
      batch at once, so chunks would change the result;
    * 128 samples with CSR couplings, 4096 with dense ones (see the constants).
    """
    dev = device if isinstance(device, torch.device) else torch.device(device)
    if dev.type != "cpu" or schedule == "asynchronous":
        return None
    return _RELAX_CHUNK if _sparse(net) else _DENSE_CHUNK


def relax(
    net: Recurrent,
    external: Sequence[Tensor],
    states: Sequence[Tensor] | None = None,
    *,
    max_sweeps: int,
    schedule: str = "synchronous",
    internal: Sequence[Tensor] | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
    kernel: str = "auto",
) -> Relaxation:
    """Run the dynamics from ``states`` (default all zero) under ``external`` fields.

    Sweeps run until every sample is at a fixed point (s_i h_i > 0 for every unit; a
    sample that has settled stays put) or ``max_sweeps`` have run
    (docs/model.md#sweep-schedules). None of the given tensors is modified. Tanh units
    (network.activation=tanh) run `darnn.continuous.relax_continuous` instead.

    Args:
        net: The modules and their couplings (J_l, J_D, inter-module couplings).
        external: One (B, N_l) tensor of external fields per module (input drive, label
            field), constant during the call.
        states: One (B, N_l) tensor of spins ±1 per module to start from; zeros if None.
        max_sweeps: Sweeps at most (>= 0; 0 returns the start with its fields).
        schedule: "synchronous" (every unit from the previous state), "sequential" (module
            after module) or "asynchronous" (one unit at a time, in random order).
        internal: The internal fields at ``states`` if the caller already has them (they
            are then not recomputed: consecutive phases share them).
        generator: Random stream of the asynchronous schedule's unit orders.
        trace: Also keep the states after every sweep (``Relaxation.trace``).
        kernel: "torch" (tensor operations), "fused" (one compiled call per phase on the
            CPU, `darnn.fused`) or "auto" (fused where it is faster). Equal results to
            float rounding.

    Returns:
        A `Relaxation`: final states, internal and total fields, which samples ended at a
        fixed point, and the sweeps each ran.

    Raises:
        ValueError: An unknown schedule or kernel, a negative ``max_sweeps``, or tensors
            whose number, shapes or batch sizes do not match ``net``.
    """
    check_choice("schedule", schedule, SCHEDULES)
    if max_sweeps < 0:
        raise ValueError(f"max_sweeps={max_sweeps} is not valid; it must be >= 0")
    check_choice("kernel", kernel, KERNELS)
    _check_shapes(net, external, states, internal)
    if getattr(net, "activation", "sign") == "tanh":
        from .continuous import relax_continuous

        return relax_continuous(
            net, external, states, internal, max_sweeps=max_sweeps, schedule=schedule, trace=trace
        )
    ref = external[0]
    chain = fused.choose(net, kernel, schedule, ref.device, ref.dtype, ref.shape[0], trace)
    start = _Start(external, states, internal)
    if chain is not None:
        return _relax_fused(net, chain, start, max_sweeps, schedule)
    sweep = make_sweep(net, schedule, generator)
    chunk = None if trace else chunk_size(net, schedule, ref.device)
    if chunk is None or ref.shape[0] <= chunk:
        return _relax_batch(net, sweep, start, max_sweeps, trace)

    def part(rows: slice) -> Relaxation:
        return _relax_batch(net, sweep, start.rows(rows), max_sweeps, False)

    return _in_chunks(part, ref, net.sizes, chunk)


@dataclass(frozen=True)
class _Start:
    """A relaxation's start as given: external fields, states (None: zero), internal fields."""

    external: Sequence[Tensor]
    states: Sequence[Tensor] | None
    internal: Sequence[Tensor] | None

    def rows(self, rows: slice) -> _Start:
        def cut(ts: Sequence[Tensor] | None) -> list[Tensor] | None:
            return None if ts is None else [t[rows] for t in ts]

        return _Start([e[rows] for e in self.external], cut(self.states), cut(self.internal))

    def from_zero(self, max_sweeps: int) -> bool:
        """From s = 0 every unit is unstable (s_i h_i = 0): the first sweep needs no check."""
        return self.states is None and self.internal is None and max_sweeps > 0


def _in_chunks(
    part: Callable[[slice], Relaxation], like: Tensor, sizes: Sequence[int], chunk: int
) -> Relaxation:
    """``part(rows)`` for every ``chunk`` rows of a batch shaped like ``like``, assembled."""
    batch, dev = like.shape[0], like.device

    def full() -> list[Tensor]:  # batch-minor results, filled chunk by chunk
        return [like.new_empty(n, batch).T for n in sizes]

    s, h_int, h = full(), full(), full()
    converged = torch.empty(batch, dtype=torch.bool, device=dev)
    sweeps = torch.empty(batch, dtype=torch.int64, device=dev)
    for a in range(0, batch, chunk):
        rows = slice(a, a + chunk)
        r = part(rows)
        for dst, src in zip([*s, *h_int, *h], [*r.states, *r.internal, *r.fields]):
            dst[rows] = src
        converged[rows], sweeps[rows] = r.converged, r.sweeps
    return Relaxation(s, h_int, h, converged, sweeps)


def _check_shapes(
    net: Recurrent,
    external: Sequence[Tensor],
    states: Sequence[Tensor] | None,
    internal: Sequence[Tensor] | None,
) -> None:
    batch = external[0].shape[0] if len(external) else 0
    for name, given in (("external", external), ("states", states), ("internal", internal)):
        if given is None:
            continue
        if len(given) != net.n_layers:
            raise ValueError(
                f"{name} needs one tensor per module ({net.n_layers}), got {len(given)}"
            )
        for l, (t, n) in enumerate(zip(given, net.sizes)):
            if t.shape != (batch, n):
                raise ValueError(
                    f"{name}[{l}] must have shape ({batch}, {n}), got {tuple(t.shape)}"
                )


def _copy_bm(t: Tensor) -> Tensor:
    """A batch-minor copy the dynamics may overwrite (always a copy: never the caller's)."""
    return t.T.clone(memory_format=torch.contiguous_format).T


def _relax_batch(
    net: Recurrent, sweep: Sweep, start: _Start, max_sweeps: int, trace: bool
) -> Relaxation:
    """Sweeps of one batch held in the batch-minor layout (see couplings.py).

    A fixed point is left unchanged by a sweep, so sweeping the whole batch until every
    sample has settled gives the same states as stopping each sample on its own. Settled
    samples are dropped from the working set (`_WorkingSet.compact`) when that pays. A
    synchronous sweep allocates nothing: it updates s and the total field h in place; the
    internal field is recovered once, at the end, as h - external.
    """
    full_ext = [batch_minor(e) for e in start.external]
    s, h, h_int = _starting_fields(net, full_ext, start)
    unchecked = start.from_zero(max_sweeps)
    work = _WorkingSet(net, s, h, full_ext, first_sweep_counted=unchecked, trace=trace)
    history: list[list[Tensor]] | None = [] if trace else None
    settled = False
    for t in range(max_sweeps):
        active = None
        if not (t == 0 and unchecked):
            active = work.unstable()
            if active is None:
                settled = True
                break
        sweep(work.s, work.ext, work.h, active)
        h_int = None
        if history is not None:
            history.append([x.clone() for x in work.s])
    if history is not None and len(history) < max_sweeps:
        history.extend([[x.clone() for x in work.s]] * (max_sweeps - len(history)))
    s, h, sweeps = work.results()
    if h_int is None:
        h_int = [torch.sub(hl, el) for hl, el in zip(h, full_ext)]
    else:  # no sweep ran: the exact given fields, as new tensors
        h_int = [t.clone() for t in h_int]
    # Samples that settled during the last sweep keep sweeps = max_sweeps.
    converged = torch.ones_like(sweeps, dtype=torch.bool) if settled else is_fixed_point(s, h)
    return Relaxation(s, h_int, h, converged, sweeps, history)


def _relax_fused(
    net: Recurrent, chain: fused.Chain, start: _Start, max_sweeps: int, schedule: str
) -> Relaxation:
    """`relax`'s torch path in one call of the fused kernel.

    The same start, sweep counts and, where a sum is exact, the same bits: the kernel follows
    the chunks and the compaction of `_WorkingSet`, so a field is computed afresh (rather
    than kept as given) for exactly the samples the torch path sweeps.
    """
    full_ext = [batch_minor(e) for e in start.external]
    batch = full_ext[0].shape[0]
    s, h, given = _starting_fields(net, full_ext, start)
    unchecked = start.from_zero(max_sweeps)
    h_int = (
        [torch.empty_like(e) for e in full_ext] if given is None else [_copy_bm(t) for t in given]
    )
    sweeps = torch.full((batch,), int(unchecked), dtype=torch.int64)
    converged = fused.relax_in_place(
        chain, net.j_d_value, full_ext, s, h, h_int, sweeps, max_sweeps=max_sweeps,
        sequential=schedule == "sequential", unchecked=unchecked, given_internal=given is not None,
        compaction=fused_compaction(net, schedule, batch),
    )  # fmt: skip
    return Relaxation(s, h_int, h, converged, sweeps)


def fused_compaction(net: Recurrent, schedule: str, batch: int) -> tuple[int, float, int, int]:
    """The chunks and compaction of this driver, as the fused kernel follows them."""
    below, align = _compaction(net)
    return chunk_size(net, schedule, torch.device("cpu")) or batch, below, align, _COMPACT_MIN


def _starting_fields(
    net: Recurrent, ext: list[Tensor], start: _Start
) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
    """The (states, total fields, given internal fields or None) the sweeps start from.

    Batch-minor copies that the sweeps may overwrite; ``ext`` is the batch-minor external.
    """
    states, internal = start.states, start.internal
    s = [torch.zeros_like(e) for e in ext] if states is None else [_copy_bm(t) for t in states]
    if internal is not None:
        return s, [batch_minor(torch.add(e, i)) for e, i in zip(ext, internal)], list(internal)
    if states is None:
        return s, [e.clone() for e in ext], None  # the internal field of s = 0 is exactly 0
    h = [torch.empty_like(e) for e in ext]
    net.total_fields_(s, ext, h)
    return s, h, None


class _WorkingSet:
    """The samples of a batch still being swept, and the sweeps each has taken.

    Settled samples are dropped ("compacted") when that pays: with CSR couplings once half
    of a large working set has settled, with dense ones as soon as one has (see the
    constants); the rows dropped are kept in full-size results. While a CUDA graph is being
    captured nothing may sync: then every sweep runs on the whole batch, which leaves the
    same states (a fixed point stays put).
    """

    def __init__(
        self,
        net: Recurrent,
        s: list[Tensor],
        h: list[Tensor],
        ext: list[Tensor],
        *,
        first_sweep_counted: bool,
        trace: bool,
    ) -> None:
        batch, dev = ext[0].shape[0], ext[0].device
        self.s, self.h, self.ext = s, h, list(ext)
        self.scratch = [torch.empty_like(x) for x in s]
        start = torch.ones if first_sweep_counted else torch.zeros
        self.sweeps = start(batch, dtype=torch.int64, device=dev)
        self.idx: Tensor | None = None  # original rows of the working set, once compacted
        self.done: list[Tensor] | None = None  # full-size results, once compacted
        self.compact_below, self.align = _compaction(net)
        self.sync = not _capturing(dev)
        self.may_compact = self.sync and not trace

    def unstable(self) -> Tensor | None:
        """The mask of working samples the next sweep must update (counting that sweep).

        None once every sample has settled.
        """
        active = _unstable_counts(self.s, self.h, scratch=self.scratch) > 0
        n_active = int(active.sum()) if self.sync else -1  # the one host sync per sweep
        if n_active == 0:
            return None
        self.sweeps += active
        size = active.shape[0]
        if self.may_compact and size >= _COMPACT_MIN and n_active < self.compact_below * size:
            return self.compact(active)
        return active

    def compact(self, active: Tensor) -> Tensor:
        """Keep only the active rows; returns the mask of the new working set.

        The rows are padded with settled ones to the alignment (those never change).
        """
        self.done = _write_rows(self.done, self.idx, [*self.s, *self.h, self.sweeps.view(-1, 1)])
        keep = active.nonzero().squeeze(1)
        pad = (-keep.numel()) % self.align
        if pad:
            keep = torch.cat([keep, (~active).nonzero().squeeze(1)[:pad]]).sort().values
        self.idx = keep if self.idx is None else self.idx[keep]
        self.s, self.h, self.ext, self.scratch = (
            _take(xs, keep) for xs in (self.s, self.h, self.ext, self.scratch)
        )
        self.sweeps = self.sweeps[keep]
        return active[keep]

    def results(self) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Full-batch states, total fields and sweep counts."""
        if self.done is None:
            return self.s, self.h, self.sweeps
        done = _write_rows(self.done, self.idx, [*self.s, *self.h, self.sweeps.view(-1, 1)])
        k = len(self.s)
        return done[:k], done[k:-1], done[-1].view(-1)


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _write_rows(done: list[Tensor] | None, idx: Tensor | None, work: list[Tensor]) -> list[Tensor]:
    """Copy the working rows into the full-size results (created on the first call)."""
    if done is None:  # first compaction: the working set is still the whole batch
        return [w.clone() for w in work]
    assert idx is not None
    for d, w in zip(done, work):
        d.T.index_copy_(1, idx, w.T)  # columns of the (N, B) storage
    return done


def _take(xs: list[Tensor], keep: Tensor) -> list[Tensor]:
    """Rows ``keep`` of batch-minor tensors, batch-minor again.

    A gather of columns of their (N, B) storage.
    """
    return [x.T.index_select(1, keep).T for x in xs]
