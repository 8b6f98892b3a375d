"""Zero-temperature dynamics s <- sign(h) of a recurrent chain (SPEC §2).

`relax` runs at most `max_sweeps` sweeps of one schedule under given external fields
(input drive, label field, or anything a theory experiment wants). A sample whose state
is a fixed point (s_i h_i > 0 for every unit) would be left unchanged by any further
sweep, so "a fixed number of sweeps" and "until a fixed point, with a cap" are the same
call. The synchronous schedule stops when every sample has settled, and in large batches
stops updating settled samples once they are the majority (see `_relax_chunk`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import SCHEDULES
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
# gather, so it waits for half; a dense product costs ~N times more, so it never waits,
# but keeps a multiple of _DENSE_ALIGN samples (BLAS slows down ~1.5x on rows of odd
# length; the batch is the contiguous dimension). Below _COMPACT_MIN samples a product's
# cost hardly depends on the batch: never compact.
_COMPACT_SPARSE = 0.5
_DENSE_ALIGN = 16
_COMPACT_MIN = 32


def spin_sign(h: Tensor, out: Tensor | None = None) -> Tensor:
    """sign(h) with sign(0) = +1, in h's dtype (into `out` if given)."""
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
    """(B,) bool: s_i h_i > kappa for every unit of every module."""
    return _unstable_counts(states, fields, kappa) == 0


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
) -> Relaxation:
    """Run the dynamics from `states` (default all zero) under `external` fields.

    external: one (B, N_l) tensor per module, constant during the call.
    internal: the internal fields at `states` if the caller already has them (they are
        then not recomputed: consecutive phases share them).
    schedule: "synchronous" (every module from the old state), "sequential" (modules one
        after the other, each synchronously) or "asynchronous" (one unit at a time in an
        independent random order per sample and sweep; runs on the CPU).
    """
    if schedule not in SCHEDULES:
        raise ValueError(
            f"schedule={schedule!r} is not valid; accepted values: {', '.join(SCHEDULES)}"
        )
    if max_sweeps < 0:
        raise ValueError(f"max_sweeps={max_sweeps} is not valid; it must be >= 0")
    if len(external) != net.n_layers:
        raise ValueError(
            f"external needs one field per module ({net.n_layers}), got {len(external)}"
        )
    batch = external[0].shape[0]
    for l, (e, n) in enumerate(zip(external, net.sizes)):
        if e.shape != (batch, n):
            raise ValueError(f"external[{l}] must have shape ({batch}, {n}), got {tuple(e.shape)}")
    if schedule == "synchronous" or (schedule == "sequential" and net.n_layers == 1):
        return _relax_synchronous(net, external, states, internal, max_sweeps, trace)
    s = [e.new_zeros(e.shape) for e in external] if states is None else [t.clone() for t in states]
    if schedule == "asynchronous":
        return _relax_async(net, external, s, max_sweeps, generator, trace)
    return _relax_sequential(net, external, s, max_sweeps, trace)


def _sparse(net: Recurrent) -> bool:
    return all(isinstance(j, SparseCoupling) for j in net.J)


def chunk_size(net: Recurrent) -> int:
    """Samples per chunk when a large CPU batch is relaxed (or evaluated) chunk by chunk."""
    return _RELAX_CHUNK if _sparse(net) else _DENSE_CHUNK


def _relax_synchronous(
    net: Recurrent,
    ext: Sequence[Tensor],
    states: Sequence[Tensor] | None,
    internal: Sequence[Tensor] | None,
    max_sweeps: int,
    trace: bool,
) -> Relaxation:
    """Samples are independent: on the CPU a large batch runs chunk by chunk, so that a
    chunk's states and fields stay in cache during its sweeps."""
    batch, chunk = ext[0].shape[0], chunk_size(net)
    if trace or batch <= chunk or ext[0].device.type != "cpu":
        return _relax_chunk(net, ext, states, internal, max_sweeps, trace)

    def full() -> list[Tensor]:  # batch-minor results, filled chunk by chunk
        return [ext[0].new_empty(n, batch).T for n in net.sizes]

    s, h_int, h = full(), full(), full()
    converged = torch.empty(batch, dtype=torch.bool, device=ext[0].device)
    sweeps = torch.empty(batch, dtype=torch.int64, device=ext[0].device)
    for a in range(0, batch, chunk):
        rows = slice(a, a + chunk)
        r = _relax_chunk(
            net,
            [e[rows] for e in ext],
            None if states is None else [t[rows] for t in states],
            None if internal is None else [t[rows] for t in internal],
            max_sweeps,
            False,
        )
        for dst, src in zip([*s, *h_int, *h], [*r.states, *r.internal, *r.fields]):
            dst[rows] = src
        converged[rows], sweeps[rows] = r.converged, r.sweeps
    return Relaxation(s, h_int, h, converged, sweeps)


