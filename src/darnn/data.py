"""Datasets: the MNIST family (IDX files), scikit-learn's 8x8 digits and user ``.npz`` files.

``load_dataset`` returns float32 features and int64 labels split into train / validation /
test. The validation set is always carved out of the training data (seeded, stratified); the
test set is the one shipped with the data, or a fixed seeded 20 % hold-out when none is shipped
(digits, an npz file without test arrays). The optional transforms are the input encodings of
SPEC §4 B ("binarised": sign of a D x D Gaussian projection) and C ("entangled": sign of a
D x 100 one).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.util
import math
import os
import shutil
import struct
import tempfile
import typing
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "kmnist", "digits")

# Debian's dataset packages (e.g. dataset-fashion-mnist) install under this root.
SYSTEM_DATA_DIR = Path("/usr/share/datasets")

# The four files of every MNIST-family dataset, in the order train images, train labels,
# test images, test labels; each may be stored gzipped (".gz" appended) or decompressed.
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Labels of a user's data must be integers in [0, MAX_CLASSES): the readout has one unit per
# label value, so a label of 10^9 would otherwise mean a 10^9-class network.
MAX_CLASSES = 10_000
_TEST_FRACTION = 0.2  # hold-out used when a dataset ships no test split
_TEST_SPLIT_SEED = 0  # fixed, so the test set never depends on the user's seed


class DataError(ValueError):
    """A dataset is missing or malformed; the message says which file and what to do."""


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous
class Dataset:
    """A loaded dataset: float32 features (n, d) and int64 labels in 0..n_classes-1."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str  # folder or file the data came from, or "scikit-learn"

    @property
    def n_features(self) -> int:
        """Number of input features d."""
        return int(self.X_train.shape[1])


@dataclass(frozen=True)
class _IdxSource:
    description: str
    torchvision_dir: str  # torchvision keeps the files in ROOT/<this>/raw
    url: str  # base URL of the canonical .gz files
    sha256: tuple[str, str, str, str]  # of the canonical .gz files, in _IDX_FILES order


# SHA-256 of the canonical .gz files (the ones whose MD5s torchvision pins), as listed in
# torchvision's prototype datasets (torchvision/prototype/datasets/_builtin/mnist.py) and
# torchvision-ruby. Debian re-packs the Fashion-MNIST files (same deflate data, a gzip header
# without file name or original time), so only downloads are verified, never files found locally.
_SOURCES: dict[str, _IdxSource] = {
    "mnist": _IdxSource(
        "MNIST handwritten digits, 28x28, 60000 train / 10000 test",
        "MNIST",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    ),
    "fashion-mnist": _IdxSource(
        "Fashion-MNIST clothing images, 28x28, 60000 train / 10000 test",
        "FashionMNIST",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    ),
    "kmnist": _IdxSource(
        "Kuzushiji-MNIST cursive Japanese characters, 28x28, 60000 train / 10000 test",
        "KMNIST",
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        (
            "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
            "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
            "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
            "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
        ),
    ),
}
_DIGITS_DESCRIPTION = "scikit-learn 8x8 digits, 1797 images (fixed seeded 20% test split)"
_IDX_CLASSES = 10
# Features, labels, test features and labels (None when not shipped), class count, source.
_Raw = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, int, str]


# ---------------------------------------------------------------- finding the files


def _canonical(name: str) -> str:
    """The registered name for ``name`` (case and ``_``/``-`` insensitive) or a DataError."""
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise DataError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(DATASETS)}; a file of your "
            "own is given as 'npz:PATH' (or a path ending in .npz) holding arrays X and y."
        )
    return key


def _cache_dir(name: str) -> Path:
    """Per-user download folder: $XDG_CACHE_HOME/darnn/NAME, else ~/.cache/darnn/NAME."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "darnn" / name


def search_paths(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for an IDX dataset, in lookup order (empty for digits)."""
    key = _canonical(name)
    if key not in _SOURCES:
        return []
    roots = [] if data_dir is None else [Path(data_dir).expanduser()]
    roots += [Path(p).expanduser() for p in os.environ.get("DARNN_DATA", "").split(os.pathsep) if p]
    paths: list[Path] = []
    for root in roots:
        # Named sub-folders first, so one root shared by several datasets resolves correctly.
        tv_raw = root / _SOURCES[key].torchvision_dir / "raw"
        paths += [root / key, root / key / "raw", tv_raw, root]
    paths += [_cache_dir(key), SYSTEM_DATA_DIR / key]
    return list(dict.fromkeys(paths))  # drop duplicates, keep order


