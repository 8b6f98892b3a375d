"""The two-phase training step and the local perceptron rule with margin.

Definitions: docs/model.md#the-learning-step and docs/model.md#the-local-rule.

One batch: warm-up (input only) -> clamped phase (label field on the last module) ->
free phase (label removed) -> every learned matrix takes a local update computed from
the final state s* and the *free* fields. No error is propagated; the label reaches the
hidden units only through the fixed random feedback W_back during the clamped phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from . import fused, protocol, sampled
from .config import EVAL_BATCH_SIZE, LearningConfig
from .continuous import j_post
from .couplings import SparseCoupling, batch_minor
from .dynamics import Relaxation, chunk_size, fused_compaction, relax
from .network import Network


@dataclass
class StepStats:
    """Per-batch diagnostics, kept as tensors so a step never forces a device sync."""

    batch_size: int
    correct: Tensor  # argmax of the readout the rule trained on == label (count)
    # Fraction of the last module's units that J's rule updates: s*_i h_i <= kappa_j (plus
    # J_D under the "offdiag" convention), h the free field at the end of the free phase.
    unstable: Tensor
    converged: Tensor  # samples whose free phase ended at a fixed point (count)
    free_sweeps: Tensor  # sweeps the free phase ran, summed over samples


def at_most(t: Tensor, kappa: float) -> Tensor:
    """1.0 where t <= kappa, else 0.0, in t's dtype and layout (CPU bool kernels are slow)."""
    return torch.le(t, kappa, out=torch.empty_like(t))


def post_terms(
    s: Tensor, h: Tensor, kappa: float, in_c: bool = True
) -> tuple[Tensor, Tensor | int]:
    """The rule's post-synaptic terms ``(s h <= kappa) * s`` and how many have s h <= kappa.

    ``in_c``: formed in one C call where it can (darnn.sampled.post_terms: the same bits;
    the count is then an int), else by tensor operations (a 0-dim tensor).
    """
    found = sampled.post_terms(s, h, kappa) if in_c else None
    if found is not None:
        return found
    mask = at_most(s * h, kappa)
    return mask * s, mask.sum()


def local_rule(
    net: Network,
    x: Tensor,
    y: Tensor,
    states: list[Tensor],
    fields: list[Tensor],
    cfg: LearningConfig,
    *,
    readout_in: Tensor | None = None,
    h_out: Tensor | None = None,
) -> Tensor:
    """Apply the perceptron rule with margin to every learned matrix, in place.

    A unit whose stability s_i h_i is at most its margin moves its incoming weights toward
    making its state stable (docs/model.md#the-local-rule). All updates read only
    ``states``, ``fields`` and the pre-update readout, so applying them one after the other
    equals applying them together.

    Args:
        net: The network; W_in, J, learned inter-module couplings and W_out change.
        x: (B, D) input batch.
        y: (B,) int64 labels.
        states: The state s* the batch settled in: one (B, N_l) tensor of ±1 per module.
        fields: The free fields at s* (label excluded), shaped like ``states``.
        cfg: Margins, rates and decays.
        readout_in: The state the readout learns from (default s*, ``states[-1]``).
        h_out: Its readout before the update, if already computed.

    Returns:
        The fraction of the last module's units (over the batch) unstable w.r.t. kappa_j, a
        0-dim tensor.
    """
    readout_in = states[-1] if readout_in is None else readout_in
    h_out = net.readout(readout_in) if h_out is None else h_out
    c = net.config
    batch = x.shape[0]
    inv_sqrt_b = 1.0 / math.sqrt(batch)
    offset = net.recurrent.j_d_value if cfg.margin_convention == "offdiag" else 0.0
    rec = net.recurrent

    # The C update gives torch's bits faster (darnn.sampled); kernel="torch": torch's own.
    fused_update = cfg.kernel != "torch" and x.device.type == "cpu"

    def update(coupling, post: Tensor, pre: Tensor, lr: float, decay: float, fan_in: float) -> None:  # type: ignore[no-untyped-def]
        if not (lr or decay):
            return
        alpha = lr * inv_sqrt_b / math.sqrt(fan_in)
        if not (fused_update and isinstance(coupling, SparseCoupling)
                and sampled.add_outer_(coupling, post, pre, alpha, decay)):  # fmt: skip
            coupling.add_outer_(post, pre, alpha=alpha, decay=decay)

    same_margin = cfg.kappa_in == cfg.kappa_j  # then W_in and J share one post-synaptic term
    for l, (s, h) in enumerate(zip(states, fields)):
        post_j, unstable_j = post_terms(s, h, cfg.kappa_j + offset, fused_update)
        if l < len(net.w_in):
            post = post_j
            if not same_margin:
                post = post_terms(s, h, cfg.kappa_in + offset, fused_update)[0]
            update(net.w_in[l], post, x, cfg.lr_in, cfg.decay_in, net.n_features * c.w_in_density)
        if c.activation == "tanh":  # J's own rule for continuous units (darnn.continuous)
            post_j = j_post(s, h, cfg.kappa_j + offset, cfg.tanh_rule, cfg.tanh_tolerance)
        update(rec.J[l], post_j, s, cfg.lr_j, cfg.decay_j, s.shape[1] * c.j_density)
        if cfg.learn_inter and l > 0:
            post = post_terms(s, h, cfg.kappa_inter + offset, fused_update)[0]
            fan = net.inter_fan_in(l)
            update(
                rec.forward_couplings[l - 1],
                post,
                states[l - 1],
                cfg.lr_inter,
                cfg.decay_inter,
                fan,
            )
    post_out = post_terms(net.targets(y), h_out, cfg.kappa_out, fused_update)[0]
    update(net.w_out, post_out, readout_in, cfg.lr_out, cfg.decay_out, readout_in.shape[1])
    # The fraction rounds as torch's mean of the mask does (a sum of ones, then one division).
    return torch.as_tensor(unstable_j / max(states[-1].numel(), 1), dtype=states[-1].dtype)


