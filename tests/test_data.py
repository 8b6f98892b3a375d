"""Tests for darnn.data: lookup, IDX/npz parsing and errors, splits, transforms, downloads."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
import time
import tracemalloc
import urllib.error
import zlib
from pathlib import Path

import numpy as np
import pytest

from darnn import data
from darnn.data import DataError, load_dataset, read_idx, sign_projection, sources, write_idx

IDX_NAMES = ("mnist", "fashion-mnist", "kmnist")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
REAL_FETCH = sources.fetch_url


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No $DARNN_DATA, a private cache, an empty system folder and no network."""
    monkeypatch.delenv("DARNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIR", tmp_path / "system")

    def no_network(url: str, destination: Path) -> None:
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(sources, "fetch_url", no_network)


def write_set(directory: Path, n_train: int = 60, n_test: int = 20, gz: bool = True) -> None:
    """Four small 4x4 IDX files; pixels (0,0) and (0,1) encode each image's index."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 1000)):
        images = rng.integers(0, 256, size=(n, 4, 4), dtype=np.uint8)
        ids = np.arange(n) + offset
        images[:, 0, 0], images[:, 0, 1] = ids % 256, ids // 256
        labels = np.arange(n) % 10
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


def sample_ids(X: np.ndarray) -> np.ndarray:
    """Recover the index that write_set encoded in each image."""
    ids: np.ndarray = np.rint(X[:, 0] * 255) + 256 * np.rint(X[:, 1] * 255)
    return ids.astype(int)


def raw_bytes(array: np.ndarray) -> bytes:
    """The uncompressed IDX encoding of ``array``."""
    return (
        b"\0\0\x08"
        + bytes([array.ndim])
        + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
        + array.astype(np.uint8).tobytes()
    )


# ---------------------------------------------------------------- lookup and loading


@pytest.mark.parametrize("name", IDX_NAMES)
@pytest.mark.parametrize("layout", ["flat", "named", "named-raw", "torchvision", "env"])
def test_idx_datasets_found_in_every_layout(
    name: str, layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    torchvision = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}[name]
    folder = {
        "flat": root,
        "named": root / name,
        "named-raw": root / name / "raw",
        "torchvision": root / torchvision / "raw",
        "env": root / name,
    }[layout]
    write_set(folder)
    if layout == "env":
        monkeypatch.setenv("DARNN_DATA", str(root))
        ds = load_dataset(name, download=False)
    else:
        ds = load_dataset(name, data_dir=root, download=False)
    assert ds.name == name and ds.source == str(folder) and ds.n_classes == 10
    assert ds.n_features == 16
    assert (len(ds.X_train), len(ds.X_val), len(ds.X_test)) == (54, 6, 20)
    for X, y in ((ds.X_train, ds.y_train), (ds.X_val, ds.y_val), (ds.X_test, ds.y_test)):
        assert X.dtype == np.float32 and y.dtype == np.int64
        assert X.min() >= 0.0 and X.max() <= 1.0
        np.testing.assert_array_equal(y, sample_ids(X) % 10)  # labels stay with their images
    assert data.find_dataset(name, root if layout != "env" else None) == folder


def test_decompressed_files_and_pixel_scaling(tmp_path: Path) -> None:
    write_set(tmp_path / "mnist", gz=False)
    ds = load_dataset("mnist", data_dir=tmp_path, val_size=0)
    images = read_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte")
    np.testing.assert_array_equal(ds.X_test, images.reshape(20, 16).astype(np.float32) / 255)


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    cache, system = tmp_path / "cache" / "darnn" / "kmnist", tmp_path / "system" / "kmnist"
    monkeypatch.setenv("DARNN_DATA", str(env))
    paths = data.search_paths("kmnist", explicit)
    assert paths.index(explicit / "kmnist") < paths.index(env / "kmnist")
    assert paths.index(env / "KMNIST" / "raw") < paths.index(cache) < paths.index(system)
    for folder in (system, cache, env / "kmnist", explicit):
        write_set(folder)
        assert data.find_dataset("kmnist", explicit) == folder  # each new one takes precedence


def test_search_paths_and_list_datasets(tmp_path: Path) -> None:
    assert data.search_paths("digits") == []
    assert data.find_dataset("digits") is None
    write_set(tmp_path / "fashion-mnist")
    rows = {row["name"]: row for row in data.list_datasets(tmp_path)}
    assert tuple(rows) == data.DATASETS
    assert rows["fashion-mnist"]["available"] is True
    assert rows["fashion-mnist"]["path"] == str(tmp_path / "fashion-mnist")
    assert rows["mnist"] == {
        "name": "mnist",
        "available": False,
        "path": None,
        "description": rows["mnist"]["description"],
    }
    assert rows["digits"]["available"] is True and rows["digits"]["path"] is None
    assert all(row["description"] for row in rows.values())


def test_missing_dataset_message_lists_every_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DARNN_DATA", str(tmp_path / "env"))
    write_set(tmp_path / "given" / "fashion-mnist")
    (tmp_path / "given" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "given", download=False)
    message = str(info.value)
    for path in data.search_paths("fashion-mnist", tmp_path / "given"):
        assert str(path) in message
    assert "incomplete: no t10k-labels-idx1-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "DARNN_DATA" in message and "--data-dir" in message and "download=True" in message
    assert "\n" not in message


def test_unknown_name() -> None:
    with pytest.raises(DataError, match="Known datasets"):
        load_dataset("cifar100")


def test_name_is_case_and_underscore_insensitive(tmp_path: Path) -> None:
    write_set(tmp_path / "fashion-mnist")
    assert load_dataset("Fashion_MNIST", data_dir=tmp_path).name == "fashion-mnist"


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIR", DEBIAN_FASHION.parent)
    start = time.perf_counter()
    ds = load_dataset("fashion-mnist", download=False)
    assert time.perf_counter() - start < 10  # ~1 s; generous for busy CI machines
    assert ds.source == str(DEBIAN_FASHION)
    assert (len(ds.X_train) + len(ds.X_val), len(ds.X_test), ds.n_features) == (60000, 10000, 784)
    assert len(ds.X_val) == 6000 and np.bincount(ds.y_val).tolist() == [600] * 10
    assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


# ---------------------------------------------------------------- digits and npz


def test_digits() -> None:
    ds = load_dataset("digits")
    assert (len(ds.X_train), len(ds.X_val), len(ds.X_test)) == (1294, 144, 359)
    assert ds.n_features == 64 and ds.n_classes == 10 and ds.source == "scikit-learn"
    assert ds.X_train.dtype == np.float32 and ds.X_train.min() >= 0 and ds.X_train.max() == 1.0
    assert set(np.bincount(ds.y_test)) <= {35, 36, 37}  # stratified 20 %
    other = load_dataset("digits", seed=5)
    np.testing.assert_array_equal(ds.X_test, other.X_test)  # test split ignores the seed
    assert not np.array_equal(ds.X_val, other.X_val)


def test_npz_with_test_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X, X_test = rng.normal(size=(50, 3)), rng.normal(size=(7, 3))
    y, y_test = np.arange(50) % 5, np.array([0, 1, 2, 3, 3, 0, 1])
    path = tmp_path / "mine.npz"
    np.savez(path, X=X, y=y, X_test=X_test, y_test=y_test)
    ds = load_dataset(f"npz:{path}", val_size=10)
    # sized from the training labels (class 4 has no test sample); tests/test_hostile.py
    # checks that a test class absent from training is refused
    assert ds.name == f"npz:{path}" and ds.source == str(path) and ds.n_classes == 5
    assert (len(ds.X_train), len(ds.X_val)) == (40, 10)
    np.testing.assert_array_equal(ds.X_test, X_test.astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64


def test_npz_without_test_arrays(tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    np.savez(path, X=np.arange(200.0).reshape(100, 2), y=(np.arange(100) % 2).astype(float))
    ds = load_dataset(str(path))  # a path ending in .npz needs no prefix
    assert (len(ds.X_train), len(ds.X_val), len(ds.X_test)) == (72, 8, 20)
    assert np.bincount(ds.y_test).tolist() == [10, 10]
    all_rows = np.concatenate([ds.X_train, ds.X_val, ds.X_test])[:, 0]
    assert sorted(all_rows.tolist()) == list(np.arange(0.0, 200.0, 2.0))


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"X": np.zeros((4, 2))}, "needs arrays X and y"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(4), "X_test": np.zeros((1, 2))}, "X_test together"),
        ({"X": np.zeros(4), "y": np.zeros(4)}, "X must be a non-empty numeric"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(3)}, r"y must have shape \(4,\)"),
        ({"X": np.array([[0.0], [np.nan]]), "y": np.zeros(2)}, "NaN or infinite .*row 1"),
        ({"X": np.zeros((2, 1)), "y": np.array([0, -1])}, "integer class labels"),
        ({"X": np.zeros((2, 1)), "y": np.array([0, 0.5])}, "integer class labels"),
        ({"X": np.zeros((2, 1)), "y": np.array([0, 10**9])}, r"label 1000000000.*\[0, 10000\)"),
        ({"X": np.zeros((2, 1)), "y": np.array([0.0, 1e300])}, r"label 1e\+300"),
        ({"X": np.zeros((2, 1)), "y": np.array([0.0, np.inf])}, "non-integer"),
        ({"X": np.zeros((2, 1)), "y": np.array(["a", "b"])}, "integer class labels"),
        ({"X": np.zeros((3, 1)), "y": np.array([4, 4, 4])}, r"single class \(\[4\]\)"),
        (
            {"X": np.zeros((2, 1)), "y": [0, 1], "X_test": np.zeros((1, 1)), "y_test": [-3]},
            "y_test holds the label -3",
        ),
        (
            {
                "X": np.zeros((2, 2)),
                "y": np.zeros(2),
                "X_test": np.zeros((1, 3)),
                "y_test": np.zeros(1),
            },
            "X_test has 3 features but X has 2",
        ),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(f"npz:{path}")
    assert str(path) in str(info.value)


def test_npz_unreadable(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_dataset(str(tmp_path / "junk.npz"))
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DataError, match="single array"):
        load_dataset(str(tmp_path / "single.npz"))


# ---------------------------------------------------------------- malformed IDX files


def test_read_write_idx_round_trip(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    for name in ("a.gz", "a"):
        write_idx(tmp_path / name, array)
        back = read_idx(tmp_path / name)
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back, array)
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == (tmp_path / "a").read_bytes()
    with pytest.raises(ValueError, match=r"0\.\.255"):
        write_idx(tmp_path / "b", np.array([256]))


def test_truncated_gzip(tmp_path: Path) -> None:
    write_set(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="truncated or corrupt gzip") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(info.value)


def gzip_of_zeros(header: bytes, n_zeros: int) -> bytes:
    """``header`` followed by ``n_zeros`` zero bytes, gzipped without holding them in memory."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    parts, block = [packer.compress(header)], bytes(1 << 20)
    for start in range(0, n_zeros, len(block)):
        parts.append(packer.compress(block[: min(len(block), n_zeros - start)]))
    return b"".join([*parts, packer.flush()])


