"""CIFAR-10 binary files, feature sets and the feature preprocessing keys.

Feature sets: Parquet, Arrow, npz, Hugging Face; on small files written here (nothing is
downloaded).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from darnn.data import DataError, load_dataset
from darnn.data import cifar as cifar_module
from darnn.data.features import load_features

from cli_helpers import assert_user_error, run_main

pa = pytest.importorskip("pyarrow")  # the `features` extra (scripts/setup.sh installs it)
pq = pytest.importorskip("pyarrow.parquet")
feather = pytest.importorskip("pyarrow.feather")


# ----------------------------------------------------------------------------- CIFAR-10
def write_cifar(folder: Path, records: int = 7, seed: int = 0) -> Path:
    """The six binary batch files, `records` random records each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in cifar_module.FILES:
        body = rng.integers(0, 256, (records, 3073), dtype=np.uint8)
        body[:, 0] = rng.integers(0, 10, records)
        (folder / name).write_bytes(body.tobytes())
    return folder


def read_cifar_independently(path: Path) -> tuple[list[list[float]], list[int]]:
    """Record by record, byte by byte: label, then 3072 pixels scaled to [0, 1]."""
    data = path.read_bytes()
    xs, ys = [], []
    for start in range(0, len(data), 3073):
        record = data[start : start + 3073]
        ys.append(record[0])
        xs.append([b / 255.0 for b in record[1:]])
    return xs, ys


def test_cifar_binary_files_equal_an_independent_reader(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "cifar-10-batches-bin")
    X, y, X_test, y_test, n_classes, source = cifar_module.load(tmp_path)
    assert source == str(folder) and n_classes == 10
    xs, ys = [], []
    for name in cifar_module.FILES[:-1]:
        a, b = read_cifar_independently(folder / name)
        xs += a
        ys += b
    np.testing.assert_allclose(X, np.array(xs, dtype=np.float32), rtol=0, atol=1e-7)
    assert y.tolist() == ys and X.shape == (35, 3072)
    xt, yt = read_cifar_independently(folder / "test_batch.bin")
    np.testing.assert_allclose(X_test, np.array(xt, dtype=np.float32), rtol=0, atol=1e-7)
    assert y_test.tolist() == yt
    data = load_dataset("cifar10", data_dir=tmp_path, val_size=5)
    assert data.n_features == 3072 and len(data.y_val) == 5 and len(data.y_test) == 7


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "not a whole number of 3073-byte"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0" * 5), "not a whole number of 3073-byte"),
        (lambda p: p.write_bytes(b"\x0c" + p.read_bytes()[1:]), "label byte 12"),
    ],
    ids=["truncated", "oversized-record", "bad-label"],
)
def test_cifar_damaged_file_is_named(tmp_path: Path, damage, fragment: str) -> None:  # type: ignore[no-untyped-def]
    folder = write_cifar(tmp_path / "cifar10")
    damage(folder / "data_batch_3.bin")
    with pytest.raises(DataError, match=fragment) as err:
        cifar_module.load(tmp_path)
    assert "data_batch_3.bin" in str(err.value)


def test_cifar_file_with_too_many_records_is_refused(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "cifar10")
    with open(folder / "test_batch.bin", "r+b") as f:  # a sparse file of 10001 zero records
        f.truncate(10_001 * 3073)
    with pytest.raises(DataError, match="at most 10000"):
        cifar_module.load(tmp_path)


