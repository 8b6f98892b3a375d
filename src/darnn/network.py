"""The deep asymmetric recurrent network (docs/model.md#the-deep-network).

`Recurrent` is the part the dynamics needs: hidden modules with couplings J_l (zero
diagonal, plus the fixed self-coupling J_D) and the inter-module couplings. `Network`
adds the input couplings W_in, the readout W_out and the fixed random label feedback
W_back. Constants (J_D, masks, label code) are buffers; learned weights are frozen
Parameters, so ``state_dict()`` holds everything and autograd never runs.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .config import NetworkConfig
from .couplings import (
    Coupling,
    DenseCoupling,
    IdentityCoupling,
    convert,
    edits,
    excitatory_coupling,
    gaussian_coupling,
)
from .memory import NetworkTooLargeError, available_memory, check_memory, gib, uses_csr


def label_code(encoding: str, n_classes: int) -> tuple[float, float]:
    """(off, on): the values that code a wrong and the true class in the label feedback.

    "pm1": -1, +1. "rescaled" (the authors' JAX library): -1/sqrt(C-1), sqrt(C-1)/2, so the
    true class dominates. "halved" (their PyTorch code): -1/2, sqrt(C)/2.
    """
    if encoding == "rescaled":
        return -1 / math.sqrt(n_classes - 1), math.sqrt(n_classes - 1) / 2
    if encoding == "halved":
        return -0.5, math.sqrt(n_classes) / 2
    return -1.0, 1.0


def _skip_draw(parallel: Tensor, n: int, scale: float, gen: torch.Generator) -> Tensor:
    """The standard-normal draw for a skip from a module of n units.

    ``parallel`` is draw * scale, shape (N_L, C): the skip reuses the same draw if the
    sizes match, else draws a new one.
    """
    if parallel.shape[0] == n and scale > 0:
        return parallel / scale
    return torch.randn(n, parallel.shape[1], generator=gen)


def _sync_j_d(module: Recurrent, _keys: object) -> None:
    # A module-level function, not a lambda: the network must stay picklable.
    module.j_d_value = float(module.j_d)


class Recurrent(nn.Module):
    """Hidden modules s^1..s^L and every coupling among them.

    Internal field of module l: J_l s_l + J_D s_l + F_l s_{l-1} + B_l s_{l+1}, where F_l
    (forward, from l-1) and B_l (backward, from l+1) are the inter-module couplings.
    """

    def __init__(
        self,
        J: Sequence[Coupling],
        j_d: float,
        forward: Sequence[Coupling] = (),
        backward: Sequence[Coupling] = (),
    ):
        super().__init__()
        n = len(J)
        if len(forward) != n - 1 or len(backward) != n - 1:
            raise ValueError(
                f"a chain of {n} modules needs {n - 1} forward and {n - 1} backward couplings, "
                f"got {len(forward)} and {len(backward)}"
            )
        self.J = nn.ModuleList(J)
        self.forward_couplings = nn.ModuleList(forward)  # [l-1] maps module l-1 -> l
        self.backward_couplings = nn.ModuleList(backward)  # [l] maps module l+1 -> l
        # float64 so a float64 network holds J_D exactly; the Python copy keeps the hot
        # path free of device syncs.
        self.register_buffer("j_d", torch.tensor(float(j_d), dtype=torch.float64))
        self.j_d_value = float(j_d)
        # Keep the Python copy in step with the buffer when a state dict is loaded.
        self.register_load_state_dict_post_hook(_sync_j_d)
        self.sizes = tuple(c.n_out for c in J)

    @classmethod
    def from_matrices(
        cls,
        J: Sequence[Tensor],
        j_d: float,
        lambda_forward: float = 0.0,
        lambda_backward: float = 0.0,
    ) -> Recurrent:
        """A chain from given square matrices (diagonal ignored) with lambda*I between modules."""
        for i, m in enumerate(J):
            if m.ndim != 2 or m.shape[0] != m.shape[1]:
                raise ValueError(f"J[{i}] must be a square matrix, got shape {tuple(m.shape)}")
        couplings = [DenseCoupling(m.clone(), zero_diagonal=True) for m in J]
        fwd, bwd = [], []
        for a, b in zip(J[:-1], J[1:]):
            if a.shape != b.shape:
                raise ValueError("one-to-one inter-module couplings need modules of equal size")
            fwd.append(IdentityCoupling(torch.full((b.shape[0],), float(lambda_forward))))
            bwd.append(IdentityCoupling(torch.full((a.shape[0],), float(lambda_backward))))
        return cls(couplings, j_d, fwd, bwd).to(J[0].dtype)

    def set_j_d(self, value: float) -> None:
        """Change the self-coupling in place (buffer and Python copy together)."""
        self.j_d.fill_(float(value))
        self.j_d_value = float(value)

    @property
    def n_layers(self) -> int:
        """Number of modules L."""
        return len(self.sizes)

    def layer_total_field_(
        self, l: int, states: Sequence[Tensor], external: Tensor | None, out: Tensor
    ) -> Tensor:
        """Set ``out`` to external + internal field of module l at `states`; returns out.

        The one place the field is computed (every schedule and `internal_fields` use it):
        J_D s and the external field in one pass, then every product accumulates into out.
        """
        s = states[l]
        if external is None:
            torch.mul(s, self.j_d_value, out=out)
        else:
            torch.add(external, s, alpha=self.j_d_value, out=out)
        self.J[l].add_field_(s, out)
        if l > 0:
            self.forward_couplings[l - 1].add_field_(states[l - 1], out)
        if l < self.n_layers - 1:
            self.backward_couplings[l].add_field_(states[l + 1], out)
        return out

    def layer_field(self, l: int, states: Sequence[Tensor]) -> Tensor:
        """Internal field of module l at `states` (new tensor, in the layout of states[l])."""
        return self.layer_total_field_(l, states, None, torch.empty_like(states[l]))

    def internal_fields(self, states: Sequence[Tensor]) -> list[Tensor]:
        """Internal fields (everything but the external drive) of every module at `states`."""
        return [self.layer_field(l, states) for l in range(self.n_layers)]

    def total_fields_(
        self, states: Sequence[Tensor], external: Sequence[Tensor], out: Sequence[Tensor]
    ) -> None:
        """Set each ``out`` to external + internal fields at `states`: the inner loop."""
        for l, (e, h) in enumerate(zip(external, out)):
            self.layer_total_field_(l, states, e, h)

    def chain_blocks(self) -> list[tuple[int, int, Coupling]]:
        """The non-zero blocks of the chain's matrix K, as (module fed, module read, coupling).

        J_l on the diagonal, forward couplings below it, backward ones above.
        """
        last = self.n_layers - 1
        blocks = [(l, l, self.J[l]) for l in range(self.n_layers)]
        blocks += [(l, l - 1, self.forward_couplings[l - 1]) for l in range(1, last + 1)]
        blocks += [(l, l + 1, self.backward_couplings[l]) for l in range(last)]
        return blocks

    def dense_matrix(self) -> Tensor:
        """The whole chain as one (sum N_l)^2 matrix K, diagonal J_D: h_int = s K^T.

        Dense on purpose, for its two callers only: the asynchronous schedule when K is at
        least a quarter full (a dense K then costs what its non-zeros do) and the theory
        lab's small dense networks (their memory estimated first). Training, evaluation,
        diagnostics and checkpoints of CSR couplings never call it. Its size is checked
        against the available memory before allocating (NetworkTooLargeError).
        """
        total = sum(self.sizes)
        ref = next(iter(self.J[0].parameters()))  # dtype and device, without densifying
        need = total * total * ref.element_size()
        room = available_memory() if ref.device.type == "cpu" else None
        if room is not None and need > room:
            raise NetworkTooLargeError(
                f"the chain's dense {total} x {total} coupling matrix needs {gib(need)}, but "
                f"only {gib(room)} of main memory is available"
            )
        K = torch.zeros(total, total, dtype=ref.dtype, device=ref.device)
        off = [0, *torch.tensor(self.sizes).cumsum(0).tolist()]
        for fed, read, coupling in self.chain_blocks():
            K[off[fed] : off[fed + 1], off[read] : off[read + 1]] = coupling.to_dense()
        K.diagonal().fill_(self.j_d_value)
        return K


def inter_couplings(
    c: NetworkConfig, gen: torch.Generator
) -> tuple[list[Coupling], list[Coupling]]:
    """The forward (l-1 -> l) and backward (l+1 -> l) couplings between consecutive modules."""
    sizes = c.hidden
    fwd: list[Coupling] = []
    bwd: list[Coupling] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        if c.inter == "identity":
            if a != b:
                raise ValueError(
                    f"inter='identity' needs equal module sizes, got hidden={sizes}; "
                    "use inter='sparse' for modules of different sizes"
                )
            fwd.append(IdentityCoupling(torch.full((b,), c.lambda_forward)))
            bwd.append(IdentityCoupling(torch.full((a,), c.lambda_backward)))
        elif c.inter == "gaussian":
            # Dense random couplings (the authors' fc_left/fc_right), diagonal left out.
            for out, n_out, n_in, lam in (
                (fwd, b, a, c.lambda_forward),
                (bwd, a, b, c.lambda_backward),
            ):
                out.append(
                    gaussian_coupling(
                        n_out,
                        n_in,
                        strength=lam,
                        density=1.0,
                        generator=gen,
                        zero_diagonal=n_out == n_in,
                    )
                )
        else:
            k = c.inter_fan_in
            fwd.append(excitatory_coupling(b, a, lam=c.lambda_forward, fan_in=k, generator=gen))
            bwd.append(excitatory_coupling(a, b, lam=c.lambda_backward, fan_in=k, generator=gen))
    return fwd, bwd


class Network(nn.Module):
    """Input -> hidden chain -> readout, with fixed random label feedback.

    Couplings and their initial scales: docs/model.md#the-deep-network. Every weight is
    drawn on a CPU generator in a fixed order, so the seed alone fixes the weights, on any
    device and in either storage (dense or CSR).

    Args:
        config: The architecture: modules, densities, strengths, readout.
        n_features: D, the input size (>= 1).
        n_classes: C, the number of classes (>= 2).
        seed: Seed of every random draw.
        device: Where the weights live ("cpu", "cuda", ...).
        dtype: Floating dtype of the weights.

    Raises:
        ValueError: Bad sizes, or a network whose build would not fit in memory
            (`darnn.memory.NetworkTooLargeError`, raised before anything is allocated).
    """

    def __init__(
        self,
        config: NetworkConfig,
        n_features: int,
        n_classes: int,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        n_features, n_classes = operator.index(n_features), operator.index(n_classes)
        if n_features < 1 or n_classes < 2:
            raise ValueError(
                f"need n_features >= 1 and n_classes >= 2, got {n_features} and {n_classes}"
            )
        # Before the first allocation: a network too large fails here with the estimate.
        check_memory(config, n_features, n_classes, dtype=dtype, device=device)
        self.config = config
        self.n_features, self.n_classes = n_features, n_classes
        c = config
        sizes = c.hidden
        # All draws on a CPU generator in a fixed order: the seed alone fixes the weights,
        # whatever the device or storage format.
        gen = torch.Generator().manual_seed(seed)

        def storage(density: float) -> bool:
            return uses_csr(c, density)

        w_in = [
            gaussian_coupling(
                sizes[l],
                n_features,
                strength=strength,
                density=c.w_in_density,
                generator=gen,
                sparse=storage(c.w_in_density),
            )
            for l, strength in enumerate(c.input_strengths)
        ]
        J = [
            gaussian_coupling(
                n,
                n,
                strength=c.j_strength,
                density=c.j_density,
                generator=gen,
                zero_diagonal=True,
                sparse=storage(c.j_density),
            )
            for n in sizes
        ]
        fwd, bwd = inter_couplings(c, gen)
        self.recurrent = Recurrent(J, c.j_d, fwd, bwd)
        self.recurrent.activation = c.activation  # "tanh": darnn.continuous runs the dynamics
        self.w_in = nn.ModuleList(w_in)
        n_last = sizes[-1]
        self.w_out = gaussian_coupling(
            n_classes, n_last, strength=c.w_out_strength, density=1.0, generator=gen
        )
        back_draw = torch.randn(n_last, n_classes, generator=gen)
        self.register_buffer("w_back", back_draw * (c.w_back_strength / math.sqrt(n_classes)))
        off, on = label_code(c.label_encoding, n_classes)
        self.register_buffer("label_code", torch.tensor([off, on]))
        self._label_cache: tuple[tuple, tuple[Tensor, Tensor, Tensor]] | None = None
        self._draw_skips(gen)
        if c.symmetric_w_back:
            self.tie_w_back()
        self.to(device=device, dtype=dtype)

    def _draw_skips(self, gen: torch.Generator) -> None:
        """The learned module -> readout and fixed readout -> module skips."""
        c, n_classes, n_last = self.config, self.n_classes, self.config.hidden[-1]
        # Skips of the authors' protocol. As in their code, a skip starts from the draw of the
        # coupling it parallels (W_out, W_back) rescaled to its own strength; a module of
        # another size gets a draw of its own. Drawn last: other weights do not move.
        self.w_forth_skip = nn.ModuleList(
            DenseCoupling(
                _skip_draw(self.w_out.weight.T, n, c.w_out_strength / math.sqrt(n_last), gen).T
                * (strength / math.sqrt(n))
            )
            for n, strength in zip(c.hidden, c.w_forth_skip)
        )
        self.n_back_skips = len(c.w_back_skip)
        for l, (n, strength) in enumerate(zip(c.hidden, c.w_back_skip)):
            draw = _skip_draw(self.w_back, n, c.w_back_strength / math.sqrt(n_classes), gen)
            self.register_buffer(f"w_back_skip_{l}", draw * (strength / math.sqrt(n_classes)))

    # ----- the authors' protocol (readout neurons) ---------------------------------
    @property
    def w_back_skip(self) -> list[Tensor]:
        """Fixed feedback readout -> module l for every non-last module (N_l, C)."""
        return [getattr(self, f"w_back_skip_{l}") for l in range(self.n_back_skips)]

    def inter_fan_in(self, l: int) -> float:
        """Expected number of inputs per unit of the forward coupling into module l > 0."""
        kind = self.config.inter
        if kind == "identity":
            return 1.0
        return float(self.sizes[l - 1] if kind == "gaussian" else self.config.inter_fan_in)

    def tie_w_back(self) -> None:
        """Set W_back (and its skips) to the readout couplings' transpose, rescaled.

        The rescaling goes from the readout strength to the feedback strength (the authors'
        ``symmetric_W``).
        """
        c = self.config
        if c.w_out_strength == 0:
            raise ValueError("symmetric_w_back needs network.w_out_strength > 0")
        scale = math.sqrt(self.sizes[-1]) / math.sqrt(self.n_classes)
        ratio = scale * c.w_back_strength / c.w_out_strength
        self.w_back.copy_(self.w_out.weight.T * ratio)
        for l, (skip, forth) in enumerate(zip(self.w_back_skip, self.w_forth_skip)):
            if c.w_forth_skip[l] == 0:
                raise ValueError(f"symmetric_w_back needs network.w_forth_skip[{l}] > 0")
            ratio = math.sqrt(self.sizes[l]) / math.sqrt(self.n_classes)
            skip.copy_(forth.weight.T * (ratio * c.w_back_skip[l] / c.w_forth_skip[l]))

    # ----- structure -------------------------------------------------------------
    @property
    def sizes(self) -> tuple[int, ...]:
        """Units per module, (N_1, ..., N_L)."""
        return self.recurrent.sizes

    @property
    def device(self) -> torch.device:
        """The device every weight lives on."""
        return self.w_back.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of every weight."""
        return self.w_back.dtype

    def to_format(self, fmt: str) -> Network:
        """Store every masked coupling as "dense" or "csr" (in place; same numbers)."""
        rec = self.recurrent
        rec.J = nn.ModuleList(convert(m, fmt) for m in rec.J)
        self.w_in = nn.ModuleList(convert(m, fmt) for m in self.w_in)
        return self

    # ----- fields ----------------------------------------------------------------
    def input_drives(self, x: Tensor) -> list[Tensor]:
        """W_in x for every module (zeros where no input arrives); constant during dynamics."""
        drives = [w.field(x) for w in self.w_in]
        for n in self.sizes[len(drives) :]:
            drives.append(x.new_zeros(n, x.shape[0]).T)  # batch-minor, like the fields
        return drives

    def targets(self, y: Tensor) -> Tensor:
        """One-hot +-1 code of the labels (B, C), used as readout targets."""
        t = torch.full((y.shape[0], self.n_classes), -1.0, dtype=self.dtype, device=y.device)
        return t.scatter_(1, y.view(-1, 1), 1.0)

    def label_field(self, y: Tensor) -> Tensor:
        """Feedback field W_back label (B, N_L) on the last module during the clamped phase."""
        # The code of class c is off + (on - off) e_c, so the field is
        # off * (row sums of W_back) + (on - off) * column c: no C x C code table.
        base, gap, columns = self._label_parts(y.shape[0])
        return torch.addcmul(base, columns.index_select(0, y), gap)  # contiguous (B, N_L)

    def _label_parts(self, batch: int) -> tuple[Tensor, Tensor, Tensor]:
        """(off * W_back's row sums as (batch, N_L), on - off, W_back's columns as rows).

        The row sums are repeated because addcmul is several times slower on a broadcast
        operand, and the columns are copied because gathering rows is several times faster.
        Kept until W_back, the label code or the batch size changes (an in-place change
        moves a tensor's version, a new tensor its address); not kept for inference tensors,
        which have no version.
        """
        tensors = (self.w_back, self.label_code)
        versions = [edits(t) for t in tensors]
        key = None if None in versions else (batch, *(t.data_ptr() for t in tensors), *versions)
        if key is None or self._label_cache is None or self._label_cache[0] != key:
            w_back, (off, on) = tensors
            base = w_back.sum(1).mul_(off).expand(batch, -1).contiguous()
            parts = (base, on - off, w_back.T.contiguous())
            self._label_cache = None if key is None else (key, parts)
            return parts
        return self._label_cache[1]

    def readout(self, s_last: Tensor) -> Tensor:
        """Readout field h_out = W_out s_L (B, C)."""
        return self.w_out.field(s_last)

    @property
    def nbytes(self) -> int:
        """Bytes held by the network's parameters and buffers."""
        tensors = [*self.parameters(), *self.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)
