"""Labelled feature sets: a local Parquet, Arrow or npz file, or a Hugging Face dataset.

``data.name: features:PATH`` reads PATH, a file or a folder:

* a file (``.parquet``, ``.arrow``/``.feather``, ``.npz``) is the training set (the test set
  is then a fixed seeded 20 % hold-out, as for any dataset without one);
* a folder holds ``train.EXT`` and optionally ``test.EXT`` (or ``validation.EXT``: the test
  split of the authors' Hugging Face repositories is named so), EXT one of the above.

``data.name: hf:OWNER/NAME`` (e.g. ``hf:willinki/cifar10-features-s``, the 512-dimensional
CIFAR-10 features of the authors' JAX library) looks first for such a folder at
``DIR/OWNER/NAME`` for DIR in ``--data-dir``, ``$DARNN_DATA`` and ``~/.cache/darnn/hf``
(no extra library needed), then asks the ``datasets`` library (the ``hf`` extra:
``pip install 'darnn[hf]'``; imported only here), which reads its own cache and downloads
where it can; splits ``train`` and ``test`` or ``validation``.

Tables (Parquet, Arrow; pyarrow, the ``features`` extra) hold the features either as one
list-valued column ``x`` (the authors' layout) or as numeric columns, and the labels in an
integer column ``y`` or ``label``; npz files hold arrays ``x``/``X`` and ``y``. Labels must be
integers 0..C−1 (strings and floats are refused), features finite, and x and y of one
length. Preprocessing (per-class subsample, standardisation, Gaussian projection, sign)
is the data section's, for any dataset: see `darnn.data.loading` and docs/model.md#feature-sets.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .common import DataError, RawData
from .npz import MAX_CLASSES

SUFFIXES = (".parquet", ".arrow", ".feather", ".npz")
LABEL_COLUMNS = ("y", "label")
TEST_STEMS = ("test", "validation")


def is_features_name(name: str) -> bool:
    """Whether ``name`` is a feature-set name (``features:PATH`` or ``hf:ID``)."""
    return name.startswith(("features:", "hf:"))


def load_features(name: str, data_dir: str | os.PathLike[str] | None = None) -> RawData:
    """The raw training (and test) arrays of a ``features:PATH`` or ``hf:ID`` dataset."""
    if name.startswith("features:"):
        path = Path(name.removeprefix("features:")).expanduser()
        if path.is_dir():
            return _load_folder(path, name)
        if not path.is_file():
            raise DataError(
                f"{name}: no such file or folder; give a {'/'.join(SUFFIXES)} file, or a folder "
                f"holding train.EXT and optionally test.EXT (EXT one of {', '.join(SUFFIXES)})."
            )
        X, y = read_file(path)
        return _raw(X, y, None, None, str(path))
    repo = name.removeprefix("hf:").strip("/")
    if not repo or repo.count("/") != 1:
        raise DataError(f"{name}: a Hugging Face dataset is named hf:OWNER/NAME.")
    for folder in hf_folders(repo, data_dir):
        if _split_file(folder, "train") is not None:
            return _load_folder(folder, name)
    return _load_hub(repo, name, data_dir)


def hf_folders(repo: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Local folders searched for train.EXT / validation.EXT of a Hugging Face repository."""
    roots = [] if data_dir is None else [Path(data_dir).expanduser()]
    roots += [Path(p).expanduser() for p in os.environ.get("DARNN_DATA", "").split(os.pathsep) if p]
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    roots.append(Path(base) / "darnn" / "hf")
    return list(dict.fromkeys(root / repo for root in roots))


