"""Contrastive learning rules (docs/model.md#contrastive-rules).

A free and a clamped relaxation compared.

The paper's dynamical rule never compares a state with the label against one without it;
these two rules do, so the two can be measured side by side on the same network, dynamics,
margins and rates (`learning.rule`).

One batch: the **free phase** relaxes from s = 0 with the input alone for
``warmup_sweeps + free_sweeps`` sweeps (state s^f); the **clamped phase** continues from
s^f with the label field on the last module for ``clamped_sweeps`` sweeps (state s^c).
Fields in the rules are free fields (label excluded), as in the dynamical rule. Then every
learned matrix W with presynaptic activity a takes

    ΔW = η / (√B · √f) · Σ_batch [ p(s¹, h¹) a¹ − p(s², h²) a² ]

* ``contrastive_difference`` (darnax's ``ContrastiveHebbianTrainer``): 1 = free, 2 = clamped,
  and p is the local rule's post-synaptic term, s_i · 1[s_i h_i ≤ κ] (tanh units:
  `darnn.continuous.j_post` for J), for the readout t_c · 1[t_c h^out_c ≤ κ_out] with
  a = s^L: the rule's update at the free state minus its update at the clamped state, the
  sign darnax applies. (darnax's trainer also keeps the label on in its "free" phase,
  through a message-subset name its layer map does not know; darnn's free phase is free.
  docs/model.md#contrastive-rules gives the cross-check.)
* ``contrastive_hebbian`` (Movellan 1991): 1 = clamped, 2 = free, p = s with no margin:
  clamped minus free correlations. The readout is the perceptron of the dynamical rule on
  s^f (the state prediction reads).

Rates, decays (one decay per matrix and step), supports and fixed couplings are those of
the dynamical rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import LearningConfig
from .continuous import j_post
from .dynamics import relax
from .learning import StepStats, at_most
from .network import Network


@dataclass
class Phases:
    """Per-sample outcome of the two relaxations of a batch (B rows each)."""

    free_states: list[Tensor]
    free_fields: list[Tensor]  # free fields at s^f
    clamped_states: list[Tensor]
    clamped_fields: list[Tensor]  # free fields (label excluded) at s^c
    converged: Tensor  # (B,) bool: the free phase ended at a fixed point
    sweeps: Tensor  # (B,) sweeps the free phase ran

    def parts(self) -> list[Tensor]:
        """Every per-sample tensor, for an all-gather (see `from_parts`)."""
        return [
            *self.free_states,
            *self.free_fields,
            *self.clamped_states,
            *self.clamped_fields,
            self.converged.to(self.free_states[0].dtype).unsqueeze(1),
            self.sweeps.to(self.free_states[0].dtype).unsqueeze(1),
        ]

    @classmethod
    def from_parts(cls, parts: list[Tensor], n_modules: int) -> Phases:
        """The phases from their tensors concatenated in one list (a data-parallel gather)."""
        n = n_modules
        return cls(
            list(parts[:n]),
            list(parts[n : 2 * n]),
            list(parts[2 * n : 3 * n]),
            list(parts[3 * n : 4 * n]),
            parts[4 * n].squeeze(1).bool(),
            parts[4 * n + 1].squeeze(1).round().long(),
        )


def relax_phases(
    net: Network,
    x: Tensor,
    y: Tensor,
    cfg: LearningConfig,
    generator: torch.Generator | None = None,
) -> Phases:
    """The free phase from s = 0, then the clamped phase from where it ended."""
    rec = net.recurrent
    drives = net.input_drives(x)
    kw = {"schedule": cfg.schedule, "generator": generator, "kernel": cfg.kernel}
    free = relax(rec, drives, max_sweeps=cfg.warmup_sweeps + cfg.free_sweeps, **kw)
    clamped_ext = [*drives[:-1], drives[-1] + net.label_field(y)]
    clamped = relax(
        rec,
        clamped_ext,
        free.states,
        internal=free.internal,
        max_sweeps=cfg.clamped_sweeps,
        **kw,
    )
    clamped_fields = [torch.add(d, i) for d, i in zip(drives, clamped.internal)]
    return Phases(
        free.states, free.fields, clamped.states, clamped_fields, free.converged, free.sweeps
    )


def learn(net: Network, x: Tensor, y: Tensor, phases: Phases, cfg: LearningConfig) -> StepStats:
    """Apply the contrastive update of ``cfg.rule`` for a relaxed batch.

    Returns the step's statistics (readout accuracy, unstable units and convergence of the
    free state).
    """
    c = net.config
    rec = net.recurrent
    batch = x.shape[0]
    inv_sqrt_b = 1.0 / math.sqrt(batch)
    offset = rec.j_d_value if cfg.margin_convention == "offdiag" else 0.0
    hebbian = cfg.rule == "contrastive_hebbian"
    tanh = c.activation == "tanh"

    def posts(s: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Post-synaptic terms of W_in, J and the forward inter-module coupling at (s, h)."""
        if hebbian:
            return s, s, s
        stability = s * h
        post_in = at_most(stability, cfg.kappa_in + offset).mul_(s)
        if tanh:
            post_j = j_post(s, h, cfg.kappa_j + offset, cfg.tanh_rule, cfg.tanh_tolerance)
        else:
            post_j = at_most(stability, cfg.kappa_j + offset).mul_(s)
        post_inter = at_most(stability, cfg.kappa_inter + offset).mul_(s)
        return post_in, post_j, post_inter

    def update(coupling, post: Tensor, pre: Tensor, lr: float, decay: float, fan_in: float) -> None:  # type: ignore[no-untyped-def]
        if lr or decay:
            coupling.add_outer_(post, pre, alpha=lr * inv_sqrt_b / math.sqrt(fan_in), decay=decay)

    def both(plus: Tensor, minus: Tensor) -> Tensor:
        """Rows of the added term, then of the subtracted one: one product sums both."""
        return torch.cat([plus, minus])

    sf, hf = phases.free_states, phases.free_fields
    sc, hc = phases.clamped_states, phases.clamped_fields
    # The difference rule adds the free state's update and subtracts the clamped state's
    # (darnax's sign); Hebbian learning adds the clamped correlations, subtracts the free.
    (s1, h1), (s2, h2) = ((sc, hc), (sf, hf)) if hebbian else ((sf, hf), (sc, hc))
    for l in range(len(sf)):
        p1, p2 = posts(s1[l], h1[l]), posts(s2[l], h2[l])
        if l < len(net.w_in):
            fan = net.n_features * c.w_in_density
            update(net.w_in[l], p1[0] - p2[0], x, cfg.lr_in, cfg.decay_in, fan)
        fan = sf[l].shape[1] * c.j_density
        update(rec.J[l], both(p1[1], -p2[1]), both(s1[l], s2[l]), cfg.lr_j, cfg.decay_j, fan)
        if cfg.learn_inter and l > 0:
            update(
                rec.forward_couplings[l - 1],
                both(p1[2], -p2[2]),
                both(s1[l - 1], s2[l - 1]),
                cfg.lr_inter,
                cfg.decay_inter,
                net.inter_fan_in(l),
            )
    t = net.targets(y)
    h_out_free = net.readout(sf[-1])  # before W_out changes
    post_free = at_most(t * h_out_free, cfg.kappa_out).mul_(t)
    n_last = sf[-1].shape[1]
    if hebbian:
        update(net.w_out, post_free, sf[-1], cfg.lr_out, cfg.decay_out, n_last)
    else:
        post_clamped = at_most(t * net.readout(sc[-1]), cfg.kappa_out).mul_(t)
        update(
            net.w_out,
            both(post_free, -post_clamped),
            both(sf[-1], sc[-1]),
            cfg.lr_out,
            cfg.decay_out,
            n_last,
        )
    unstable = at_most(sf[-1] * hf[-1], cfg.kappa_j + offset)
    return StepStats(
        batch_size=batch,
        correct=(h_out_free.argmax(dim=1) == y).sum(),
        unstable=unstable.mean(),
        converged=phases.converged.sum(),
        free_sweeps=phases.sweeps.sum(),
    )


__all__ = ["Phases", "learn", "relax_phases"]
