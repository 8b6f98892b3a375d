"""Continuous units s = tanh(h) in [-1, 1] (docs/model.md#continuous-units).

`network.activation: tanh` replaces the hidden units' sign by tanh, as darnax's
`RecurrentTanh` does. The dynamics run a fixed number of sweeps (there is no binary fixed
point to stop at); `converged` then reports whether one more sweep would move every unit
of a sample by at most `CONVERGED_TOL` (a numerical fixed point of s = tanh(h)).

The couplings J learn by one of two rules (``learning.tanh_rule``), each with the per-unit
tolerance τ = ``learning.tanh_tolerance``; W_in, learned inter-module couplings and the
readout keep the perceptron rule with margin, with the continuous s in place of the spin
(as darnax's fully connected adapters do):

* ``delta``: post_i = (s_i − tanh(h_i)) (1 − tanh(h_i)²) · 1[|s_i − tanh(h_i)| ≥ τ];
* ``truncated``: post_i = s_i · 1[s_i h_i ≤ κ_J] · 1[1 − |tanh(h_i)| < τ]: the binary rule,
  applied only to units that tanh has (nearly) saturated.

h is the free field at s (label excluded), as for binary units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .couplings import batch_minor
from .dynamics import Relaxation
from .network import Recurrent

# A sample has converged when one more sweep would move no unit by more than this.
CONVERGED_TOL = 1e-5


def is_continuous(net: Recurrent) -> bool:
    """Does this chain have tanh units (set by `Network` from network.activation)?"""
    return getattr(net, "activation", "sign") == "tanh"


def relax_continuous(
    net: Recurrent,
    external: Sequence[Tensor],
    states: Sequence[Tensor] | None,
    internal: Sequence[Tensor] | None,
    *,
    max_sweeps: int,
    schedule: str,
    trace: bool,
) -> Relaxation:
    """`darnn.dynamics.relax` for tanh units: exactly `max_sweeps` sweeps of s <- tanh(h).

    Reached through `relax`, which holds the defaults and checks the shapes.

    "synchronous": every module from the old state; "sequential": modules bottom to top,
    each from the state the modules below have just reached (darnax's orchestrator). The
    asynchronous schedule flips binary units one at a time and is refused.
    """
    if schedule not in ("synchronous", "sequential"):
        raise ValueError(
            f"schedule={schedule!r} cannot run tanh units (network.activation=tanh); use "
            "synchronous or sequential"
        )
    ext = [batch_minor(e) for e in external]
    s, h = _start(net, ext, states, internal)
    history: list[list[Tensor]] | None = [] if trace else None
    sequential = schedule == "sequential" and net.n_layers > 1
    for _ in range(max_sweeps):
        for l in range(net.n_layers):
            if sequential and l > 0:  # the modules below have moved
                net.layer_total_field_(l, s, ext[l], h[l])
            torch.tanh(h[l], out=s[l])
        net.total_fields_(s, ext, h)
        if history is not None:
            history.append([x.clone() for x in s])
    h_int = [torch.sub(hl, el) for hl, el in zip(h, ext)]
    batch = ext[0].shape[0]
    sweeps = torch.full((batch,), max_sweeps, dtype=torch.int64, device=ext[0].device)
    return Relaxation(s, h_int, h, _largest_move(s, h) <= CONVERGED_TOL, sweeps, history)


def _start(
    net: Recurrent,
    ext: list[Tensor],
    states: Sequence[Tensor] | None,
    internal: Sequence[Tensor] | None,
) -> tuple[list[Tensor], list[Tensor]]:
    """Batch-minor copies of the starting states (default 0) and their total fields."""
    s = (
        [torch.zeros_like(e) for e in ext]
        if states is None
        else [batch_minor(t.clone()) for t in states]
    )
    if internal is not None:
        return s, [batch_minor(torch.add(e, i)) for e, i in zip(ext, internal)]
    h = [torch.empty_like(e) for e in ext]
    net.total_fields_(s, ext, h)
    return s, h


def _largest_move(s: list[Tensor], h: list[Tensor]) -> Tensor:
    """Per sample, the largest |tanh(h_i) - s_i|: how far one more sweep would move it."""
    moved = None
    for sl, hl in zip(s, h):
        m = torch.tanh(hl).sub_(sl).abs_().amax(dim=1)
        moved = m if moved is None else torch.maximum(moved, m)
    assert moved is not None
    return moved


def j_post(s: Tensor, h: Tensor, kappa: float, rule: str, tolerance: float) -> Tensor:
    """The post-synaptic term of J's rule for tanh units (see the module docstring)."""
    o = torch.tanh(h)
    if rule == "delta":
        err = s - o
        gate = torch.ge(err.abs(), tolerance, out=torch.empty_like(err))
        return err.mul_(o.mul_(o).neg_().add_(1.0)).mul_(gate)
    if rule == "truncated":
        mistake = torch.le(s * h, kappa, out=torch.empty_like(s))
        saturated = torch.lt(o.abs_().neg_().add_(1.0), tolerance, out=torch.empty_like(s))
        return mistake.mul_(saturated).mul_(s)
    raise ValueError(f"tanh_rule={rule!r} is not valid; accepted values: delta, truncated")


__all__ = ["CONVERGED_TOL", "is_continuous", "j_post", "relax_continuous"]