def _split_file(folder: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _load_folder(folder: Path, name: str) -> RawData:
    train = _split_file(folder, "train")
    if train is None:
        raise DataError(
            f"{name}: {folder} holds no train file; place train.EXT (EXT one of "
            f"{', '.join(SUFFIXES)}) there, and optionally test.EXT or validation.EXT."
        )
    X, y = read_file(train)
    test = next((p for s in TEST_STEMS if (p := _split_file(folder, s)) is not None), None)
    X_test = y_test = None
    if test is not None:
        X_test, y_test = read_file(test)
        _check_width(test, X_test, X.shape[1])
    return _raw(X, y, X_test, y_test, str(folder))


def _load_hub(repo: str, name: str, data_dir: str | os.PathLike[str] | None) -> RawData:
    """Through the ``datasets`` library (its cache, or a download where one is possible)."""
    folders = " or ".join(str(f) for f in hf_folders(repo, data_dir))
    place = (
        f"place its splits as train.parquet and validation.parquet (columns x and y; "
        f"e.g. `datasets.load_dataset('{repo}')[split].to_parquet(...)` on a machine with "
        f"network) in {folders}"
    )
    try:
        import datasets  # the optional `hf` extra
    except ImportError:
        raise DataError(
            f"{name}: not found locally, and reading a Hugging Face dataset needs the "
            f"`datasets` library (pip install 'darnn[hf]'); or {place}."
        ) from None
    try:
        loaded = datasets.load_dataset(repo)
    except Exception as exc:  # offline, unknown repository, corrupt cache: the library's own
        raise DataError(
            f"{name}: the datasets library could not load it ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}); without network, {place}."
        ) from None
    splits = list(loaded.keys())
    if "train" not in splits:
        raise DataError(f"{name}: has splits {splits}, but no 'train' split.")
    X, y = _from_table(_arrow_of(loaded["train"]), f"{name} (split train)")
    test = next((s for s in ("test", "validation") if s in splits), None)
    X_test = y_test = None
    if test is not None:
        X_test, y_test = _from_table(_arrow_of(loaded[test]), f"{name} (split {test})")
        _check_width(Path(f"{name} (split {test})"), X_test, X.shape[1])
    return _raw(X, y, X_test, y_test, f"hf:{repo}")


def _arrow_of(split: Any) -> Any:
    return split.with_format("arrow")[:]


def read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 features (n, d) and int64 labels (n,) of one file."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown feature file type; use one of {', '.join(SUFFIXES)}.")
    pa = _pyarrow(path)
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            table = _read_arrow(pa, path)
    except DataError:
        raise
    except Exception as exc:  # pyarrow's errors for a corrupt or foreign file
        raise DataError(f"{path}: not a readable {suffix[1:]} file ({exc}).") from None
    return _from_table(table, str(path))


def _pyarrow(path: Path) -> Any:
    try:
        import pyarrow
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet and Arrow files needs pyarrow (pip install "
            "'darnn[features]'); an npz file needs nothing more."
        ) from None
    return pyarrow


def _read_arrow(pa: Any, path: Path) -> Any:
    """An Arrow IPC file (Feather v2) or stream (what the datasets library caches)."""
    import pyarrow.ipc as ipc

    with pa.memory_map(str(path)) as source:
        try:
            return ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return ipc.open_stream(source).read_all()


def _from_table(table: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa

    names = list(table.column_names)
    label = next((c for c in LABEL_COLUMNS if c in names), None)
    if label is None:
        raise DataError(f"{where}: no label column; name it one of {', '.join(LABEL_COLUMNS)}.")
    labels = table.column(label)
    if not pa.types.is_integer(labels.type):
        raise DataError(
            f"{where}: label column '{label}' has type {labels.type}, but labels must be integer "
            "class labels 0..C-1 (strings and floats are refused); map your classes to 0, 1, 2, "
            "... first."
        )
    if labels.null_count:
        raise DataError(f"{where}: label column '{label}' has {labels.null_count} missing values.")
    y = labels.to_numpy()
    if "x" in names and _is_list(pa, table.column("x").type):
        column = table.column("x")
        if column.null_count:
            raise DataError(f"{where}: feature column 'x' has {column.null_count} missing rows.")
        rows = column.to_pylist()
        widths = {len(r) for r in rows}
        if len(widths) > 1:
            raise DataError(
                f"{where}: the rows of feature column 'x' differ in length {sorted(widths)[:5]}."
            )
        X = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    else:
        features = [c for c in names if c != label]
        bad = [c for c in features if not _is_number(pa, table.column(c).type)]
        if not features or bad:
            raise DataError(
                f"{where}: features must be one list-valued column 'x' or numeric columns; "
                f"{'found none' if not features else 'non-numeric: ' + ', '.join(bad[:5])}."
            )
        X = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in features])
    return _checked(X, y, where, "x", label)


