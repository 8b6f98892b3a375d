import math
from pathlib import Path

import numpy as np
import pytest
import torch

from darnn.config import NetworkConfig
from darnn.couplings import DenseCoupling, IdentityCoupling, SparseCoupling, convert
from darnn.memory import NetworkTooLargeError, available_memory, check_memory, estimate_bytes
from darnn.network import Network, Recurrent


def test_same_seed_same_weights_any_format() -> None:
    cfg = NetworkConfig(hidden=(40,), j_density=0.1, w_in_density=0.3, sparse_format="dense")
    dense = Network(cfg, 12, 3, seed=7)
    sparse = Network(NetworkConfig(**{**cfg.__dict__, "sparse_format": "csr"}), 12, 3, seed=7)
    assert isinstance(sparse.recurrent.J[0], SparseCoupling)
    assert isinstance(dense.recurrent.J[0], DenseCoupling)
    assert torch.equal(dense.recurrent.J[0].to_dense(), sparse.recurrent.J[0].to_dense())
    assert torch.equal(dense.w_in[0].to_dense(), sparse.w_in[0].to_dense())
    other = Network(cfg, 12, 3, seed=8)
    assert not torch.equal(dense.w_in[0].to_dense(), other.w_in[0].to_dense())


def test_init_scales_and_structure() -> None:
    cfg = NetworkConfig(hidden=(300, 300), j_density=0.2, w_in_strength=2.0, j_d=0.7)
    net = Network(cfg, 50, 4, seed=0)
    J = net.recurrent.J[0].to_dense()
    assert torch.all(J.diagonal() == 0)
    nz = J[J != 0]
    # off-diagonal entries have variance 1/(N * density)
    assert abs(nz.var().item() * 300 * 0.2 - 1) < 0.1
    assert abs((J != 0).float().mean().item() - 0.2) < 0.01
    assert abs(net.w_in[0].to_dense().var().item() * 50 - 4.0) < 0.4
    assert isinstance(net.recurrent.forward_couplings[0], IdentityCoupling)
    K = net.recurrent.dense_matrix()
    assert K.shape == (600, 600)
    assert torch.all(K.diagonal() == 0.7)
    assert torch.equal(K[300:, :300], torch.eye(300))


def test_sparse_inter_is_positive_with_fan_in() -> None:
    cfg = NetworkConfig(hidden=(30, 20), inter="sparse", inter_fan_in=4, lambda_forward=2.0)
    net = Network(cfg, 5, 2)
    F = net.recurrent.forward_couplings[0].to_dense()
    assert F.shape == (20, 30)
    assert torch.all((F > 0).sum(1) == 4) and torch.all(F >= 0)
    assert torch.allclose(F.sum(1), torch.full((20,), 2.0))


