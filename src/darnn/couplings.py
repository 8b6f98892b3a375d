"""Coupling matrices: dense, sparse (CSR) or one-to-one, behind one small interface.

A coupling maps presynaptic activity x (B, n_in) to a field (B, n_out) and takes the
local rule's outer-product update restricted to its support. Absent (masked) entries and
the diagonal of a recurrent J are outside the support, so they can never change.
Sparse couplings store and multiply only their non-zeros.

Layout: fields come back "batch-minor", i.e. as the transpose of a contiguous (n_out, B)
tensor. A CSR product then needs no copies (its dense operand and result are (n, B)
row-major, each non-zero scales one contiguous row of B values), and elementwise work on
(B, N) tensors of one layout runs at full speed. Any input layout is accepted.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

# Above this batch size a CSR product is done in chunks: the (n_in, chunk) block of
# presynaptic states then stays in cache (MKL: ~20 GFLOP/s up to 256 columns on a
# 2 MB-L2 core, half that at 512, a quarter at 4096).
_CSR_CHUNK = 256

# CSR tensors work well for the few operations used here; the beta notice is noise.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class Coupling(nn.Module):
    """Interface shared by all couplings. Weights are frozen Parameters (no autograd)."""

    n_out: int
    n_in: int

    def field(self, x: Tensor) -> Tensor:
        """Field (B, n_out) produced by presynaptic activity x (B, n_in)."""
        raise NotImplementedError

    def add_field_(self, x: Tensor, out: Tensor) -> Tensor:
        """out += field(x), in place; returns out."""
        return out.add_(self.field(x))

    def add_outer_(self, post: Tensor, pre: Tensor, alpha: float, decay: float = 0.0) -> None:
        """W <- (W + alpha * post^T pre restricted to the support) * (1 - decay)."""
        raise NotImplementedError

    def to_dense(self) -> Tensor:
        """The full (n_out, n_in) matrix with zeros outside the support."""
        raise NotImplementedError

    def support(self) -> Tensor:
        """Boolean (n_out, n_in) mask of the entries that exist (and may learn)."""
        raise NotImplementedError

    @property
    def nnz(self) -> int:
        return int(self.support().sum())

    @property
    def nbytes(self) -> int:
        """Bytes held by this coupling's tensors (weights, indices, masks)."""
        tensors = [*self.parameters(), *self.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)


def _frozen(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


def batch_minor(x: Tensor) -> Tensor:
    """x (B, n) with the layout of a contiguous (n, B) tensor (a copy only if needed)."""
    return x if x.T.is_contiguous() else x.T.contiguous().T


class DenseCoupling(Coupling):
    """Dense (n_out, n_in) matrix, optionally masked; a square J keeps a zero diagonal."""

    def __init__(self, weight: Tensor, mask: Tensor | None = None, zero_diagonal: bool = False):
        super().__init__()
        self.n_out, self.n_in = weight.shape
        self.zero_diagonal = zero_diagonal
        if mask is not None:
            weight = weight * mask
        if zero_diagonal:
            weight = weight.clone()
            weight.fill_diagonal_(0.0)
        self.weight = _frozen(weight)
        # A float mask multiplies faster than a bool one; None means "every entry exists".
        self.register_buffer("mask", None if mask is None else mask.to(weight.dtype))

    def field(self, x: Tensor) -> Tensor:
        return torch.mm(self.weight, x.T).T  # batch-minor result; BLAS takes any x layout

    def add_field_(self, x: Tensor, out: Tensor) -> Tensor:
        return out.addmm_(x, self.weight.T)

    def add_outer_(self, post: Tensor, pre: Tensor, alpha: float, decay: float = 0.0) -> None:
        keep = 1.0 - decay
        self.weight.addmm_(post.T, pre, beta=keep, alpha=alpha * keep)
        if self.mask is not None:
            self.weight.mul_(self.mask)
        if self.zero_diagonal:
            self.weight.diagonal().zero_()

    def to_dense(self) -> Tensor:
        return self.weight.detach().clone()

    def support(self) -> Tensor:
        sup = (
            torch.ones(self.n_out, self.n_in, dtype=torch.bool, device=self.weight.device)
            if self.mask is None
            else self.mask.bool()
        )
        if self.zero_diagonal:
            sup = sup.clone()
            sup.fill_diagonal_(False)
        return sup


class SparseCoupling(Coupling):
    """CSR storage of the support: memory and products scale with the non-zeros."""

    def __init__(self, crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]):
        super().__init__()
        self.n_out, self.n_in = shape
        # int32 indices: MKL takes them as they are (int64 ones are converted at every
        # product, which cost more than the product itself at batch 16).
        index = torch.int32 if col.numel() < 2**31 else torch.int64
        self.register_buffer("crow", crow.to(index))
        self.register_buffer("col", col.to(index))
        self.values = _frozen(values)
        self._csr: Tensor | None = None

    @classmethod
    def from_dense(cls, weight: Tensor, support: Tensor) -> SparseCoupling:
        csr = (support.to(weight.dtype)).to_sparse_csr()
        rows, cols = support.nonzero(as_tuple=True)
        return cls(csr.crow_indices(), csr.col_indices(), weight[rows, cols].clone(), weight.shape)

    @property
    def csr(self) -> Tensor:
        # A view sharing `values`; rebuilt only after .to()/load_state_dict replaced tensors.
        csr = self._csr
        if csr is None or csr.values().data_ptr() != self.values.data_ptr():
            csr = torch.sparse_csr_tensor(
                self.crow,
                self.col,
                self.values.data,
                (self.n_out, self.n_in),
                check_invariants=False,
            )
            self._csr = csr
        return csr

    def _product(self, xt: Tensor) -> Tensor:
        """W @ xt for a contiguous (n_in, B) xt; addmm with beta=0 skips the zero-fill and
        the copy that `csr @ xt` adds."""
        out = xt.new_empty(self.n_out, xt.shape[1])
        return torch.addmm(out, self.csr, xt, beta=0.0, out=out)

    def field(self, x: Tensor) -> Tensor:
        if x.shape[0] <= _CSR_CHUNK or x.device.type != "cpu":
            return self._product(batch_minor(x).T).T
        parts = [self._product(c.T.contiguous()) for c in x.split(_CSR_CHUNK)]
        return torch.cat(parts, dim=1).T

    def add_field_(self, x: Tensor, out: Tensor) -> Tensor:
        if not out.T.is_contiguous() or x.shape[0] > _CSR_CHUNK:
            return out.add_(self.field(x))
        torch.addmm(out.T, self.csr, batch_minor(x).T, out=out.T)  # in place, no temporary
        return out

    def add_outer_(self, post: Tensor, pre: Tensor, alpha: float, decay: float = 0.0) -> None:
        keep = 1.0 - decay
        # Sampled dense-dense product: only the stored entries of post^T pre are formed,
        # written in place into `values` (the CSR view shares them). Batch-minor operands
        # make every entry a dot product of two contiguous length-B rows (~2x faster).
        csr = self.csr
        torch.sparse.sampled_addmm(
            csr, batch_minor(post).T, batch_minor(pre), beta=keep, alpha=alpha * keep, out=csr
        )

    def to_dense(self) -> Tensor:
        return self.csr.to_dense()

    def support(self) -> Tensor:
        ones = torch.ones_like(self.values, dtype=torch.float32)
        sup = torch.sparse_csr_tensor(
            self.crow, self.col, ones, (self.n_out, self.n_in), check_invariants=False
        )
        return sup.to_dense().bool()

    @property
    def nnz(self) -> int:
        return int(self.col.numel())

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._csr = None
        return super()._apply(fn, recurse)