def two_phase(
    net: Network,
    x: Tensor,
    y: Tensor,
    cfg: LearningConfig,
    generator: torch.Generator | None = None,
) -> tuple[list[Tensor], Relaxation]:
    """Warm-up, clamped and free phases from s = 0 (docs/model.md#the-learning-step).

    Args:
        net: The network (not modified).
        x: (B, D) input batch.
        y: (B,) int64 labels, injected as a field on the last module in the clamped phase.
        cfg: Sweeps per phase and the schedule.
        generator: Random stream of the asynchronous schedule, if any.

    Returns:
        The input drives (one (B, N_l) tensor per module) and the free phase's `Relaxation`
        (its fields are the free fields at s*, label excluded).
    """
    rec = net.recurrent
    chain = fused.choose(rec, cfg.kernel, cfg.schedule, x.device, x.dtype, x.shape[0])
    if chain is None:
        drives, phases = three_phases(net, x, y, cfg, generator)
        return drives, phases[-1]
    # The fused kernel computes the input drives, then runs the three phases in one call, as
    # three_phases would on it. It reads raw memory: shapes are checked first.
    if x.ndim != 2 or x.shape[1] != net.n_features or y.shape != (x.shape[0],):
        raise ValueError(
            f"x must have shape (B, {net.n_features}) and y shape (B,), got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    x = batch_minor(x)
    drives, s, h, h_int, sweeps, converged = fused.phases(
        chain, rec.j_d_value, (fused.input_couplings(net), x), net.label_field(y),
        max_sweeps=(cfg.warmup_sweeps, cfg.clamped_sweeps, cfg.free_sweeps),
        sequential=cfg.schedule == "sequential",
        compaction=fused_compaction(rec, cfg.schedule, x.shape[0]),
    )  # fmt: skip
    return drives, Relaxation(s, h_int, h, converged, sweeps)


def three_phases(
    net: Network,
    x: Tensor,
    y: Tensor,
    cfg: LearningConfig,
    generator: torch.Generator | None = None,
) -> tuple[list[Tensor], tuple[Relaxation, Relaxation, Relaxation]]:
    """`two_phase` with the outcome of all three phases: warm-up, clamped, free."""
    rec = net.recurrent
    drives = net.input_drives(x)
    kw = {"schedule": cfg.schedule, "generator": generator, "kernel": cfg.kernel}
    warm = relax(rec, drives, max_sweeps=cfg.warmup_sweeps, **kw)
    clamped_ext = [*drives[:-1], drives[-1] + net.label_field(y)]
    clamped = relax(
        rec, clamped_ext, warm.states, internal=warm.internal, max_sweeps=cfg.clamped_sweeps, **kw
    )
    free = relax(
        rec, drives, clamped.states, internal=clamped.internal, max_sweeps=cfg.free_sweeps, **kw
    )
    return drives, (warm, clamped, free)


def learning_step(
    net: Network,
    x: Tensor,
    y: Tensor,
    cfg: LearningConfig,
    generator: torch.Generator | None = None,
) -> StepStats:
    """One training batch: relax with and without the label, then the local rule.

    The weights change in place. With readout neurons (network.readout="neurons") the
    batch follows the authors' protocol instead (`darnn.protocol`); with a contrastive
    ``cfg.rule``, the rule of docs/model.md#contrastive-rules.

    Args:
        net: The network to train.
        x: (B, D) input batch, features of order one.
        y: (B,) int64 labels in 0..C-1.
        cfg: The learning config.
        generator: Random stream of the dynamics (asynchronous schedule, stochastic sweeps).

    Returns:
        The batch's `StepStats` (tensors: reading them syncs the device).
    """
    if net.config.readout == "neurons":  # their dynamics, then their local rule
        return protocol_stats(net, x, y, protocol.relax_training(net, x, y, cfg, generator), cfg)
    x = batch_minor(x)  # one copy here saves one in the input product and one in its update
    if cfg.rule != "dynamical":  # free vs clamped relaxations (docs/model.md#contrastive-rules)
        from . import contrastive

        return contrastive.learn(
            net, x, y, contrastive.relax_phases(net, x, y, cfg, generator), cfg
        )
    drives, free = two_phase(net, x, y, cfg, generator)
    readout_in = label_free_state(net, drives, cfg, generator)
    return learn_relaxed(
        net, x, y, free.states, free.fields, free.converged, free.sweeps, cfg, readout_in
    )


def protocol_stats(
    net: Network, x: Tensor, y: Tensor, relaxed: protocol.ProtocolRelaxation, cfg: LearningConfig
) -> StepStats:
    """The protocol's local rule on a relaxed batch, and the step's statistics."""
    unstable, h_out = protocol.learn(net, x, y, relaxed, cfg)
    batch = x.shape[0]
    return StepStats(
        batch_size=batch,
        correct=(h_out.argmax(dim=1) == y).sum(),
        unstable=unstable.to(h_out.dtype).mean(),
        converged=relaxed.stable.sum(),
        free_sweeps=torch.tensor(relaxed.sweeps * batch),
    )


def label_free_state(
    net: Network,
    drives: list[Tensor],
    cfg: LearningConfig,
    generator: torch.Generator | None = None,
) -> Tensor | None:
    """The last module's state that prediction would read for these input drives.

    Computed when the readout learns from it (``cfg.readout_state == "eval"``); None when
    it learns from s*.
    """
    if cfg.readout_state == "free":
        return None
    return evaluation_relaxation(net, drives, cfg, generator).states[-1]


def evaluation_relaxation(
    net: Network,
    drives: list[Tensor],
    cfg: LearningConfig,
    generator: torch.Generator | None = None,
) -> Relaxation:
    """The dynamics prediction runs: warm-up + eval sweeps from 0 with the input alone."""
    return relax(
        net.recurrent,
        drives,
        max_sweeps=cfg.warmup_sweeps + cfg.eval_sweeps,
        schedule=cfg.schedule,
        generator=generator,
        kernel=cfg.kernel,
    )


def learn_relaxed(
    net: Network,
    x: Tensor,
    y: Tensor,
    states: list[Tensor],
    fields: list[Tensor],
    converged: Tensor,
    sweeps: Tensor,
    cfg: LearningConfig,
    readout_in: Tensor | None = None,
) -> StepStats:
    """The local rule on a relaxed batch, and the step's statistics.

    The batch's free phase ended in ``states`` with free ``fields`` (``converged``,
    ``sweeps``: per sample). ``readout_in``: the state the readout learns from if not s*
    (see `label_free_state`).
    """
    h_out = net.readout(states[-1] if readout_in is None else readout_in)  # before W_out changes
    unstable = local_rule(net, x, y, states, fields, cfg, readout_in=readout_in, h_out=h_out)
    return StepStats(
        batch_size=x.shape[0],
        correct=(h_out.argmax(dim=1) == y).sum(),
        unstable=unstable,
        converged=converged.sum(),
        free_sweeps=sweeps.sum(),
    )


def predict_scores(
    net: Network,
    x: Tensor,
    cfg: LearningConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Relaxation]:
    """Class scores: the readout field after the evaluation dynamics.

    Warm-up + eval sweeps from s = 0 with the input alone (never the label);
    docs/model.md#prediction.

    Args:
        net: The network (not modified).
        x: (B, D) input batch.
        cfg: Sweeps and schedule.
        generator: Random stream of the dynamics, if they draw any.

    Returns:
        (B, C) scores (the prediction is their argmax) and the evaluation `Relaxation`.
    """
    if net.config.readout == "neurons":
        return protocol.predict(net, x, cfg, generator)
    out = evaluation_relaxation(net, net.input_drives(x), cfg, generator)
    return net.readout(out.states[-1]), out


def dynamics_kernels(
    net: Network, cfg: LearningConfig, batch: int, eval_batch: int
) -> dict[str, str]:
    """Which kernel ("fused" or "torch", darnn.fused) relaxes training and evaluation batches.

    Returns ``{"train": ..., "eval": ...}`` for training batches of ``batch`` samples and
    `evaluate`'s batches of ``eval_batch`` (relaxed chunk by chunk where `chunk_size` says).
    """
    rec = net.recurrent
    chunk = chunk_size(rec, cfg.schedule, net.device) or eval_batch
    sizes = {"train": batch, "eval": min(eval_batch, chunk)}
    if net.config.readout == "neurons":  # the protocol's own dynamics (darnn.protocol)
        return dict.fromkeys(sizes, "torch")
    return {
        phase: "torch"
        if fused.choose(rec, cfg.kernel, cfg.schedule, net.device, net.dtype, size) is None
        else "fused"
        for phase, size in sizes.items()
    }


@torch.no_grad()
def evaluate(
    net: Network,
    X: Tensor,
    y: Tensor | None,
    cfg: LearningConfig,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, float | Tensor]:
    """Scores for a whole data set, in batches; the accuracy too if labels are given.

    Args:
        net: The network (not modified).
        X: (n, D) features (any device; moved batch by batch).
        y: (n,) int64 labels, or None.
        cfg: Sweeps and schedule of the evaluation dynamics.
        batch_size: Samples per batch.

    Returns:
        ``scores`` (n, C), ``sweeps`` (mean sweeps the dynamics ran), ``converged``
        (fraction of samples at a fixed point) and, with ``y``, ``accuracy``.
    """
    scores, sweeps, converged = [], 0, 0
    # Where the dynamics run in chunks (`chunk_size` decides), each batch goes through
    # input product, dynamics and readout chunk by chunk, so the chunk stays in cache; only
    # scores and counts are kept, never (B, N) fields.
    chunk = chunk_size(net.recurrent, cfg.schedule, net.device)
    # Stochastic sweeps (p_update < 1) draw their masks from one seeded stream per pass,
    # so an evaluation is reproducible.
    generator = torch.Generator().manual_seed(0) if cfg.p_update < 1 else None
    for start in range(0, X.shape[0], batch_size):
        xb = X[start : start + batch_size].to(net.device, net.dtype)
        for xc in (xb,) if chunk is None else xb.split(chunk):
            s, out = predict_scores(net, xc, cfg, generator)
            scores.append(s)
            sweeps += int(out.sweeps.sum())
            converged += int(out.converged.sum())
    all_scores = torch.cat(scores) if scores else torch.empty(0, net.n_classes)
    n = max(X.shape[0], 1)
    result: dict[str, float | Tensor] = {
        "scores": all_scores,
        "sweeps": sweeps / n,
        "converged": converged / n,
    }
    if y is not None:
        pred = all_scores.argmax(dim=1).cpu()
        result["accuracy"] = float((pred == y.cpu()).float().mean())
    return result