def _idx_file(directory: Path, stem: str) -> Path | None:
    """The gzipped or decompressed file ``stem`` in ``directory``, if either exists."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def find_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """First folder of ``search_paths`` that holds all four IDX files, or None."""
    for directory in search_paths(name, data_dir):
        if all(_idx_file(directory, stem) for stem in _IDX_FILES):
            return directory
    return None


def list_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, object]]:
    """One dict per built-in dataset: name, available, path (str or None), description."""
    rows: list[dict[str, object]] = []
    for name in DATASETS:
        if name in _SOURCES:
            found = find_dataset(name, data_dir)
            available, path, description = found is not None, found, _SOURCES[name].description
        else:
            available = importlib.util.find_spec("sklearn") is not None
            path, description = None, _DIGITS_DESCRIPTION
        rows.append(
            {
                "name": name,
                "available": available,
                "path": None if path is None else str(path),
                "description": description,
            }
        )
    return rows


def _missing_message(name: str, data_dir: str | os.PathLike[str] | None, reason: str) -> str:
    """One paragraph: what is missing, every place looked, why nothing was fetched, the fixes."""
    looked = []
    for directory in search_paths(name, data_dir):
        absent = [stem for stem in _IDX_FILES if _idx_file(directory, stem) is None]
        note = "" if len(absent) == len(_IDX_FILES) else f" (incomplete: no {', '.join(absent)})"
        looked.append(f"{directory}{note}")
    apt = (
        " install the Debian package (apt-get install dataset-fashion-mnist),"
        if (name == "fashion-mnist")
        else ""
    )
    return (
        f"Dataset {name!r} was not found: looked for {', '.join(_IDX_FILES)} (each .gz or "
        f"decompressed) in {'; '.join(looked)}. {reason}. To get it,{apt} put the four files in "
        "a folder and pass it as data_dir (--data-dir), set DARNN_DATA to that folder, or let "
        f"darnn download them into {_cache_dir(name)} (download=True, needs internet access)."
    )


# ---------------------------------------------------------------- downloading


def fetch_url(url: str, destination: Path) -> None:
    """Copy the resource at ``url`` into the file ``destination`` (tests replace this)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(name: str, data_dir: str | os.PathLike[str] | None) -> Path:
    """Fetch the missing canonical files into the cache folder, verifying each SHA-256."""
    source, target = _SOURCES[name], _cache_dir(name)
    for stem, expected in zip(_IDX_FILES, source.sha256, strict=True):
        if _idx_file(target, stem) is not None:
            continue  # kept from an earlier, verified download
        url = source.url + stem + ".gz"
        tmp: Path | None = None
        try:
            target.mkdir(parents=True, exist_ok=True)
            # A temp file in the same folder, renamed only once verified, so an interrupted or
            # corrupt download never looks like a usable file.
            fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{stem}.", suffix=".part")
            os.close(fd)
            tmp = Path(tmp_name)
            fetch_url(url, tmp)
            actual = sha256_file(tmp)
            if actual != expected:
                raise DataError(
                    f"The download of {url} is corrupt or has changed: its SHA-256 is {actual}, "
                    f"expected {expected}, so it was deleted. Retry later, or fetch the files "
                    "yourself and pass their folder as data_dir (--data-dir)."
                )
            os.replace(tmp, target / f"{stem}.gz")
        except (OSError, http.client.HTTPException) as exc:  # URLError/timeouts are OSErrors
            reason = f"Downloading {url} failed ({exc}); this machine may be offline"
            raise DataError(_missing_message(name, data_dir, reason)) from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------- IDX files


