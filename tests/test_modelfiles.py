"""Model files: round trip, and every hand-crafted or corrupted file refused by a RunError."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch

from darnn.config import NetworkConfig
from darnn.couplings import SparseCoupling
from darnn.errors import RunError
from darnn.files import atomic_write
from darnn.modelfiles import check_tensors, load_model, save_model
from darnn.network import Network

CSR = NetworkConfig(hidden=(30,), j_density=0.2, w_in_density=0.5, sparse_format="csr")
J = "recurrent.J.0"


def saved(tmp_path: Path, config: NetworkConfig = CSR) -> tuple[Network, Path]:
    net = Network(config, 12, 3, seed=4)
    save_model(net, tmp_path / "model", seed=4)
    return net, tmp_path / "model"


def rewrite(stem: Path, edit_tensors=None, edit_info=None) -> None:  # type: ignore[no-untyped-def]
    """Change the saved tensors and/or model.json, keeping the SHA-256 consistent.

    As a deliberate forger would.
    """
    weights, manifest = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    tensors = safetensors.torch.load_file(str(weights))
    if edit_tensors is not None:
        edit_tensors(tensors)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    blob = safetensors.torch.save(tensors, metadata={"format": "darnn-model"})
    weights.write_bytes(blob)
    info = json.loads(manifest.read_text())
    info["sha256"] = hashlib.sha256(blob).hexdigest()
    if edit_info is not None:
        edit_info(info)
    manifest.write_text(json.dumps(info))


def test_round_trip_keeps_every_tensor(tmp_path: Path) -> None:
    net, stem = saved(tmp_path)
    back = load_model(stem)
    assert isinstance(back.recurrent.J[0], SparseCoupling)
    for (name, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def set_(key: str, values: list[int]):  # type: ignore[no-untyped-def]
    def edit(tensors: dict[str, torch.Tensor]) -> None:
        t = tensors[key].clone()
        for i, v in enumerate(values):
            t[i] = v
        tensors[key] = t

    return edit


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (set_(f"{J}.col", [10**6]), r"column index 1000000 is outside \[0, 30\)"),
        (set_(f"{J}.col", [-5]), "column index -5 is outside"),
        (set_(f"{J}.crow", [0, 10**6]), "crow decreases"),
        (set_(f"{J}.crow", [3]), r"crow\[0\] is 3"),
        (lambda t: t.update({f"{J}.crow": t[f"{J}.crow"][:-1]}), "needs 31"),
        (lambda t: t.update({f"{J}.col": t[f"{J}.col"][:-1]}), "column indices"),
        (lambda t: t.update({f"{J}.col": t[f"{J}.col"].float()}), "int32/int64"),
        (lambda t: t.update({f"{J}.values": t[f"{J}.values"][:-2]}), "values"),
        (lambda t: t.update({"w_in.0.col": t["w_in.0.col"].flip(0)}), "strictly increasing"),
        (lambda t: t.update({"w_back": t["w_back"][:, :2]}), r"w_back has dtype .* \(30, 2\)"),
        (lambda t: t.update({"w_back": t["w_back"].double()}), "float64"),
        (lambda t: t.pop("w_back"), "w_back"),
        (set_("w_back", [float("nan")]), "NaN"),
    ],
)
def test_crafted_tensors_are_refused(tmp_path: Path, edit, needle: str) -> None:  # type: ignore[no-untyped-def]
    _, stem = saved(tmp_path)
    rewrite(stem, edit_tensors=edit)
    with pytest.raises(RunError, match=needle) as info:
        load_model(stem)
    assert "model.safetensors" in str(info.value)


def test_crafted_mask_is_refused(tmp_path: Path) -> None:
    _, stem = saved(tmp_path, NetworkConfig(hidden=(20,), j_density=0.5, sparse_format="dense"))
    rewrite(stem, edit_tensors=set_(f"{J}.mask", [7]))
    with pytest.raises(RunError, match="other than 0 and 1"):
        load_model(stem)


def test_another_valid_support_is_loaded(tmp_path: Path) -> None:
    # A file whose support differs from the one the seed draws (e.g. saved by a darnn that
    # drew masks differently) loads as stored: the file wins once its indices are valid.
    net, stem = saved(tmp_path)
    dense = net.recurrent.J[0].to_dense()
    dense[0] = 0.0  # remove row 0's entries
    dense[0, 5] = 0.5  # ... and store exactly one
    support = dense != 0
    crafted = SparseCoupling.from_dense(dense, support)

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        tensors[f"{J}.crow"] = crafted.crow.clone()
        tensors[f"{J}.col"] = crafted.col.clone()
        tensors[f"{J}.values"] = crafted.values.detach().clone()

    rewrite(stem, edit_tensors=edit)
    back = load_model(stem)
    assert back.recurrent.J[0].nnz == crafted.nnz != net.recurrent.J[0].nnz
    assert torch.equal(back.recurrent.J[0].to_dense(), dense)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("n_classes", 10**9, r"n_classes = 1000000000 .* \[2, 10000\]"),
        ("n_classes", 1, "n_classes"),
        ("n_classes", 3.5, "n_classes"),
        ("n_features", 10**12, "n_features"),
        ("n_features", True, "n_features"),
        ("seed", "x", "seed"),
        ("seed", 2**70, "seed"),
        ("dtype", "float16", "dtype"),
        ("sha256", 5, "sha256"),
        ("network", [1, 2], "network"),
        ("network", {"hidden": [10**9]}, r"needs an estimated .* GiB"),
        ("network", {"hidden": [-3]}, "hidden"),
        ("network", {"hidden": "x" * 10**6}, r"chars\)"),
    ],
)
def test_absurd_descriptions_are_refused_before_allocating(
    tmp_path: Path, field: str, value: object, needle: str
) -> None:
    _, stem = saved(tmp_path)
    rewrite(stem, edit_info=lambda info: info.update({field: value}))
    with pytest.raises(RunError, match=needle) as info:
        load_model(stem)
    assert "model.json" in str(info.value) and len(str(info.value)) < 1500


def test_missing_field_is_named(tmp_path: Path) -> None:
    _, stem = saved(tmp_path)
    rewrite(stem, edit_info=lambda info: info.pop("n_classes"))
    with pytest.raises(RunError, match="no field n_classes"):
        load_model(stem)


def test_check_tensors_guards_checkpoint_weights(tmp_path: Path) -> None:
    net = Network(CSR, 12, 3, seed=0)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    weights[f"{J}.col"][0] = 31
    with pytest.raises(RunError, match="invalid indices"):
        check_tensors(Network(CSR, 12, 3, seed=0), weights, tmp_path / "checkpoint.safetensors")


def test_atomic_write_applies_the_umask_without_changing_it(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "f.txt", lambda s: s.write(b"x"))
        assert os.umask(0o027) == 0o027  # still what it was set to
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary left


def test_atomic_write_leaves_nothing_when_writing_fails(tmp_path: Path) -> None:
    def fail(stream) -> None:  # type: ignore[no-untyped-def]
        stream.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "f.txt", fail)
    assert list(tmp_path.iterdir()) == []


def test_import_does_not_touch_the_umask() -> None:
    code = """
        import os
        calls = []
        real = os.umask
        os.umask = lambda mask: calls.append(mask) or real(mask)
        import darnn.files, darnn.modelfiles, darnn.training, darnn.cli
        assert not calls, calls
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
