"""Zero-temperature dynamics s <- sign(h) of a recurrent chain (SPEC §2).

`relax` runs at most `max_sweeps` sweeps of one schedule under given external fields
(input drive, label field, or anything a theory experiment wants). A sample whose state
is a fixed point (s_i h_i > 0 for every unit) would be left unchanged by any further
sweep, so it simply stops being updated: "a fixed number of sweeps" and "until a fixed
point, with a cap" are the same call, and converged samples cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import SCHEDULES
from .network import Recurrent


def spin_sign(h: Tensor) -> Tensor:
    """sign(h) with sign(0) = +1, in h's dtype."""
    return torch.where(h >= 0, 1.0, -1.0).to(h.dtype)


@dataclass
class Relaxation:
    """Outcome of `relax` for a batch of B samples."""

    states: list[Tensor]  # final s_l, (B, N_l) in {-1, +1}
    internal: list[Tensor]  # internal fields at the final states (no external term)
    fields: list[Tensor]  # total fields external + internal at the final states
    converged: Tensor  # (B,) bool: final state is a fixed point, s_i h_i > 0 for all i
    sweeps: Tensor  # (B,) int64: sweeps run before the state became a fixed point
    trace: list[list[Tensor]] | None = None  # states after every sweep, if asked


def is_fixed_point(
    states: Sequence[Tensor], fields: Sequence[Tensor], kappa: float = 0.0
) -> Tensor:
    """(B,) bool: s_i h_i > kappa for every unit of every module."""
    ok = [(s * h > kappa).all(dim=1) for s, h in zip(states, fields)]
    return torch.stack(ok).all(dim=0)


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
    if states is None:
        s = [e.new_zeros(e.shape) for e in external]
        h_int = [e.new_zeros(e.shape) for e in external] if internal is None else list(internal)
    else:
        s = [t.clone() for t in states]
        h_int = net.internal_fields(s) if internal is None else [t.clone() for t in internal]
    if schedule == "asynchronous":
        return _relax_async(net, external, s, max_sweeps, generator, trace)
    if schedule == "sequential" and net.n_layers > 1:
        return _relax_sequential(net, external, s, max_sweeps, trace)
    return _relax_synchronous(net, external, s, h_int, max_sweeps, trace)


def _relax_synchronous(
    net: Recurrent,
    ext: Sequence[Tensor],
    s: list[Tensor],
    h_int: list[Tensor],
    max_sweeps: int,
    trace: bool,
) -> Relaxation:
    batch = ext[0].shape[0]
    h = [e + i for e, i in zip(ext, h_int)]
    sweeps = torch.full((batch,), max_sweeps, dtype=torch.int64, device=ext[0].device)
    done = torch.zeros(batch, dtype=torch.bool, device=ext[0].device)
    history: list[list[Tensor]] | None = [] if trace else None
    for t in range(max_sweeps):
        stable = is_fixed_point(s, h)
        sweeps[stable & ~done] = t
        done = stable
        active = (~stable).nonzero().squeeze(1)
        n_active = active.numel()
        if n_active == 0:
            if history is not None:
                history.extend([[x.clone() for x in s]] * (max_sweeps - t))
            break
        if n_active == batch:  # whole batch: in place, no gathers
            for sl, hl in zip(s, h):
                sl.copy_(spin_sign(hl))
            new_int = net.internal_fields(s)
            for l in range(len(s)):
                torch.add(ext[l], new_int[l], out=h[l])
                h_int[l] = new_int[l]
        else:
            sub = [spin_sign(hl[active]) for hl in h]
            sub_int = net.internal_fields(sub)
            for l in range(len(s)):
                s[l][active] = sub[l]
                h_int[l][active] = sub_int[l]
                h[l][active] = ext[l][active] + sub_int[l]
        if history is not None:
            history.append([x.clone() for x in s])
    # Samples that settled during the last sweep keep sweeps = max_sweeps.
    return Relaxation(s, h_int, h, is_fixed_point(s, h), sweeps, history)


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