# Deflate never expands data more than ~1032-fold, so a gzip file of n bytes cannot hold an IDX
# file larger than this many times n: a header declaring more is corrupt or hostile.
_MAX_DEFLATE_RATIO = 1032
_READ_BLOCK = 1 << 24  # decompress in 16 MiB blocks: memory follows the data, not a claim


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an unsigned-byte IDX file, gzipped or not, as a read-only uint8 array.

    The header is read first; then at most the size it declares plus one byte is read (or
    decompressed), so a gzip "bomb" that expands far beyond its header costs no more memory
    or time than the file it claims to be.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b" or path.suffix == ".gz"
            on_disk = os.fstat(raw.fileno()).st_size
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as stream:
            return _read_idx_stream(path, stream, gzipped, on_disk)
    except DataError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip data ({exc}).") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc}).") from exc


def _read_idx_stream(
    path: Path, stream: typing.BinaryIO, gzipped: bool, on_disk: int
) -> np.ndarray:
    """The array of an IDX stream positioned at its start (see read_idx)."""
    head = stream.read(4)
    if len(head) < 4 or head[:3] != b"\x00\x00\x08":
        raise DataError(
            f"{path}: bad IDX magic number {head.hex() or '(empty file)'}; an unsigned-byte "
            "IDX file starts with 0000080N (N = number of dimensions)."
        )
    ndim = head[3]
    dims = stream.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions but is incomplete.")
    shape = struct.unpack(f">{ndim}I", dims)
    size = math.prod(shape)
    header = 4 + 4 * ndim
    if gzipped and size > _MAX_DEFLATE_RATIO * on_disk:
        raise DataError(
            f"{path}: the header declares shape {shape} ({size} bytes of data), more than a "
            f"gzip file of {on_disk} bytes can hold; the file is corrupt or not an IDX file."
        )
    if not gzipped and header + size != on_disk:
        raise DataError(
            f"{path}: the header declares shape {shape} ({header + size} bytes with the "
            f"header) but the file holds {on_disk} bytes; it is truncated or not an IDX file."
        )
    data = bytearray()
    while len(data) <= size:  # one byte past the declared size shows the file is longer
        block = stream.read(min(_READ_BLOCK, size + 1 - len(data)))
        if not block:
            break
        data += block
    if len(data) != size:
        found = "more" if len(data) > size else f"only {len(data)}"
        raise DataError(
            f"{path}: the header declares shape {shape} ({size} bytes of data) but the "
            f"{'decompressed ' if gzipped else ''}file holds {found} bytes after its header; "
            "it is truncated, corrupt or not an IDX file."
        )
    array = np.frombuffer(data, dtype=np.uint8).reshape(shape)
    array.flags.writeable = False
    return array


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write integer ``array`` (values 0..255) as unsigned-byte IDX, gzipped if path ends .gz."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.integer) or array.ndim == 0:
        raise ValueError("write_idx needs an integer array with at least one dimension")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError("write_idx stores unsigned bytes: values must lie in 0..255")
    header = struct.pack(f">4B{array.ndim}I", 0, 0, 8, array.ndim, *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images scaled to float32 [0, 1] and flattened, with their int64 labels."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(
            f"{images_path}: expected 3 dimensions (images, rows, columns), found {images.ndim}."
        )
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected 1 dimension (labels), found {labels.ndim}.")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the two files do not belong together."
        )
    if labels.size and labels.max() >= _IDX_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} is outside 0..{_IDX_CLASSES - 1}.")
    X = images.reshape(len(images), -1).astype(np.float32)
    X /= 255.0
    return X, labels.astype(np.int64)


def _load_idx(name: str, data_dir: str | os.PathLike[str] | None, download: bool) -> _Raw:
    """An MNIST-family dataset from the first complete folder found, downloading if allowed."""
    directory = find_dataset(name, data_dir)
    if directory is None:
        if not download:
            reason = "Downloading was not allowed (download=False)"
            raise DataError(_missing_message(name, data_dir, reason))
        directory = _download(name, data_dir)
    files = [_idx_file(directory, stem) or directory / stem for stem in _IDX_FILES]
    X, y = _read_pair(files[0], files[1])
    X_test, y_test = _read_pair(files[2], files[3])
    if X_test.shape[1] != X.shape[1]:
        raise DataError(
            f"{files[2]}: test images have {X_test.shape[1]} pixels but the "
            f"training images {X.shape[1]}."
        )
    return X, y, X_test, y_test, _IDX_CLASSES, str(directory)