def _copy_bm(t: Tensor) -> Tensor:
    """A batch-minor copy the dynamics may overwrite."""
    return t.T.contiguous().T


def _relax_chunk(
    net: Recurrent,
    ext: Sequence[Tensor],
    states: Sequence[Tensor] | None,
    internal: Sequence[Tensor] | None,
    max_sweeps: int,
    trace: bool,
) -> Relaxation:
    """Synchronous sweeps on one batch held in the batch-minor layout (see couplings.py).

    A fixed point is left unchanged by a sweep, so sweeping the whole batch until every
    sample has settled gives the same states as stopping each sample on its own. Settled
    samples are only dropped (written out, "compacted") once they are the majority of a
    large working set; each sweep then costs one product per module on the active ones.
    A sweep allocates nothing: it updates s and the total field h in place; the internal
    field is recovered once, at the end, as h - external.
    """
    ext = full_ext = [batch_minor(e) for e in ext]
    batch, dev = ext[0].shape[0], ext[0].device
    history: list[list[Tensor]] | None = [] if trace else None
    h_int: list[Tensor] | None = None  # the given internal fields, until a sweep runs
    first = 0
    if states is None and internal is None and max_sweeps > 0:
        # From s = 0 every unit is unstable (s_i h_i = 0): the first sweep needs no check.
        s = [spin_sign(e) for e in ext]
        h = [torch.empty_like(e) for e in ext]
        net.total_fields_(s, ext, h)
        sweeps = torch.ones(batch, dtype=torch.int64, device=dev)
        first = 1
        if history is not None:
            history.append([x.clone() for x in s])
    else:
        if states is None:
            s = [torch.zeros_like(e) for e in ext]
            h_int = [torch.zeros_like(e) for e in ext] if internal is None else list(internal)
        else:
            s = [_copy_bm(t) for t in states]
            h_int = net.internal_fields(s) if internal is None else list(internal)
        h = [torch.add(e, i) for e, i in zip(ext, h_int)]
        sweeps = torch.zeros(batch, dtype=torch.int64, device=dev)
    scratch = [torch.empty_like(x) for x in s]
    idx: Tensor | None = None  # original rows of the working set, once compacted
    done: list[Tensor] | None = None  # full-size results, once compacted
    settled = False
    compact_below, align = (_COMPACT_SPARSE, 1) if _sparse(net) else (1.0, _DENSE_ALIGN)
    # While a CUDA graph is being captured nothing may sync: then every sweep runs on the
    # whole batch, which leaves the same states (a fixed point stays put).
    sync = not _capturing(dev)
    for _ in range(first, max_sweeps):
        active = _unstable_counts(s, h, scratch=scratch) > 0
        n_active = int(active.sum()) if sync else -1  # the one host sync per sweep
        if n_active == 0:
            settled = True
            break
        sweeps += active
        size = active.shape[0]
        if sync and not trace and size >= _COMPACT_MIN and n_active < compact_below * size:
            done = _write_rows(done, idx, [*s, *h, sweeps.view(-1, 1)])
            keep = active.nonzero().squeeze(1)
            pad = (-keep.numel()) % align  # filled with settled samples: they never change
            if pad:
                keep = torch.cat([keep, (~active).nonzero().squeeze(1)[:pad]]).sort().values
            idx = keep if idx is None else idx[keep]
            s, h, ext, scratch = (_take(xs, keep) for xs in (s, h, ext, scratch))
            sweeps = sweeps[keep]
        for sl, hl in zip(s, h):
            spin_sign(hl, out=sl)
        net.total_fields_(s, ext, h)
        h_int = None
        if history is not None:
            history.append([x.clone() for x in s])
    if history is not None and len(history) < max_sweeps:
        history.extend([[x.clone() for x in s]] * (max_sweeps - len(history)))
    if done is not None:
        done = _write_rows(done, idx, [*s, *h, sweeps.view(-1, 1)])
        k = len(s)
        s, h, sweeps = done[:k], done[k:-1], done[-1].view(-1)
    if h_int is None:
        h_int = [torch.sub(hl, el) for hl, el in zip(h, full_ext)]
    else:  # no sweep ran: the exact given fields, as new tensors
        h_int = [t.clone() for t in h_int]
    # Samples that settled during the last sweep keep sweeps = max_sweeps.
    converged = torch.ones_like(sweeps, dtype=torch.bool) if settled else is_fixed_point(s, h)
    return Relaxation(s, h_int, h, converged, sweeps, history)


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
    """Rows `keep` of batch-minor tensors: a gather of columns of their (N, B) storage,
    so the result is batch-minor again."""
    return [x.T.index_select(1, keep).T for x in xs]