class IdentityCoupling(Coupling):
    """One-to-one coupling lambda*I between modules of equal size (stored as a vector)."""

    def __init__(self, weight: Tensor):
        super().__init__()
        self.n_out = self.n_in = weight.shape[0]
        self.weight = _frozen(weight)

    def field(self, x: Tensor) -> Tensor:
        return x * self.weight

    def add_field_(self, x: Tensor, out: Tensor) -> Tensor:
        return out.addcmul_(x, self.weight)

    def add_outer_(self, post: Tensor, pre: Tensor, alpha: float, decay: float = 0.0) -> None:
        keep = 1.0 - decay
        self.weight.mul_(keep).add_((post * pre).sum(0), alpha=alpha * keep)

    def to_dense(self) -> Tensor:
        return torch.diag(self.weight.detach())

    def support(self) -> Tensor:
        return torch.eye(self.n_out, dtype=torch.bool, device=self.weight.device)

    @property
    def nnz(self) -> int:
        return self.n_out


def gaussian_coupling(
    n_out: int,
    n_in: int,
    *,
    strength: float,
    density: float,
    generator: torch.Generator,
    zero_diagonal: bool = False,
    sparse: bool = False,
) -> Coupling:
    """strength * G / sqrt(n_in * density) on a Bernoulli(density) support (SPEC §3).

    The random draws do not depend on `sparse`, so the same seed gives the same matrix in
    either storage.
    """
    g = torch.randn(n_out, n_in, generator=generator)
    mask = torch.rand(n_out, n_in, generator=generator) < density if density < 1 else None
    weight = g * (strength / math.sqrt(n_in * density))
    if not sparse:
        return DenseCoupling(weight, mask, zero_diagonal=zero_diagonal)
    support = torch.ones(n_out, n_in, dtype=torch.bool) if mask is None else mask
    if zero_diagonal:
        support = support.clone()
        support.fill_diagonal_(False)
    return SparseCoupling.from_dense(weight, support)


def excitatory_coupling(
    n_out: int, n_in: int, *, lam: float, fan_in: int, generator: torch.Generator
) -> Coupling:
    """Sparse random positive coupling: each unit gets `fan_in` distinct inputs of weight
    lam / fan_in, so a unit whose partners all agree receives lam, as with lam*I."""
    cols = torch.rand(n_out, n_in, generator=generator).argsort(dim=1)[:, :fan_in]
    cols = cols.sort(dim=1).values.reshape(-1)
    crow = torch.arange(0, n_out * fan_in + 1, fan_in)
    values = torch.full((n_out * fan_in,), lam / fan_in)
    return SparseCoupling(crow, cols, values, (n_out, n_in))


def convert(coupling: Coupling, fmt: str) -> Coupling:
    """The same matrix stored as "dense" (masked) or "csr"; identity couplings stay as they are."""
    if isinstance(coupling, IdentityCoupling):
        return coupling
    if fmt == "csr":
        if isinstance(coupling, SparseCoupling):
            return coupling
        return SparseCoupling.from_dense(coupling.to_dense(), coupling.support())
    if fmt == "dense":
        if isinstance(coupling, DenseCoupling):
            return coupling
        support = coupling.support()
        square_no_diag = coupling.n_out == coupling.n_in and not bool(support.diagonal().any())
        full = bool(support.all()) or (
            square_no_diag and int(support.sum()) == coupling.n_out * (coupling.n_out - 1)
        )
        return DenseCoupling(
            coupling.to_dense(), None if full else support, zero_diagonal=square_no_diag
        )
    raise ValueError(f"format={fmt!r} is not valid; accepted values: dense, csr")