def test_gzip_bomb_is_refused_without_decompressing_it(tmp_path: Path) -> None:
    # The header declares 60 images of 4x4 (960 bytes); the data expands to 200 MB.
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip_of_zeros(b"\0\0\x08\x03" + struct.pack(">3I", 60, 4, 4), 200 << 20))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"declares shape \(60, 4, 4\).*holds more bytes"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # a few blocks, never the 200 MB


def test_declared_size_beyond_what_gzip_can_hold(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0\0\x08\x03" + struct.pack(">3I", 2**31, 2**31, 2**31)))
    with pytest.raises(DataError, match="more than a gzip file of"):
        read_idx(path)


def test_corrupt_gzip_data_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.gz"
    write_idx(path, np.arange(240).reshape(60, 4) % 7)
    blob = bytearray(path.read_bytes())
    blob[-6] ^= 0xFF  # inside the CRC / length trailer
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        read_idx(path)


def test_read_idx_array_is_read_only(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.gz", np.ones((3, 2), dtype=np.uint8))
    assert not read_idx(tmp_path / "a.gz").flags.writeable


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x08\x03\0\0" + bytes(12), "bad IDX magic number 08030000"),
        (b"", r"bad IDX magic number \(empty file\)"),
        (b"\0\0\x0d\x01" + bytes(8), "bad IDX magic number 00000d01"),  # float IDX
        (raw_bytes(np.zeros((60, 4, 4)))[:-1], r"declares shape \(60, 4, 4\)"),
        (raw_bytes(np.zeros((60, 4, 4))) + b"\0", "holds 977 bytes"),
        (b"\0\0\x08\x03" + bytes(4), "declares 3 dimensions but is incomplete"),
        (raw_bytes(np.zeros((60, 16))), "expected 3 dimensions"),
    ],
)
def test_malformed_image_file(tmp_path: Path, content: bytes, match: str) -> None:
    write_set(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros(59), "holds 60 images but .* holds 59 labels"),
        (np.full(60, 10), "label 10 is outside 0..9"),
        (np.zeros((60, 1)), "expected 1 dimension"),
    ],
)
def test_bad_label_file(tmp_path: Path, labels: np.ndarray, match: str) -> None:
    write_set(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    with pytest.raises(DataError, match=match):
        load_dataset("kmnist", data_dir=tmp_path)


# ---------------------------------------------------------------- splits


def test_validation_split_is_stratified_disjoint_and_seeded(tmp_path: Path) -> None:
    write_set(tmp_path, n_train=200)
    ds = load_dataset("mnist", data_dir=tmp_path, val_size=0.25, seed=3)
    train_ids, val_ids = sample_ids(ds.X_train), sample_ids(ds.X_val)
    assert len(val_ids) == 50 and np.bincount(ds.y_val).tolist() == [5] * 10
    assert not set(train_ids) & set(val_ids)
    assert sorted([*train_ids, *val_ids]) == list(range(200))
    again = load_dataset("mnist", data_dir=tmp_path, val_size=0.25, seed=3)
    np.testing.assert_array_equal(again.X_val, ds.X_val)
    other = load_dataset("mnist", data_dir=tmp_path, val_size=0.25, seed=4)
    assert set(sample_ids(other.X_val)) != set(val_ids)
    # the test set is never touched by the validation split
    np.testing.assert_array_equal(sample_ids(ds.X_test), np.arange(1000, 1020))
    assert len(load_dataset("mnist", data_dir=tmp_path, val_size=37).X_val) == 37
    assert len(load_dataset("mnist", data_dir=tmp_path, val_size=0).X_val) == 0


@pytest.mark.parametrize("val_size", [1.0, -0.1, 60, True, "0.1"])
def test_bad_val_size(tmp_path: Path, val_size: object) -> None:
    write_set(tmp_path)
    with pytest.raises((ValueError, TypeError)):
        load_dataset("mnist", data_dir=tmp_path, val_size=val_size)  # type: ignore[arg-type]


def test_limit_train(tmp_path: Path) -> None:
    write_set(tmp_path, n_train=100)
    full = load_dataset("mnist", data_dir=tmp_path, seed=1)
    small = load_dataset("mnist", data_dir=tmp_path, seed=1, limit_train=17)
    assert len(small.X_train) == 17 and len(small.y_train) == 17
    assert set(sample_ids(small.X_train)) <= set(sample_ids(full.X_train))
    np.testing.assert_array_equal(small.X_val, full.X_val)  # validation set unchanged
    again = load_dataset("mnist", data_dir=tmp_path, seed=1, limit_train=17)
    np.testing.assert_array_equal(again.X_train, small.X_train)
    with pytest.raises(ValueError):
        load_dataset("mnist", data_dir=tmp_path, limit_train=0)


# ---------------------------------------------------------------- transforms


def test_sign_projection_values_and_determinism() -> None:
    X = np.random.default_rng(0).random((30, 12)).astype(np.float32)
    X[0] = 0.0  # X R = 0 exactly, and sign(0) must be +1
    out = sign_projection(X, 7, seed=11)
    assert out.shape == (30, 7) and out.dtype == np.float32
    assert set(np.unique(out)) == {-1.0, 1.0} and (out[0] == 1.0).all()
    np.testing.assert_array_equal(out, sign_projection(X, 7, seed=11))
    assert not np.array_equal(out, sign_projection(X, 7, seed=12))
    R = np.random.default_rng(11).standard_normal((12, 7)) / np.sqrt(12)
    np.testing.assert_array_equal(out, np.where(X @ R.astype(np.float32) >= 0, 1.0, -1.0))
    # rows are projected independently, so splits share one R
    np.testing.assert_array_equal(sign_projection(X[:10], 7, 11), out[:10])
    with pytest.raises(ValueError):
        sign_projection(X, 0, seed=0)


@pytest.mark.parametrize(
    ("transform", "dim", "expected_dim"),
    [
        ("entangled", None, 100),
        ("binarised", None, 16),
        ("binarized", None, 16),
        ("entangled", 5, 5),
    ],
)
def test_transforms_use_one_projection_for_all_splits(
    tmp_path: Path, transform: str, dim: int | None, expected_dim: int
) -> None:
    write_set(tmp_path)
    plain = load_dataset("mnist", data_dir=tmp_path, seed=2)
    ds = load_dataset(
        "mnist", data_dir=tmp_path, seed=2, transform=transform, transform_dim=dim, transform_seed=9
    )
    assert ds.n_features == expected_dim
    for raw, projected in (
        (plain.X_train, ds.X_train),
        (plain.X_val, ds.X_val),
        (plain.X_test, ds.X_test),
    ):
        np.testing.assert_array_equal(projected, sign_projection(raw, expected_dim, 9))
    np.testing.assert_array_equal(ds.y_train, plain.y_train)


def test_transform_arguments_checked(tmp_path: Path) -> None:
    write_set(tmp_path)
    with pytest.raises(ValueError, match="transform must be"):
        load_dataset("mnist", data_dir=tmp_path, transform="pca")
    with pytest.raises(ValueError, match="transform_dim"):
        load_dataset("mnist", data_dir=tmp_path, transform_dim=10)


# ---------------------------------------------------------------- downloads


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake 'kmnist' mirror folder whose files the registered SHA-256 values match."""
    mirror = tmp_path / "mirror"
    write_set(mirror)
    sha = tuple(
        hashlib.sha256((mirror / f"{stem}.gz").read_bytes()).hexdigest()
        for stem in sources.IDX_FILES
    )
    source = dataclasses.replace(sources.SOURCES["kmnist"], sha256=sha)
    monkeypatch.setitem(sources.SOURCES, "kmnist", source)
    return mirror


def test_download_verifies_and_caches_atomically(
    served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache" / "darnn" / "kmnist"
    calls: list[str] = []

    def fake_fetch(url: str, destination: Path) -> None:
        name = url.rsplit("/", 1)[1]
        assert url == sources.SOURCES["kmnist"].url + name
        assert destination.parent == cache and destination.name != name
        assert not (cache / name).exists()  # final name appears only after verification
        destination.write_bytes((served / name).read_bytes())
        calls.append(name)

    monkeypatch.setattr(sources, "fetch_url", fake_fetch)
    ds = load_dataset("kmnist")
    assert ds.source == str(cache) and len(calls) == 4
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{s}.gz" for s in sources.IDX_FILES)
    load_dataset("kmnist")  # cached: no second download
    assert len(calls) == 4


def test_download_through_file_url(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = dataclasses.replace(sources.SOURCES["kmnist"], url=served.as_uri() + "/")
    monkeypatch.setitem(sources.SOURCES, "kmnist", source)
    monkeypatch.setattr(sources, "fetch_url", REAL_FETCH)
    assert len(load_dataset("kmnist").X_test) == 20


def test_download_checksum_mismatch_leaves_nothing(
    served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tampered(url: str, destination: Path) -> None:
        destination.write_bytes(b"evil")

    monkeypatch.setattr(sources, "fetch_url", tampered)
    with pytest.raises(DataError, match=r"SHA-256 is .*, expected .*deleted"):
        load_dataset("kmnist")
    assert list((tmp_path / "cache" / "darnn" / "kmnist").iterdir()) == []


def test_network_failure_is_clear(
    served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, destination: Path) -> None:
        destination.write_bytes(b"partial")
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(sources, "fetch_url", offline)
    with pytest.raises(DataError, match=r"Downloading https://.* failed .*offline") as info:
        load_dataset("kmnist")
    assert str(tmp_path / "system" / "kmnist") in str(info.value)
    assert list((tmp_path / "cache" / "darnn" / "kmnist").iterdir()) == []


def test_no_download_when_disabled(served: Path) -> None:
    with pytest.raises(DataError, match="download=False"):
        load_dataset("kmnist", download=False)  # the autouse fixture fails any fetch