def _relax_sequential(
    net: Recurrent, ext: Sequence[Tensor], s: list[Tensor], max_sweeps: int, trace: bool
) -> Relaxation:
    batch = ext[0].shape[0]
    dev = ext[0].device
    sweeps = torch.full((batch,), max_sweeps, dtype=torch.int64, device=dev)
    active = torch.arange(batch, device=dev)
    history: list[list[Tensor]] | None = [] if trace else None
    for t in range(max_sweeps):
        sub = [x[active] for x in s]
        unchanged = torch.ones(active.numel(), dtype=torch.bool, device=dev)
        stable = torch.ones_like(unchanged)
        for l in range(net.n_layers):
            hl = ext[l][active] + net.layer_field(l, sub)
            stable &= (sub[l] * hl > 0).all(dim=1)
            new = spin_sign(hl)
            unchanged &= (new == sub[l]).all(dim=1)
            sub[l] = new
        for l in range(net.n_layers):
            s[l][active] = sub[l]
        # No unit moved during the sweep, so every field was evaluated at the final state.
        fixed = unchanged & stable
        sweeps[active[fixed]] = t
        active = active[~fixed]
        if history is not None:
            history.append([x.clone() for x in s])
        if active.numel() == 0:
            if history is not None:
                history.extend([[x.clone() for x in s]] * (max_sweeps - t - 1))
            break
    h_int = net.internal_fields(s)
    h = [e + i for e, i in zip(ext, h_int)]
    return Relaxation(s, h_int, h, is_fixed_point(s, h), sweeps, history)


def _relax_async(
    net: Recurrent,
    ext: Sequence[Tensor],
    s: list[Tensor],
    max_sweeps: int,
    generator: torch.Generator | None,
    trace: bool,
) -> Relaxation:
    """One unit at a time. The loop over units belongs to the algorithm; it runs in NumPy
    (about 1 us per step) and keeps the fields up to date with a rank-1 update per flip."""
    batch, sizes = ext[0].shape[0], net.sizes
    dev, dtype = ext[0].device, ext[0].dtype
    K = net.dense_matrix().to("cpu", torch.float64).numpy()
    KT = np.ascontiguousarray(K.T)  # row j: effect of unit j on every unit
    e = torch.cat([x.to("cpu", torch.float64) for x in ext], dim=1).numpy()
    state = torch.cat([x.to("cpu", torch.float64) for x in s], dim=1).numpy().copy()
    n = state.shape[1]
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    sweeps = np.full(batch, max_sweeps, dtype=np.int64)
    active = np.arange(batch)
    history: list[list[Tensor]] | None = [] if trace else None

    def split(arr: np.ndarray) -> list[Tensor]:
        t = torch.from_numpy(arr.copy()).to(dev, dtype)
        return list(t.split(list(sizes), dim=1))

    for t in range(max_sweeps):
        # Fresh fields each sweep, so rank-1 updates never accumulate rounding.
        h = e[active] + state[active] @ KT
        st = state[active]
        stable = (st * h > 0).all(axis=1)
        sweeps[active[stable]] = t
        active, h, st = active[~stable], h[~stable], st[~stable]
        if active.size == 0:
            if history is not None:
                history.extend([split(state)] * (max_sweeps - t))
            break
        order = torch.rand(active.size, n, generator=gen).argsort(dim=1).numpy()
        rows = np.arange(active.size)
        for step in range(n):
            idx = order[:, step]
            new = np.where(h[rows, idx] >= 0, 1.0, -1.0)
            delta = new - st[rows, idx]
            moved = np.flatnonzero(delta)
            if moved.size:
                st[moved, idx[moved]] = new[moved]
                h[moved] += delta[moved, None] * KT[idx[moved]]
        state[active] = st
        if history is not None:
            history.append(split(state))
    h_all = e + state @ KT
    s_out = split(state)
    fields = split(h_all)
    h_int = [f - x for f, x in zip(fields, ext)]
    converged = is_fixed_point(s_out, fields)
    return Relaxation(s_out, h_int, fields, converged, torch.from_numpy(sweeps).to(dev), history)
