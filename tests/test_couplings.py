"""Construction of the couplings: O(nnz) sampling, its law, and index validation."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import torch

from darnn.couplings import (
    SparseCoupling,
    bernoulli_support,
    check_csr_indices,
    distinct_columns,
    excitatory_coupling,
    gaussian_coupling,
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bernoulli_support_law_and_structure() -> None:
    n, p = 400, 0.05
    crow, col = bernoulli_support(n, n, p, torch.Generator().manual_seed(0), zero_diagonal=True)
    assert check_csr_indices(crow, col, (n, n)) is None
    rows = torch.repeat_interleave(torch.arange(n), crow.diff())
    assert not bool((rows == col.long()).any())  # no diagonal entry
    counts = crow.diff().double()
    m = n - 1  # off-diagonal candidates per row
    # Independent entries: fan-in ~ Binomial(n - 1, p), so mean and variance both match
    # (a fixed count per row would have variance 0).
    assert abs(counts.mean().item() - m * p) < 4 * (m * p * (1 - p) / n) ** 0.5
    assert 0.7 < counts.var().item() / (m * p * (1 - p)) < 1.3
    # Columns are uniform: each column gets about n * p entries.
    per_col = torch.bincount(col.long(), minlength=n).double()
    assert abs(per_col.mean().item() - m * p) < 1.0


def test_masked_coupling_scale_and_formats_agree() -> None:
    def build(sparse: bool) -> torch.Tensor:
        g = torch.Generator().manual_seed(3)
        c = gaussian_coupling(
            300, 200, strength=2.0, density=0.1, generator=g, zero_diagonal=True, sparse=sparse
        )
        return c.to_dense()

    dense, csr = build(False), build(True)
    assert torch.equal(dense, csr)
    values = dense[dense != 0]
    assert abs(values.var().item() * 200 * 0.1 / 4.0 - 1) < 0.1
    assert bool((dense.diagonal() == 0).all())


def test_large_sparse_coupling_never_goes_dense() -> None:
    # Under an address-space cap of ~1.5 GB above what torch itself maps, any dense
    # 10^6 x 10^6 intermediate (4 TB) fails at once; the CSR build needs a few MB.
    result = run_python(
        """
        import resource, torch
        from darnn.couplings import gaussian_coupling, excitatory_coupling, check_csr_indices
        vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1])
        cap = vm * 1024 + (1536 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        g = torch.Generator().manual_seed(0)
        n = 10**6
        c = gaussian_coupling(n, n, strength=1.0, density=1e-7, generator=g,
                              zero_diagonal=True, sparse=True)
        assert check_csr_indices(c.crow, c.col, (n, n)) is None
        assert 50_000 < c.nnz < 150_000, c.nnz
        e = excitatory_coupling(n, n, lam=1.0, fan_in=2, generator=g)
        assert check_csr_indices(e.crow, e.col, (n, n)) is None and e.nnz == 2 * n
        print("nbytes", c.nbytes + e.nbytes)
        """
    )
    if "/proc/self/status" in result.stderr and "FileNotFoundError" in result.stderr:
        pytest.skip("needs /proc (Linux)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) < 64 << 20


def test_distinct_columns_are_uniform_subsets() -> None:
    g = torch.Generator().manual_seed(1)
    for n_in, k in ((50, 3), (10, 7), (6, 6), (8, 0)):
        cols = distinct_columns(2000, n_in, k, g)
        assert cols.shape == (2000, k)
        if k:
            assert bool((cols.diff(dim=1) > 0).all())  # sorted, hence distinct
            assert int(cols.min()) >= 0 and int(cols.max()) < n_in
            hits = torch.bincount(cols.reshape(-1), minlength=n_in).double()
            expected = 2000 * k / n_in
            assert bool(((hits - expected).abs() < 6 * expected**0.5 + 1).all())
    with pytest.raises(ValueError, match="distinct"):
        distinct_columns(3, 4, 5, g)


def test_excitatory_coupling_fan_in_and_weights() -> None:
    c = excitatory_coupling(30, 20, lam=2.0, fan_in=4, generator=torch.Generator().manual_seed(2))
    F = c.to_dense()
    assert torch.equal((F > 0).sum(1), torch.full((30,), 4))
    assert torch.allclose(F.sum(1), torch.full((30,), 2.0))


@pytest.mark.parametrize(
    ("crow", "col", "needle"),
    [
        ([0, 1, 2], [0, 5], "outside"),
        ([0, 1, 2], [0, -1], "outside"),
        ([0, 2, 1], [0, 1], "decreases"),
        ([1, 1, 2], [0, 1], r"crow\[0\]"),
        ([0, 1, 3], [0, 1], "ends at 3"),
        ([0, 1], [0], "needs 3"),
        ([0, 2, 2], [1, 1], "strictly increasing"),
        ([0, 2, 2], [2, 1], "strictly increasing"),
    ],
)
def test_check_csr_indices_names_the_problem(crow: list, col: list, needle: str) -> None:
    message = check_csr_indices(torch.tensor(crow), torch.tensor(col), (2, 3))
    assert message is not None
    assert re.search(needle, message), message


def test_check_csr_indices_types_and_value_count() -> None:
    crow, col = torch.tensor([0, 1, 2]), torch.tensor([0, 2])
    assert check_csr_indices(crow, col, (2, 3)) is None
    assert check_csr_indices(crow, col, (2, 3), nnz=2) is None
    assert "values" in (check_csr_indices(crow, col, (2, 3), nnz=3) or "")
    assert "int32/int64" in (check_csr_indices(crow.float(), col, (2, 3)) or "")
    assert "1-D" in (check_csr_indices(crow, col.view(1, 2), (2, 3)) or "")


def test_from_dense_round_trip() -> None:
    g = torch.Generator().manual_seed(4)
    w = torch.randn(7, 5, generator=g)
    support = torch.rand(7, 5, generator=g) < 0.4
    support[2] = False  # an empty row
    c = SparseCoupling.from_dense(w, support)
    assert check_csr_indices(c.crow, c.col, (7, 5)) is None
    assert torch.equal(c.to_dense(), w * support)
    assert torch.equal(c.support(), support)


def test_import_leaves_warning_filters_alone() -> None:
    result = run_python(
        """
        import warnings
        import numpy, safetensors.torch, torch  # third-party imports may add their own filters
        before = list(warnings.filters)
        import darnn.couplings, darnn.network, darnn.modelfiles
        assert warnings.filters == before, "import changed the warning filters"
        warnings.simplefilter("error")  # a CSR build and product warn nothing to the user
        g = torch.Generator().manual_seed(0)
        c = darnn.couplings.gaussian_coupling(20, 20, strength=1.0, density=0.3, generator=g,
                                              sparse=True)
        c.field(torch.ones(3, 20))
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_edits_counts_in_place_changes_and_none_for_inference_tensors() -> None:
    from darnn.couplings import edits

    t = torch.zeros(3)
    before = edits(t)
    t.add_(1.0)
    assert edits(t) == before + 1
    with torch.inference_mode():
        assert edits(torch.zeros(3)) is None
