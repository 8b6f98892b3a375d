"""The asynchronous schedule: one unit at a time, in a random order per sample and sweep.

The loop over units belongs to the algorithm, so it runs in NumPy on the CPU; each flip
updates the fields of its sample by one column of the chain's matrix K (`chain_columns`).
`darnn.dynamics.make_sweep` hands this `Sweep` to the one driver, `relax`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .couplings import Coupling, coupling_rows
from .network import Recurrent

if TYPE_CHECKING:
    import scipy.sparse

# The asynchronous schedule adds a column of the chain's matrix to the fields at every
# flip. Columns are kept dense when at least this fraction of the entries exist: a dense
# row is 2-4x faster to add than a CSR one and then costs at most 4x the stored entries.
DENSE_FRACTION = 0.25


class AsynchronousSweep:
    """One unit at a time: the asynchronous sweep.

    The loop over units belongs to the algorithm; it runs in NumPy
    (about 1 us per step) on the active samples and keeps their fields up to date by adding
    the flipped unit's column of the chain's matrix K (J_D on its diagonal). The columns
    come from the couplings' own rows (`coupling_rows`), so their memory follows the
    non-zeros; they are densified only when at least a quarter of K exists. Each sweep ends
    with fresh fields from the couplings, so the column additions never accumulate rounding.
    """

    def __init__(self, net: Recurrent, generator: torch.Generator | None):
        self.net = net
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.columns = chain_columns(net)

    def __call__(
        self, s: list[Tensor], ext: Sequence[Tensor], h: list[Tensor], active: Tensor | None
    ) -> None:
        """One sweep in place on ``s`` and ``h`` for the ``active`` samples (None: all)."""
        dev, dtype = s[0].device, s[0].dtype
        rows = (
            torch.arange(s[0].shape[0], device=dev)
            if active is None
            else active.nonzero().squeeze(1)
        )
        if rows.numel() == 0:
            return
        state = gather_cpu64(s, rows)
        field = gather_cpu64(h, rows)
        n_act, n = state.shape
        order = torch.rand(n_act, n, generator=self.generator).argsort(dim=1).numpy()
        add_column = self._dense_add if isinstance(self.columns, np.ndarray) else self._csr_add
        sample = np.arange(n_act)
        for step in range(n):
            unit = order[:, step]
            new = np.where(field[sample, unit] >= 0, 1.0, -1.0)
            delta = new - state[sample, unit]
            moved = np.flatnonzero(delta)
            if moved.size:
                state[moved, unit[moved]] = new[moved]
                add_column(field, moved, unit[moved], delta[moved])
        new_states = torch.from_numpy(state).to(dev, dtype).split(list(self.net.sizes), dim=1)
        for sl, new_l in zip(s, new_states):
            sl.index_copy_(0, rows, new_l)
        self.net.total_fields_(s, ext, h)

    def _dense_add(
        self, field: np.ndarray, moved: np.ndarray, unit: np.ndarray, d: np.ndarray
    ) -> None:
        """field[moved[k]] += d[k] * column unit[k] of K, for every k."""
        field[moved] += d[:, None] * self.columns[unit]

    def _csr_add(
        self, field: np.ndarray, moved: np.ndarray, unit: np.ndarray, d: np.ndarray
    ) -> None:
        """`_dense_add` with CSR columns: only the stored entries are touched."""
        cols = self.columns
        assert not isinstance(cols, np.ndarray)
        start = cols.indptr[unit]
        length = cols.indptr[unit + 1] - start
        end = np.cumsum(length)
        if end[-1] == 0:
            return
        # Entries start[k] .. start[k] + length[k] of every moved sample k, flattened.
        at = np.repeat(start - (end - length), length) + np.arange(end[-1])
        flat = np.repeat(moved * field.shape[1], length) + cols.indices[at]
        field.reshape(-1)[flat] += cols.data[at] * np.repeat(d, length)  # no index twice


def gather_cpu64(xs: list[Tensor], rows: Tensor) -> np.ndarray:
    """Rows `rows` of the modules' (B, N_l) tensors side by side, as a NumPy array.

    A float64 (B', sum N_l) C-contiguous array that the caller may overwrite.
    """
    parts = [x.index_select(0, rows).to("cpu", torch.float64) for x in xs]
    return torch.cat(parts, dim=1).numpy()


def chain_columns(net: Recurrent) -> np.ndarray | scipy.sparse.csr_matrix:
    """The chain's matrix K (h_int = s K^T, J_D on the diagonal) transposed, in float64.

    Row j holds the effect of unit j on every unit.
    """
    # Imported here: importing scipy.sparse adds a warning filter (no side effects at import).
    import scipy.sparse

    sizes = net.sizes
    total = sum(sizes)
    blocks = net.chain_blocks()
    nnz = total + sum(c.nnz for _, _, c in blocks)
    if nnz >= DENSE_FRACTION * total * total:
        K = net.dense_matrix().to("cpu", torch.float64).numpy()
        return np.ascontiguousarray(K.T)

    def block(c: Coupling) -> scipy.sparse.csr_matrix:
        crow, col, values = (t.to("cpu").numpy() for t in coupling_rows(c))
        return scipy.sparse.csr_matrix(
            (values.astype(np.float64), col, crow), shape=(c.n_out, c.n_in)
        )

    grid: list[list[scipy.sparse.csr_matrix | None]] = [[None] * len(sizes) for _ in sizes]
    for fed, read, coupling in blocks:
        grid[fed][read] = block(coupling)
    K = scipy.sparse.bmat(grid, format="csr")
    if net.j_d_value:
        K = K + scipy.sparse.identity(total, format="csr") * net.j_d_value
    return K.T.tocsr()
