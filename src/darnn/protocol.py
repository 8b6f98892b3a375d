"""The authors' PyTorch protocol: readout neurons, skips, stochastic sweeps, double dynamics.

With ``network.readout = "neurons"`` the readout is a layer of C units r in the state. A
training batch clamps it to the label t (one-hot +-1) by a strong field label_strength * t;
the last module hears W_back e(r), the readout's state, never the label itself
(docs/model.md#readout-neurons). Fields, with the terms a sweep switches on (`Terms`):

    h_l   = W_in,l x + J_l s_l + J_D s_l + F_l s_{l-1} + [backward] B_l s_{l+1}
            + [feedback] (W_back if l is the last module else Wback_skip_l) e(r)
    h_out = W_out s_L + sum_{l<L} Wforth_skip_l s_l + [label] label_strength * t

Every layer and the readout update at once from the previous state; each unit takes
sign(h) (sign(0) = 0) with probability p_update and keeps its value otherwise. Everything
starts at 0. e(r) codes the readout for its feedback: a wrong class (-1) becomes ``off``,
any other value v becomes v * ``on`` (network.label_encoding). As in the authors' code, the
coded value is written back into the state every time the fields are computed, so a readout
unit that skips an update is coded again at the next sweep, and the local rule reads the
readout coded twice (n = e(e(r))).

One training batch: warm-up (label and feedback off), clamped sweeps (everything on); with
double dynamics as many sweeps again with the feedback cut and the label still clamped; then
any free sweeps (label off). The local rule reads the last state and its label-free fields.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import LearningConfig
from .couplings import batch_minor
from .dynamics import Relaxation
from .network import Network

Masks = Iterator[list[Tensor]]
"""Update masks to replay, one list per sweep: (B, N_l) for every module, then (B, C)."""


@dataclass(frozen=True)
class Terms:
    """Which optional terms of the fields a sweep includes."""

    label: bool  # label_strength * t on the readout
    feedback: bool  # W_back e(r) on the last module, Wback_skip_l e(r) on the others
    backward: bool  # B_l s_{l+1} from the next module


ALL_ON = Terms(label=True, feedback=True, backward=True)
FEEDBACK_CUT = Terms(label=True, feedback=False, backward=True)


def label_free(cfg: LearningConfig) -> Terms:
    """The terms of warm-up, prediction and the local rule: no label, no feedback."""
    return Terms(label=False, feedback=False, backward=cfg.inference_backward)


@dataclass
class State:
    """Modules s_l (B, N_l) and readout r (B, C); r holds its coded value (module doc)."""

    modules: list[Tensor]
    readout: Tensor

    def clone(self) -> State:
        """A deep copy (every tensor cloned)."""
        return State([s.clone() for s in self.modules], self.readout.clone())


@dataclass
class ProtocolRelaxation:
    """Outcome of the training dynamics of one batch."""

    final: State
    first: State | None  # after the first half of double dynamics (double_update needs it)
    sweeps: int  # sweeps run (the same for every sample)
    stable: Tensor  # (B,) bool: no unit would change sign at the final state


def code_readout_(net: Network, r: Tensor) -> Tensor:
    """Code the readout in place, r = e(r): -1 -> off, v -> v * on (the authors' coding)."""
    off, on = net.label_code[0], net.label_code[1]
    return torch.where(r == -1, off, r * on, out=r)


class Fields:
    """The fields of one batch's dynamics.

    ``fields(state, terms)`` codes the readout in place, then returns (h_l for every
    module, h_out).
    """

    def __init__(self, net: Network, drives: list[Tensor], t: Tensor) -> None:
        self.net, self.drives, self.t = net, drives, t

    def __call__(self, state: State, terms: Terms) -> tuple[list[Tensor], Tensor]:
        """(h_l for every module (B, N_l), h_out (B, C)) at ``state`` with ``terms`` on."""
        code_readout_(self.net, state.readout)
        net, rec, s, r = self.net, self.net.recurrent, state.modules, state.readout
        last = len(net.sizes) - 1
        hidden = []
        for l, drive in enumerate(self.drives):
            h = torch.add(drive, s[l], alpha=rec.j_d_value)
            rec.J[l].add_field_(s[l], h)
            if l > 0:
                rec.forward_couplings[l - 1].add_field_(s[l - 1], h)
            if l < last and terms.backward:
                rec.backward_couplings[l].add_field_(s[l + 1], h)
            if terms.feedback and (l == last or l < net.n_back_skips):
                h.addmm_(r, (net.w_back if l == last else net.w_back_skip[l]).T)
            hidden.append(h)
        h_out = net.readout(s[last])
        for l, skip in enumerate(net.w_forth_skip):
            skip.add_field_(s[l], h_out)
        if terms.label:
            h_out.add_(self.t, alpha=net.config.label_strength)
        return hidden, h_out


def _sign_keep(h: Tensor, current: Tensor, mask: Tensor | None) -> Tensor:
    """sign(h) (sign(0) = 0) where mask is set (everywhere if None), else the current value."""
    new = torch.sign(h)
    return new if mask is None else torch.where(mask, new, current)


def _draw_masks(
    shapes: list[tuple[int, int]], p: float, generator: torch.Generator | None, device: torch.device
) -> list[Tensor]:
    """Bernoulli(p) update masks, one per layer (drawn on the generator's device)."""
    where = generator.device if generator is not None else torch.device("cpu")
    return [
        (torch.rand(shape, generator=generator, device=where) < p).to(device) for shape in shapes
    ]


class _Sweeper:
    """Synchronous sweeps of one batch with the update masks drawn (or replayed) in order.

    Masks are drawn for the whole global batch, so K data-parallel ranks draw what one
    process draws; ``rows`` picks this rank's samples.
    """

    def __init__(
        self,
        net: Network,
        x: Tensor,
        y: Tensor,
        cfg: LearningConfig,
        generator: torch.Generator | None,
        masks: Masks | None,
        rows: Tensor | None,
        global_batch: int,
    ):
        self.net, self.t = net, net.targets(y)
        self.fields = Fields(net, net.input_drives(x), self.t)
        if generator is None and cfg.p_update < 1 and masks is None:
            generator = torch.Generator().manual_seed(0)  # reproducible by default
        self.p, self.generator, self.masks = cfg.p_update, generator, masks
        self.rows, self.global_batch = rows, global_batch
        self.sweeps = 0

    def _next_masks(self) -> list[Tensor] | None:
        if self.masks is not None:
            drawn = next(self.masks)
        elif self.p >= 1.0:
            return None
        else:
            shapes = [(self.global_batch, n) for n in (*self.net.sizes, self.net.n_classes)]
            drawn = _draw_masks(shapes, self.p, self.generator, self.t.device)
        return drawn if self.rows is None else [m[self.rows] for m in drawn]

    def run(self, state: State, n: int, terms: Terms) -> None:
        for _ in range(n):
            hidden, h_out = self.fields(state, terms)
            masks = self._next_masks() or [None] * (len(hidden) + 1)
            for l, h in enumerate(hidden):
                state.modules[l] = _sign_keep(h, state.modules[l], masks[l])
            state.readout = _sign_keep(h_out, state.readout, masks[-1])
            self.sweeps += 1

    def stable(self, state: State, terms: Terms) -> Tensor:
        """(B,) no unit would change sign under `terms` (codes the readout, as they do)."""
        hidden, h_out = self.fields(state, terms)
        same = [torch.sign(h).eq(s).all(dim=1) for h, s in zip(hidden, state.modules)]
        same.append(torch.sign(h_out).eq(state.readout).all(dim=1))
        return torch.stack(same).all(dim=0)


def zero_state(net: Network, batch: int) -> State:
    """Every module and the readout at 0: where the protocol's dynamics start."""
    modules = [torch.zeros(batch, n, dtype=net.dtype, device=net.device) for n in net.sizes]
    readout = torch.zeros(batch, net.n_classes, dtype=net.dtype, device=net.device)
    return State(modules, readout)


def relax_training(
    net: Network,
    x: Tensor,
    y: Tensor,
    cfg: LearningConfig,
    generator: torch.Generator | None = None,
    *,
    masks: Masks | None = None,
    rows: Tensor | None = None,
    global_batch: int | None = None,
) -> ProtocolRelaxation:
    """The training dynamics of one batch (see the module's docstring).

    Args:
        net: A network with readout neurons (not modified).
        x: (B, D) input batch.
        y: (B,) int64 labels; the readout is clamped to their ±1 code.
        cfg: Sweeps, p_update, double dynamics.
        generator: Random stream of the stochastic update masks (p_update < 1).
        masks: Update masks to replay instead of drawing them (tests, cross-checks).
        rows: This data-parallel rank's samples of the global batch.
        global_batch: The global batch size (update masks are drawn for all of it).

    Returns:
        A `ProtocolRelaxation`: the final state (and the state after the first half of
        double dynamics), the sweeps run, which samples ended stable.
    """
    batch = x.shape[0] if global_batch is None else global_batch
    sweeper = _Sweeper(net, x, y, cfg, generator, masks, rows, batch)
    state = zero_state(net, x.shape[0])
    sweeper.run(state, cfg.warmup_sweeps, label_free(cfg))
    sweeper.run(state, cfg.clamped_sweeps, ALL_ON)
    first, last_terms = None, ALL_ON
    if cfg.double_dynamics:
        code_readout_(net, state.readout)  # their code computes the fields here once more
        first = state.clone()
        sweeper.run(state, cfg.warmup_sweeps + cfg.clamped_sweeps, FEEDBACK_CUT)
        last_terms = FEEDBACK_CUT
    if cfg.free_sweeps:
        sweeper.run(state, cfg.free_sweeps, label_free(cfg))
        last_terms = label_free(cfg)
    stable = sweeper.stable(state, last_terms)
    return ProtocolRelaxation(state, first, sweeper.sweeps, stable)


def predict(
    net: Network,
    x: Tensor,
    cfg: LearningConfig,
    generator: torch.Generator | None = None,
    *,
    masks: Masks | None = None,
) -> tuple[Tensor, Relaxation]:
    """Readout field h_out after warm-up + eval sweeps from 0, label and feedback off.

    Args:
        net: A network with readout neurons (not modified).
        x: (B, D) input batch.
        cfg: Sweeps and p_update.
        generator: Random stream of the stochastic update masks (p_update < 1).
        masks: Update masks to replay instead of drawing them.

    Returns:
        (B, C) scores (the prediction is their argmax) and the evaluation `Relaxation`.
    """
    batch = x.shape[0]
    y = torch.zeros(batch, dtype=torch.long, device=x.device)  # never read: the label is off
    sweeper = _Sweeper(net, x, y, cfg, generator, masks, None, batch)
    state = zero_state(net, batch)
    terms = label_free(cfg)
    sweeper.run(state, cfg.warmup_sweeps + cfg.eval_sweeps, terms)
    stable = sweeper.stable(state, terms)
    hidden, h_out = sweeper.fields(state, terms)
    relaxation = Relaxation(
        states=state.modules,
        internal=[h - d for h, d in zip(hidden, sweeper.fields.drives)],
        fields=hidden,
        converged=stable,
        sweeps=torch.full((batch,), sweeper.sweeps, dtype=torch.int64, device=x.device),
    )
    return h_out, relaxation


def learn(
    net: Network, x: Tensor, y: Tensor, relaxed: ProtocolRelaxation, cfg: LearningConfig
) -> tuple[Tensor, Tensor]:
    """The local rule on a relaxed batch; returns `local_rule`'s unstable mask and h_out.

    With double update it applies twice: J on the first fixed point, the readout on the
    final one.
    """
    x = batch_minor(x)
    if relaxed.first is None or not cfg.double_update:
        return local_rule(net, x, y, relaxed.final, cfg)
    result = local_rule(net, x, y, relaxed.first, cfg, readout=False)
    local_rule(net, x, y, relaxed.final, cfg, hidden=False)
    return result


def _threshold_offset(net: Network, cfg: LearningConfig) -> float:
    """What the margin convention adds to the hidden kappas."""
    if cfg.margin_convention == "total":
        return 0.0
    offset = net.recurrent.j_d_value
    if cfg.margin_convention == "offdiag_lambda" and len(net.sizes) > 1:
        offset += net.config.lambda_forward
    return offset


def _update(coupling, post: Tensor, pre: Tensor, rate: float, decay: float, g: float) -> None:  # type: ignore[no-untyped-def]
    """W <- W (1 - decay) + rate * g * post^T pre (their order: decay, then the step)."""
    if rate or decay:
        coupling.add_outer_(post, pre, alpha=rate * g / (1.0 - decay), decay=decay)


def local_rule(
    net: Network,
    x: Tensor,
    y: Tensor,
    state: State,
    cfg: LearningConfig,
    *,
    hidden: bool = True,
    readout: bool = True,
) -> tuple[Tensor, Tensor]:
    """The perceptron rule on ``state`` (its readout coded once more, as theirs), in place.

    ``hidden``/``readout`` pick which of J and the readout couplings W_out learn (double
    update); the input couplings and the readout skips learn in every call, and every
    learned matrix decays in every call, as in the authors' code. Returns the (B, N_L)
    unstable mask of the last module and the label-free readout field h_out.
    """
    c, g = net.config, 1.0 / math.sqrt(x.shape[0])
    fields = Fields(net, net.input_drives(x), net.targets(y))
    h_hidden, h_out = fields(state, label_free(cfg))
    offset = _threshold_offset(net, cfg)
    unstable = state.modules[-1]
    for l, (s, h) in enumerate(zip(state.modules, h_hidden)):
        stability = s * h
        post_j = (stability <= cfg.kappa_j + offset).to(s.dtype).mul_(s)
        post_in = post_j
        if cfg.kappa_in != cfg.kappa_j:
            post_in = (stability <= cfg.kappa_in + offset).to(s.dtype).mul_(s)
        if l < len(net.w_in):
            fan_in = net.n_features * c.w_in_density
            _update(net.w_in[l], post_in, x, cfg.lr_in / math.sqrt(fan_in), cfg.decay_in, g)
        rate_j = cfg.lr_j / math.sqrt(s.shape[1] * c.j_density) if hidden else 0.0
        _update(net.recurrent.J[l], post_j, s, rate_j, cfg.decay_j, g)
        if cfg.learn_inter and l > 0:
            post = (stability <= cfg.kappa_inter + offset).to(s.dtype).mul_(s)
            pre = state.modules[l - 1]
            rate = cfg.lr_inter / math.sqrt(net.inter_fan_in(l)) if hidden else 0.0
            _update(net.recurrent.forward_couplings[l - 1], post, pre, rate, cfg.decay_inter, g)
        unstable = stability <= cfg.kappa_j + offset
    n = state.readout  # coded twice now: the value their rule multiplies by
    post_out = (n * h_out <= cfg.kappa_out).to(n.dtype).mul_(n)
    last = state.modules[-1]
    rate_out = cfg.lr_out / math.sqrt(last.shape[1]) if readout else 0.0
    _update(net.w_out, post_out, last, rate_out, cfg.decay_out, g)
    for l, skip in enumerate(net.w_forth_skip):
        s = state.modules[l]
        _update(skip, post_out, s, cfg.lr_out_skip / math.sqrt(s.shape[1]), cfg.decay_out_skip, g)
    if c.symmetric_w_back:
        net.tie_w_back()
    return unstable, h_out