def test_cifar_missing_says_which_files_go_where(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        cifar_module.load(tmp_path / "nowhere")
    message = str(err.value)
    for name in cifar_module.FILES:
        assert name in message
    assert str(tmp_path / "nowhere" / "cifar10" / "cifar-10-batches-bin") in message


def test_cli_damaged_cifar_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_cifar(tmp_path / "data" / "cifar10")
    (folder / "data_batch_1.bin").write_bytes(b"\0" * 100)
    out = tmp_path / "run"
    code, _, err = run_main(
        capsys,
        "train",
        "--out",
        str(out),
        "--data-dir",
        str(tmp_path / "data"),
        "data.name=cifar10",
    )
    assert_user_error(code, err, "data_batch_1.bin")
    assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- feature files
def features_table(n: int = 30, d: int = 5, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), np.arange(n) % 3


def test_parquet_list_column_equals_the_arrays_written(tmp_path: Path) -> None:
    X, y = features_table()
    table = pa.table(
        {"x": pa.array(X.tolist(), pa.list_(pa.float32())), "y": pa.array(y, pa.int32())}
    )
    pq.write_table(table, tmp_path / "f.parquet")
    Xr, yr, X_test, _, n_classes, _ = load_features(f"features:{tmp_path / 'f.parquet'}")
    # independent reader: the rows as Python lists, read back by pyarrow's row API
    rows = pq.read_table(tmp_path / "f.parquet").to_pylist()
    np.testing.assert_array_equal(Xr, np.array([r["x"] for r in rows], dtype=np.float32))
    assert yr.tolist() == [r["y"] for r in rows] and X_test is None and n_classes == 3


def test_numeric_columns_and_arrow_files(tmp_path: Path) -> None:
    X, y = features_table()
    table = pa.table({**{f"f{i}": X[:, i] for i in range(X.shape[1])}, "label": y})
    feather.write_feather(table, tmp_path / "train.arrow")
    # an IPC stream, the layout of the datasets library's cache files
    with (
        pa.OSFile(str(tmp_path / "test.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table.slice(0, 9))
    Xr, yr, X_test, y_test, _, source = load_features(f"features:{tmp_path}")
    np.testing.assert_array_equal(Xr, X)
    np.testing.assert_array_equal(X_test, X[:9])
    assert yr.tolist() == y.tolist() and y_test.tolist() == y[:9].tolist()
    assert source == str(tmp_path)


def test_npz_features_and_load_dataset_with_preprocessing(tmp_path: Path) -> None:
    X, y = features_table(60, 6)
    np.savez(tmp_path / "train.npz", x=X * 3 + 1, y=y)
    np.savez(tmp_path / "validation.npz", x=X[:12] * 3 + 1, y=y[:12])
    data = load_dataset(
        f"features:{tmp_path}",
        val_size=6,
        per_class=10,
        standardize=True,
        projection_dim=4,
        sign=True,
    )
    assert len(data.y_test) == 12 and np.bincount(data.y_train).tolist() == [10, 10, 10]
    assert data.n_features == 4 and set(np.unique(data.X_train)) <= {-1.0, 1.0}
    plain = load_dataset(f"features:{tmp_path}", val_size=6, standardize=True)
    np.testing.assert_allclose(plain.X_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(plain.X_train.std(axis=0), 1, atol=1e-5)


def write_npz(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (
            lambda p: write_npz(p / "a.npz", x=np.ones((4, 2)), y=np.array([0, 1, 0])),
            "4 rows but y",
        ),
        (
            lambda p: write_npz(p / "a.npz", x=np.array([[1.0, np.nan]] * 2), y=np.array([0, 1])),
            "NaN",
        ),
        (
            lambda p: write_npz(p / "a.npz", x=np.ones((2, 2)), y=np.array([0.0, 1.0])),
            "dtype float64",
        ),
        (
            lambda p: pq.write_table(
                pa.table({"x": [[1.0], [2.0]], "y": ["cat", "dog"]}), p / "a.parquet"
            ),
            "label column 'y' has type string",
        ),
        (
            lambda p: pq.write_table(
                pa.table({"x": [[1.0], [2.0]], "label": [0.0, 1.0]}), p / "a.parquet"
            ),
            "label column 'label' has type double",
        ),
        (
            lambda p: pq.write_table(
                pa.table({"x": [[1.0], [np.inf]], "y": [0, 1]}), p / "a.parquet"
            ),
            "infinite",
        ),
    ],
    ids=["length", "nan", "float-labels", "string-label-column", "float-label-column", "inf"],
)
def test_bad_feature_files_are_named(tmp_path: Path, make, fragment: str) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(DataError, match=fragment) as err:
        load_features(f"features:{path}")
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- Hugging Face
def test_hf_local_folder_needs_no_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # importing it would fail
    X, y = features_table()
    folder = tmp_path / "willinki" / "cifar10-features-s"
    folder.mkdir(parents=True)
    for split in ("train", "validation"):
        pq.write_table(pa.table({"x": X.tolist(), "y": y}), folder / f"{split}.parquet")
    Xr, _, X_test, _, _, _ = load_features("hf:willinki/cifar10-features-s", tmp_path)
    np.testing.assert_array_equal(Xr, X)
    np.testing.assert_array_equal(X_test, X)


class FakeSplit:
    """What `datasets` gives: ``split.with_format("arrow")[:]`` is a pyarrow Table."""

    def __init__(self, table: object) -> None:
        self.table = table

    def with_format(self, kind: str) -> FakeSplit:
        assert kind == "arrow"
        return self

    def __getitem__(self, rows: slice) -> object:
        assert rows == slice(None)
        return self.table


def test_hf_through_the_datasets_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = features_table()
    table = pa.table({"x": X.tolist(), "y": y})
    calls = []

    def load_dataset_fake(repo: str) -> dict[str, FakeSplit]:
        calls.append(repo)
        return {"train": FakeSplit(table), "validation": FakeSplit(table.slice(0, 5))}

    fake = types.ModuleType("datasets")
    fake.load_dataset = load_dataset_fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = load_dataset("hf:willinki/cifar10-features-s", val_size=3, data_dir=tmp_path)
    assert calls == ["willinki/cifar10-features-s"]
    assert len(data.y_test) == 5 and data.n_features == 5


def test_hf_offline_and_without_the_library_say_where_to_place_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError) as err:
        load_features("hf:willinki/cifar10-features-s", tmp_path / "data")
    message = str(err.value)
    assert "pip install 'darnn[hf]'" in message
    assert str(tmp_path / "data" / "willinki" / "cifar10-features-s") in message
    assert "train.parquet and validation.parquet" in message

    def offline(repo: str) -> None:
        raise ConnectionError("Couldn't reach 'willinki/cifar10-features-s' on the Hub")

    fake = types.ModuleType("datasets")
    fake.load_dataset = offline  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DataError, match="without network, place its splits") as err:
        load_features("hf:willinki/cifar10-features-s", tmp_path / "data")
    assert str(tmp_path / "cache" / "darnn" / "hf" / "willinki" / "cifar10-features-s") in str(
        err.value
    )


# ----------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("data.projection_dim=0", "projection_dim"),
        ("data.projection_dim=-3", "projection_dim"),
        ("data.per_class=0", "per_class"),
    ],
)
def test_bad_preprocessing_keys_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, fragment: str
) -> None:
    out = tmp_path / "run"
    code, _, err = run_main(capsys, "train", "--out", str(out), "data.name=digits", override)
    assert_user_error(code, err, fragment)
    assert not out.exists() or not any(out.iterdir())


def test_transform_and_projection_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(
        capsys, "train", "--out", str(tmp_path / "r"), "data.name=digits",
        "data.transform=entangled", "data.sign=true",
    )  # fmt: skip
    assert_user_error(code, err, "transform", "sign")


@pytest.mark.parametrize("bench", ["cifar10-features", "tinyimagenet-features"])
def test_feature_benches_stop_with_where_to_place_the_files(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    bench: str,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DARNN_DATA", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)
    out = tmp_path / "bench"
    code, _, err = run_main(capsys, "bench", "--dataset", bench, "--quick", "--out", str(out))
    repo = "cifar10-features-s" if bench.startswith("cifar") else "tinyimagenet-features"
    folder = tmp_path / "cache" / "darnn" / "hf" / "willinki" / repo
    assert_user_error(code, err, "train.parquet and validation.parquet", str(folder))
    assert not out.exists() or not any(out.iterdir())