def _is_list(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def _is_number(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:  # never unpickle data
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc}).") from None
    x_key = next((k for k in ("x", "X") if k in arrays), None)
    if x_key is None or "y" not in arrays:
        raise DataError(f"{path}: needs arrays x (or X) and y; found {sorted(arrays) or 'none'}.")
    y = arrays["y"]
    if y.dtype.kind not in "iu":
        raise DataError(
            f"{path}: y has dtype {y.dtype}, but labels must be integer class labels 0..C-1 "
            "(strings and floats are refused); map your classes to 0, 1, 2, ... first."
        )
    return _checked(arrays[x_key], y, str(path), x_key, "y")


def _checked(
    X: Any, y: np.ndarray, where: str, x_name: str, y_name: str
) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0 or X.dtype.kind not in "biuf":
        raise DataError(
            f"{where}: {x_name} must be a non-empty numeric (samples, features) array, got shape "
            f"{X.shape} and dtype {X.dtype}."
        )
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(
            f"{where}: {x_name} has {len(X)} rows but {y_name} has shape {y.shape}; every "
            "sample needs exactly one label."
        )
    X = X.astype(np.float32)
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        raise DataError(
            f"{where}: {x_name} holds NaN or infinite values (first in row "
            f"{int(np.flatnonzero(~finite)[0])})."
        )
    if y.min() < 0 or y.max() >= MAX_CLASSES:
        bad = y.min() if y.min() < 0 else y.max()
        raise DataError(
            f"{where}: {y_name} holds the label {bad}; labels must lie in [0, {MAX_CLASSES})."
        )
    return X, y.astype(np.int64)


def _check_width(path: Path, X: np.ndarray, width: int) -> None:
    if X.shape[1] != width:
        raise DataError(f"{path}: {X.shape[1]} features, but the training set has {width}.")


def _raw(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray | None, y_test: np.ndarray | None, source: str
) -> RawData:
    if len(np.unique(y)) < 2:
        raise DataError(f"{source}: the training labels hold a single class; need at least 2.")
    top = int(y.max()) if y_test is None else int(max(y.max(), y_test.max()))
    return X, y, X_test, y_test, top + 1, source


# ----------------------------------------------------------------------------- preprocessing
def per_class_subsample(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most k samples of every class (all of a smaller class)."""
    keep = [rng.permutation(np.flatnonzero(y == c))[:k] for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


def standardize(splits: list[np.ndarray]) -> list[np.ndarray]:
    """Every split shifted and scaled by the first (training) split's statistics.

    The per-feature mean and standard deviation; a constant feature is only centred.
    """
    mean = splits[0].mean(axis=0, dtype=np.float64)
    std = splits[0].std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    return [((part - mean) / std).astype(np.float32) for part in splits]


def gaussian_projection(splits: list[np.ndarray], dim: int, seed: int) -> list[np.ndarray]:
    """Project every split, x ↦ x R: R ∈ ℝ^{D×dim}, entries G/√D from ``default_rng(seed)``."""
    d = splits[0].shape[1]
    R = (np.random.default_rng(seed).standard_normal((d, dim)) / np.sqrt(d)).astype(np.float32)
    return [part @ R for part in splits]


def sign(splits: list[np.ndarray]) -> list[np.ndarray]:
    """The sign of every split, in {−1, +1}, +1 at 0 (darnn's convention everywhere)."""
    return [np.where(part >= 0, np.float32(1.0), np.float32(-1.0)) for part in splits]


__all__ = [
    "gaussian_projection",
    "hf_folders",
    "is_features_name",
    "load_features",
    "per_class_subsample",
    "read_file",
    "sign",
    "standardize",
]