# ---------------------------------------------------------------- npz files


def _npz_split(
    path: Path, arrays: dict[str, np.ndarray], x_key: str, y_key: str, n_features: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 features and int64 labels stored under ``x_key`` / ``y_key``."""
    X, y = arrays[x_key], arrays[y_key]
    if X.ndim != 2 or len(X) == 0 or X.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: {x_key} must be a non-empty numeric (samples, features) "
            f"array, got shape {X.shape} and dtype {X.dtype}."
        )
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(f"{path}: {x_key} has {X.shape[1]} features but X has {n_features}.")
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        row = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise DataError(f"{path}: {x_key} contains NaN or infinite values (first in row {row}).")
    if y.shape != (len(X),):
        raise DataError(
            f"{path}: {y_key} must have shape ({len(X)},) to match {x_key}, got {y.shape}."
        )
    # Labels index the readout units directly: integers in [0, MAX_CLASSES), checked before
    # any cast (a float 1e300 or 2^70 must not wrap around to a valid-looking int64).
    integral = y.dtype.kind in "biu" or (
        y.dtype.kind == "f" and bool(np.isfinite(y).all()) and bool((y == np.round(y)).all())
    )
    if not integral:
        raise DataError(
            f"{path}: {y_key} must hold integer class labels 0..C-1, got dtype {y.dtype}"
            f"{' with non-integer values' if y.dtype.kind == 'f' else ''}; map your classes "
            "to 0, 1, 2, ... first."
        )
    if len(y) and (y.min() < 0 or y.max() >= MAX_CLASSES):
        bad = y.min() if y.min() < 0 else y.max()
        raise DataError(
            f"{path}: {y_key} holds the label {bad}, but labels must be integer class labels "
            f"in [0, {MAX_CLASSES}) (one readout unit per label value); map your classes to "
            "0, 1, 2, ... first."
        )
    return X, y.astype(np.int64)


def _load_npz(path: Path) -> _Raw:
    """A user's numpy.savez archive with X, y and optionally X_test, y_test."""
    if not path.is_file():
        raise DataError(
            f"{path}: no such file; an npz dataset is a numpy.savez archive "
            "holding X (n, d) and y (n,), optionally X_test and y_test."
        )
    try:
        archive = np.load(path, allow_pickle=False)  # no pickles: never run code from data
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: holds a single array, not an .npz archive of X and y.")
        with archive:  # members are read lazily, so corrupt ones fail here too
            arrays = {key: archive[key] for key in archive.files}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc}).") from exc
    if not {"X", "y"} <= arrays.keys() or ("X_test" in arrays) != ("y_test" in arrays):
        raise DataError(
            f"{path}: needs arrays X and y, and X_test together with y_test; "
            f"found {sorted(arrays) or 'no arrays'}."
        )
    X, y = _npz_split(path, arrays, "X", "y", None)
    X_test = y_test = None
    if "X_test" in arrays:
        X_test, y_test = _npz_split(path, arrays, "X_test", "y_test", X.shape[1])
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(
            f"{path}: y holds a single class ({present.tolist()}); a classifier needs training "
            "samples of at least 2 classes."
        )
    n_classes = int(max(y.max(), y_test.max() if y_test is not None else 0)) + 1
    return X, y, X_test, y_test, n_classes, str(path)


# ---------------------------------------------------------------- splits and transforms