def test_identity_inter_needs_equal_sizes() -> None:
    with pytest.raises(ValueError, match="inter='sparse'"):
        Network(NetworkConfig(hidden=(10, 12)), 3, 2)


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_coupling_field_and_update_match_dense_math(fmt: str) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(9, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(9, 7, generator=g) < 0.4
    c = convert(DenseCoupling(w, mask), fmt)
    ref = w * mask
    x = torch.randn(5, 7, dtype=torch.float64)
    assert torch.allclose(c.field(x), x @ ref.T)
    post, pre = torch.randn(5, 9, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    c.add_outer_(post, pre, alpha=0.3, decay=0.1)
    expected = (ref + 0.3 * (post.T @ pre) * mask) * 0.9
    assert torch.allclose(c.to_dense(), expected)
    assert torch.equal(c.support(), mask)


def test_label_codes() -> None:
    pm1 = Network(NetworkConfig(hidden=(8,), label_encoding="pm1"), 3, 4)
    resc = Network(NetworkConfig(hidden=(8,), label_encoding="rescaled"), 3, 4)
    y = torch.tensor([2])
    code = torch.tensor([[-1.0, -1.0, 1.0, -1.0]])
    assert torch.allclose(pm1.label_field(y), code @ pm1.w_back.T)
    on, off = math.sqrt(3) / 2, -1 / math.sqrt(3)
    assert torch.allclose(resc.label_field(y), torch.tensor([[off, off, on, off]]) @ resc.w_back.T)


def test_from_matrices_rejects_non_square() -> None:
    with pytest.raises(ValueError, match="square"):
        Recurrent.from_matrices([torch.zeros(3, 4)], j_d=0.5)


def test_sparse_memory_scales_with_nonzeros() -> None:
    dense = Network(NetworkConfig(hidden=(400,), j_density=0.01, sparse_format="dense"), 10, 2)
    sparse = Network(NetworkConfig(hidden=(400,), j_density=0.01, sparse_format="csr"), 10, 2)
    # dense J: 2 x 400^2 floats (weights + mask); CSR: ~1600 non-zeros x (value + index)
    assert sparse.recurrent.J[0].nbytes < dense.recurrent.J[0].nbytes / 20


def test_j_d_follows_state_dict_and_setter() -> None:
    a = Network(NetworkConfig(hidden=(6,), j_d=0.3), 2, 2)
    b = Network(NetworkConfig(hidden=(6,), j_d=1.2), 2, 2)
    a.load_state_dict(b.state_dict())
    assert a.recurrent.j_d_value == pytest.approx(1.2)
    a.recurrent.set_j_d(0.7)
    assert a.recurrent.j_d_value == pytest.approx(0.7) and float(a.recurrent.j_d) == pytest.approx(
        0.7
    )


@pytest.mark.parametrize(
    "cfg",
    [
        NetworkConfig(hidden=(120,)),
        NetworkConfig(hidden=(200, 200), j_density=0.05, w_in_density=0.3, sparse_format="csr"),
        NetworkConfig(hidden=(150,), j_density=0.5, w_in_density=0.5, sparse_format="dense"),
        NetworkConfig(hidden=(60, 40), inter="sparse", inter_fan_in=3, input_to_all=True),
    ],
)
def test_memory_estimate_matches_the_built_network(cfg: NetworkConfig) -> None:
    kept, peak = estimate_bytes(cfg, 30, 5, torch.float64)
    actual = Network(cfg, 30, 5, dtype=torch.float64).nbytes
    assert abs(kept - actual) <= 0.05 * actual + 64
    assert peak >= kept


def test_too_large_network_is_refused_before_allocating() -> None:
    with pytest.raises(NetworkTooLargeError, match=r"hidden=\[10000000\].*bytes.*sparse") as info:
        Network(NetworkConfig(hidden=(10_000_000,)), 784, 10)
    assert isinstance(info.value, ValueError)
    # sparse storage of the same size is estimated by its non-zeros
    kept, _ = estimate_bytes(NetworkConfig(hidden=(10_000_000,), j_density=1e-6), 784, 10)
    assert kept < 10 * 10_000_000 * 784 * 4


def test_memory_check_compares_with_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import darnn.memory as memory

    room = available_memory()
    assert room is None or room > 0
    cfg = NetworkConfig(hidden=(100,))
    monkeypatch.setattr(memory, "available_memory", lambda: 1000)
    with pytest.raises(NetworkTooLargeError, match=r"only 9\.31e-07 GiB \(1000 bytes\)"):
        Network(cfg, 10, 2)
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # unknown: no refusal
    assert check_memory(cfg, 10, 2) == estimate_bytes(cfg, 10, 2)[1]


def test_numpy_integer_sizes_and_label_field_without_code_table() -> None:
    net = Network(NetworkConfig(hidden=(16,), label_encoding="rescaled"), np.int64(5), np.int64(7))
    assert net.n_features == 5 and type(net.n_classes) is int
    y = torch.tensor([6, 0, 3])
    on, off = math.sqrt(6) / 2, -1 / math.sqrt(6)
    codes = torch.full((3, 7), off)
    codes[torch.arange(3), y] = on
    assert torch.allclose(net.label_field(y), codes @ net.w_back.T, atol=1e-6)
    assert not any("eye" in name for name, _ in net.named_buffers())


def test_available_memory_reads_meminfo_and_cgroup_limits(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:  4000000 kB\n")
    no_cgroup = tmp_path / "none"
    assert available_memory(meminfo, no_cgroup) == 4000000 * 1024
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("max\n")
    (v2 / "memory.current").write_text("123\n")
    assert available_memory(meminfo, v2) == 4000000 * 1024  # no limit set
    (v2 / "memory.max").write_text("1000000000\n")
    (v2 / "memory.current").write_text("400000000\n")
    assert available_memory(meminfo, v2) == 600_000_000  # the room under the limit
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # none
    (v1 / "memory" / "memory.usage_in_bytes").write_text("5\n")
    assert available_memory(meminfo, v1) == 4000000 * 1024
    (v1 / "memory" / "memory.limit_in_bytes").write_text("2000\n")
    assert available_memory(meminfo, v1) == 1995
    physical = available_memory(tmp_path / "absent", no_cgroup)  # not Linux: total RAM
    assert physical is None or physical > 0


def test_the_label_field_follows_every_change_of_w_back() -> None:
    cfg = NetworkConfig(hidden=(16,), label_encoding="rescaled", w_out_strength=1.0)
    net = Network(cfg, 5, 7, seed=1)
    y = torch.tensor([6, 0, 3])

    def expected() -> torch.Tensor:
        off, on = float(net.label_code[0]), float(net.label_code[1])
        codes = torch.full((3, 7), off)
        codes[torch.arange(3), y] = on
        return codes @ net.w_back.T

    assert torch.allclose(net.label_field(y), expected(), atol=1e-6)
    net.w_back.mul_(-3.0)  # in place
    assert torch.allclose(net.label_field(y), expected(), atol=1e-6)
    other = Network(cfg, 5, 7, seed=2)
    net.load_state_dict(other.state_dict())  # copied in
    assert torch.allclose(net.label_field(y), expected(), atol=1e-6)
    net.w_back = torch.randn(16, 7)  # replaced
    assert torch.allclose(net.label_field(y), expected(), atol=1e-6)
    net.label_code.copy_(torch.tensor([-1.0, 1.0]))  # another code
    assert torch.allclose(net.label_field(y), expected(), atol=1e-6)
    with torch.inference_mode():  # tensors without a version counter
        built = Network(cfg, 5, 7, seed=1)
        first = built.label_field(y)
        built.w_back.mul_(2.0)
        assert torch.allclose(built.label_field(y), 2 * first, atol=1e-6)
