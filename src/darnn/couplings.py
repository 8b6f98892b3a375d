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

import contextlib
import math
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

# Above this batch size a CSR product is done in chunks: the (n_in, chunk) block of
# presynaptic states then stays in cache (MKL: ~20 GFLOP/s up to 256 columns on a
# 2 MB-L2 core, half that at 512, a quarter at 4096).
_CSR_CHUNK = 256

# Positions drawn per chunk when sampling a sparse support: bounds the temporaries (~40 MB)
# whatever the number of non-zeros.
_SAMPLE_CHUNK = 1 << 20


@contextlib.contextmanager
def _quiet_csr() -> Iterator[None]:
    """Silence torch's "Sparse CSR tensor support is in beta" notice where CSR tensors are made.

    They work well for the few operations used here. Local, so the user's own warning
    filters are left alone.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


class Coupling(nn.Module):
    """Interface shared by all couplings. Weights are frozen Parameters (no autograd)."""

    n_out: int
    n_in: int

    def field(self, x: Tensor) -> Tensor:
        """Field (B, n_out) produced by presynaptic activity x (B, n_in)."""
        raise NotImplementedError

    def add_field_(self, x: Tensor, out: Tensor) -> Tensor:
        """Add field(x) to ``out`` in place; returns out."""
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
        """Number of entries that exist (the support's size)."""
        return int(self.support().sum())

    @property
    def nbytes(self) -> int:
        """Bytes held by this coupling's tensors (weights, indices, masks)."""
        tensors = [*self.parameters(), *self.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)


def _frozen(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


def edits(t: Tensor) -> int | None:
    """How often ``t`` was changed in place (its version counter), or None.

    Inference tensors keep no count (None): nothing derived from them may be cached.
    """
    return None if t.is_inference() else t._version


def batch_minor(x: Tensor) -> Tensor:
    """The same (B, n) values with the layout of a contiguous (n, B) tensor (copied if needed)."""
    if (x.ndim == 2 and x.stride() == (1, x.shape[0])) or x.T.is_contiguous():  # first: quick
        return x
    return x.T.contiguous().T


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
        """Field (B, n_out) of x (B, n_in): a dense product."""
        return torch.mm(self.weight, x.T).T  # batch-minor result; BLAS takes any x layout

    def add_field_(self, x: Tensor, out: Tensor) -> Tensor:
        """Add field(x) to ``out`` in place (one addmm); returns out."""
        return out.addmm_(x, self.weight.T)

    def add_outer_(self, post: Tensor, pre: Tensor, alpha: float, decay: float = 0.0) -> None:
        """W <- (W + alpha * post^T pre) * (1 - decay), then the mask and zero diagonal."""
        keep = 1.0 - decay
        self.weight.addmm_(post.T, pre, beta=keep, alpha=alpha * keep)
        if self.mask is not None:
            self.weight.mul_(self.mask)
        if self.zero_diagonal:
            self.weight.diagonal().zero_()

    def to_dense(self) -> Tensor:
        """A copy of the (n_out, n_in) matrix."""
        return self.weight.detach().clone()

    def support(self) -> Tensor:
        """Boolean (n_out, n_in) mask: the mask's non-zeros, without the diagonal of a J."""
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
        """The entries of a dense (n_out, n_in) ``weight`` on the boolean ``support``."""
        rows, cols = support.nonzero(as_tuple=True)  # row-major order, as CSR stores them
        counts = torch.bincount(rows, minlength=support.shape[0])
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls(crow, cols, weight[rows, cols].clone(), weight.shape)

    @property
    def csr(self) -> Tensor:
        """The matrix as a torch sparse CSR tensor sharing ``values``."""
        # A view sharing `values`; rebuilt only after .to()/load_state_dict replaced tensors.
        csr = self._csr
        if csr is None or csr.values().data_ptr() != self.values.data_ptr():
            # No invariant check here: the indices were built by this module or validated by
            # check_csr_indices when read from a file.
            with _quiet_csr():
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
        """W @ xt for a contiguous (n_in, B) xt.

        addmm with beta=0 skips the zero-fill and the copy that `csr @ xt` adds.
        """
        out = xt.new_empty(self.n_out, xt.shape[1])
        return torch.addmm(out, self.csr, xt, beta=0.0, out=out)

    def field(self, x: Tensor) -> Tensor:
        """Field (B, n_out) of x (B, n_in): a sparse product, in chunks of the batch on CPU."""
        if x.shape[0] <= _CSR_CHUNK or x.device.type != "cpu":
            return self._product(batch_minor(x).T).T
        parts = [self._product(c.T.contiguous()) for c in x.split(_CSR_CHUNK)]
        return torch.cat(parts, dim=1).T

    def add_field_(self, x: Tensor, out: Tensor) -> Tensor:
        """Add field(x) to ``out`` in place (no temporary when out is batch-minor)."""
        if not out.T.is_contiguous() or x.shape[0] > _CSR_CHUNK:
            return out.add_(self.field(x))
        torch.addmm(out.T, self.csr, batch_minor(x).T, out=out.T)  # in place, no temporary
        return out

    def add_outer_(self, post: Tensor, pre: Tensor, alpha: float, decay: float = 0.0) -> None:
        """W <- (W + alpha * post^T pre) * (1 - decay) on the stored entries only."""
        keep = 1.0 - decay
        # Sampled dense-dense product: only the stored entries of post^T pre are formed,
        # written in place into `values` (the CSR view shares them). Batch-minor operands
        # make every entry a dot product of two contiguous length-B rows (~2x faster).
        csr = self.csr
        torch.sparse.sampled_addmm(
            csr, batch_minor(post).T, batch_minor(pre), beta=keep, alpha=alpha * keep, out=csr
        )

    def to_dense(self) -> Tensor:
        """The full (n_out, n_in) matrix with zeros outside the support."""
        return self.csr.to_dense()

    def support(self) -> Tensor:
        """Boolean (n_out, n_in) mask of the stored entries."""
        sup = torch.zeros(self.n_out, self.n_in, dtype=torch.bool, device=self.values.device)
        sup[row_indices(self.crow), self.col.long()] = True
        return sup

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
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
        """Field (B, n) of x (B, n): lambda_i x_i."""
        return x * self.weight

    def add_field_(self, x: Tensor, out: Tensor) -> Tensor:
        """Add field(x) to ``out`` in place; returns out."""
        return out.addcmul_(x, self.weight)

    def add_outer_(self, post: Tensor, pre: Tensor, alpha: float, decay: float = 0.0) -> None:
        """Update the diagonal: lambda <- (lambda + alpha sum_b post_b pre_b) (1 - decay)."""
        keep = 1.0 - decay
        self.weight.mul_(keep).add_((post * pre).sum(0), alpha=alpha * keep)

    def to_dense(self) -> Tensor:
        """The (n, n) diagonal matrix."""
        return torch.diag(self.weight.detach())

    def support(self) -> Tensor:
        """The (n, n) boolean identity."""
        return torch.eye(self.n_out, dtype=torch.bool, device=self.weight.device)

    @property
    def nnz(self) -> int:
        """The n diagonal entries."""
        return self.n_out


def row_indices(crow: Tensor) -> Tensor:
    """Row of every stored entry of a CSR matrix (int64, in storage order)."""
    counts = (crow[1:] - crow[:-1]).long()
    return torch.repeat_interleave(torch.arange(len(counts), device=crow.device), counts)


def check_csr_indices(
    crow: Tensor, col: Tensor, shape: tuple[int, int], *, nnz: int | None = None
) -> str | None:
    """Why (crow, col) are not valid CSR indices of a matrix of ``shape``, or None if they are.

    Checked before any sparse matrix is built from indices read from a file: a hand-made or
    corrupted index would otherwise make the sparse kernels read or write out of bounds.
    Requires integer 1-D tensors, len(crow) == n_rows + 1, crow[0] == 0, crow non-decreasing,
    crow[-1] == len(col) (== ``nnz`` when given), every column in [0, n_cols) and strictly
    increasing within a row (as every builder here writes them: sorted, no entry twice).
    """
    n_rows, n_cols = shape
    for name, t in (("crow", crow), ("col", col)):
        if t.dtype not in (torch.int32, torch.int64) or t.ndim != 1:
            shape = tuple(t.shape)
            return f"{name} must be a 1-D int32/int64 tensor, got {t.dtype} of shape {shape}"
    if len(crow) != n_rows + 1:
        return f"crow has {len(crow)} entries; a matrix of {n_rows} rows needs {n_rows + 1}"
    crow64, col64 = crow.long(), col.long()
    if int(crow64[0]) != 0:
        return f"crow[0] is {int(crow64[0])}, not 0"
    steps = crow64[1:] - crow64[:-1]
    if bool((steps < 0).any()):
        row = int(torch.nonzero(steps < 0)[0])
        return f"crow decreases after row {row} (row pointers must be non-decreasing)"
    if int(crow64[-1]) != len(col) or (nnz is not None and len(col) != nnz):
        return f"crow ends at {int(crow64[-1])} but there are {len(col)} column indices" + (
            "" if nnz is None else f" and {nnz} values"
        )
    if len(col) and bool(((col64 < 0) | (col64 >= n_cols)).any()):
        bad = int(col64[(col64 < 0) | (col64 >= n_cols)][0])
        return f"column index {bad} is outside [0, {n_cols})"
    if len(col):
        rows = row_indices(crow64)
        unsorted = (rows[1:] == rows[:-1]) & (col64[1:] <= col64[:-1])
        if bool(unsorted.any()):
            row = int(rows[1:][unsorted][0])
            return f"the column indices of row {row} are not strictly increasing"
    return None


def bernoulli_support(
    n_out: int,
    n_in: int,
    density: float,
    generator: torch.Generator,
    *,
    zero_diagonal: bool = False,
) -> tuple[Tensor, Tensor]:
    """CSR (crow, col) of an i.i.d. Bernoulli(density) support, in O(nnz) time and memory.

    Instead of one uniform per entry, the gaps between successive entries of the row-major
    sequence are drawn (geometric, P(gap > k) = (1 - density)^k), so the cost follows the
    number of non-zeros, never n_out * n_in. With ``zero_diagonal`` the diagonal entries are
    dropped after drawing, so the off-diagonal law is unchanged. Bernoulli (not a fixed count
    per row) keeps the law the dense mask always had: every entry independent, the fan-in of
    a unit Binomial(n_in, density).
    """
    total = n_out * n_in
    log_q = math.log1p(-density)
    counts = torch.zeros(n_out, dtype=torch.int64)
    cols: list[Tensor] = []
    index = torch.int32 if n_in < 2**31 else torch.int64
    last = -1  # flat position of the last entry drawn
    while last < total:
        expected = (total - 1 - last) * density
        m = int(min(_SAMPLE_CHUNK, expected + 6 * math.sqrt(expected) + 16))
        u = torch.rand(m, generator=generator, dtype=torch.float64)
        # floor(log(1-u)/log(1-p)) failures before the next success; 1-u lies in (0, 1].
        gaps = torch.log1p(-u).div_(log_q).floor_().clamp_(max=total).to(torch.int64).add_(1)
        pos = gaps.cumsum_(0).add_(last)
        last = int(pos[-1])
        pos = pos[pos < total]
        rows = pos // n_in
        c = pos - rows * n_in
        if zero_diagonal:
            keep = rows != c
            rows, c = rows[keep], c[keep]
        counts += torch.bincount(rows, minlength=n_out)
        cols.append(c.to(index))
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return crow, torch.cat(cols) if cols else torch.zeros(0, dtype=index)


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
    """A random coupling, strength * G / sqrt(n_in * density) on a Bernoulli(density) support.

    See docs/model.md#a-single-module.

    The random draws do not depend on `sparse`, so the same seed gives the same matrix in
    either storage. A masked coupling is drawn as CSR (support, then one Gaussian per
    non-zero): stored sparse it never has a dense n_out x n_in intermediate.
    """
    scale = strength / math.sqrt(n_in * density)
    if density >= 1:
        weight = torch.randn(n_out, n_in, generator=generator).mul_(scale)
        if not sparse:
            return DenseCoupling(weight, zero_diagonal=zero_diagonal)
        support = torch.ones(n_out, n_in, dtype=torch.bool)
        if zero_diagonal:
            support.fill_diagonal_(False)
        return SparseCoupling.from_dense(weight, support)
    crow, col = bernoulli_support(n_out, n_in, density, generator, zero_diagonal=zero_diagonal)
    values = torch.randn(len(col), generator=generator).mul_(scale)
    if sparse:
        return SparseCoupling(crow, col, values, (n_out, n_in))
    rows, cols = row_indices(crow), col.long()
    weight = torch.zeros(n_out, n_in)
    weight[rows, cols] = values
    mask = torch.zeros(n_out, n_in, dtype=torch.bool)
    mask[rows, cols] = True
    return DenseCoupling(weight, mask, zero_diagonal=zero_diagonal)


def distinct_columns(n_out: int, n_in: int, k: int, generator: torch.Generator) -> Tensor:
    """(n_out, k) sorted column indices, each row a uniform k-subset of range(n_in).

    O(n_out * k) work for k <= n_in / 2: draw k columns per row with replacement, then
    redraw the repeated ones until none is left (each redraw succeeds with probability
    >= 1/2). The procedure treats every column label alike, so the subset is uniform.
    Larger k pick the n_in - k columns to leave out the same way.
    """
    if not 0 <= k <= n_in:
        raise ValueError(f"cannot pick {k} distinct columns out of {n_in}")
    if 2 * k > n_in:
        left_out = distinct_columns(n_out, n_in, n_in - k, generator)
        keep = torch.ones(n_out, n_in, dtype=torch.bool)  # O(n_out * n_in) <= 2 n_out k
        keep.scatter_(1, left_out, False)
        return keep.nonzero()[:, 1].view(n_out, k)
    cols = torch.randint(n_in, (n_out, k), generator=generator)
    while True:
        cols = cols.sort(dim=1).values
        repeated = torch.zeros_like(cols, dtype=torch.bool)
        repeated[:, 1:] = cols[:, 1:] == cols[:, :-1]
        n = int(repeated.sum())
        if n == 0:
            return cols
        cols[repeated] = torch.randint(n_in, (n,), generator=generator)


def excitatory_coupling(
    n_out: int, n_in: int, *, lam: float, fan_in: int, generator: torch.Generator
) -> Coupling:
    """Sparse random positive coupling: `fan_in` distinct inputs of weight lam / fan_in per unit.

    So a unit whose partners all agree receives lam, as with lam*I.
    """
    cols = distinct_columns(n_out, n_in, fan_in, generator).reshape(-1)
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


def coupling_rows(coupling: Coupling) -> tuple[Tensor, Tensor, Tensor]:
    """(crow, col, values) of the entries a coupling stores, row by row (CSR arrays).

    Read-only, for algorithms that visit a matrix row by row or column by column (the
    asynchronous dynamics): a CSR coupling hands over its own arrays, so memory stays
    proportional to the non-zeros; a dense one lists its support, a one-to-one its diagonal.
    """
    if isinstance(coupling, SparseCoupling):
        return coupling.crow, coupling.col, coupling.values.detach()
    if isinstance(coupling, IdentityCoupling):
        n = coupling.n_out
        diag = torch.arange(n, device=coupling.weight.device)
        return torch.arange(n + 1, device=diag.device), diag, coupling.weight.detach()
    rows, cols = coupling.support().nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=coupling.n_out)
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return crow, cols, coupling.to_dense()[rows, cols]