def _stratified_split(
    y: np.ndarray, n_out: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices (kept, held out) with ``n_out`` held out in proportion to each class."""
    classes, counts = np.unique(y, return_counts=True)
    quota = n_out * counts / len(y)
    take = np.floor(quota).astype(np.int64)
    # Largest-remainder rounding makes the per-class counts add up to exactly n_out.
    take[np.argsort(take - quota, kind="stable")[: n_out - take.sum()]] += 1
    held = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take, strict=True)]
    mask = np.zeros(len(y), dtype=bool)
    mask[np.concatenate(held)] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _held_out_count(size: float | int, n: int) -> int:
    """Number of samples meant by ``size``: a fraction in [0, 1) or a count."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise TypeError(f"val_size must be a fraction or a count, got {size!r}")
    if isinstance(size, (float, np.floating)) and not 0.0 <= size < 1.0:
        raise ValueError(f"val_size fraction must lie in [0, 1), got {size}")
    count = round(size * n) if isinstance(size, (float, np.floating)) else int(size)
    if not 0 <= count < n:
        raise ValueError(f"val_size={size} must leave training data out of {n} samples")
    return count


def sign_projection(X: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """sign(X R) in {-1, +1} (float32, sign(0) = +1), R ~ N(0, 1/D) of shape (D, dim).

    R comes from ``numpy.random.default_rng(seed)``, so equal seeds give the same R on every
    split.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or dim < 1:
        raise ValueError(f"need a 2-D X and dim >= 1, got shape {X.shape} and dim={dim}")
    R = np.random.default_rng(seed).standard_normal((X.shape[1], dim)) / np.sqrt(X.shape[1])
    # float32 product: twice as fast, and only fields within ~1e-7 of 0 could change sign.
    return np.where(X @ R.astype(np.float32) >= 0, np.float32(1.0), np.float32(-1.0))


# ---------------------------------------------------------------- loading


def _load_digits() -> _Raw:
    """scikit-learn's bundled 8x8 digits; no test split is shipped."""
    from sklearn.datasets import load_digits  # deferred: a slow import only digits needs

    bunch = load_digits()
    X = (bunch.data / 16.0).astype(np.float32)  # pixel counts 0..16 -> [0, 1]
    return X, bunch.target.astype(np.int64), None, None, 10, "scikit-learn"


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    val_size: float | int = 0.1,
    seed: int = 0,
    transform: str | None = None,
    transform_dim: int | None = None,
    transform_seed: int = 0,
    download: bool = True,
    limit_train: int | None = None,
) -> Dataset:
    """Load ``name`` (a DATASETS entry, 'npz:PATH' or a .npz path) as a train/val/test Dataset.

    The validation set (``val_size``: fraction or count) is a stratified split of the training
    data drawn with ``seed``; ``limit_train`` then keeps that many shuffled training samples.
    ``transform`` "entangled" (default dim 100) or "binarised" (default dim D) replaces the
    features of every split by ``sign_projection(X, dim, transform_seed)``.
    """
    # Check the arguments before reading (or downloading) anything.
    kind = None if transform is None else transform.lower().replace("binarized", "binarised")
    if kind not in (None, "entangled", "binarised"):
        raise ValueError(f"transform must be 'entangled' or 'binarised', got {transform!r}")
    if kind is None and transform_dim is not None:
        raise ValueError("transform_dim is only meaningful together with a transform")
    if limit_train is not None and limit_train < 1:
        raise ValueError(f"limit_train must be positive, got {limit_train}")

    if name.startswith("npz:") or name.lower().endswith(".npz"):
        path = Path(name.removeprefix("npz:")).expanduser()
        key, raw = f"npz:{path}", _load_npz(path)
    else:
        key = _canonical(name)
        raw = _load_digits() if key == "digits" else _load_idx(key, data_dir, download)
    X, y, X_test, y_test, n_classes, source = raw
    if X_test is None or y_test is None:
        n_test = round(_TEST_FRACTION * len(y))
        rest, test = _stratified_split(y, n_test, np.random.default_rng(_TEST_SPLIT_SEED))
        X, y, X_test, y_test = X[rest], y[rest], X[test], y[test]

    rng = np.random.default_rng(seed)
    train, val = _stratified_split(y, _held_out_count(val_size, len(y)), rng)
    if limit_train is not None:
        train = rng.permutation(train)[:limit_train]
    splits = [X[train], X[val], X_test]
    if kind is not None:
        dim = transform_dim
        if dim is None:  # SPEC §4 C projects to 100 dimensions, §4 B keeps D
            dim = 100 if kind == "entangled" else X.shape[1]
        splits = [sign_projection(part, dim, transform_seed) for part in splits]
    return Dataset(
        key, splits[0], y[train], splits[1], y[val], splits[2], y_test, n_classes, source
    )
