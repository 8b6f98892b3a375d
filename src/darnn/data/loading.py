"""Loading a dataset as train / validation / test splits, with the optional sign transforms.

The validation set is always carved out of the training data (seeded, stratified); the test
set is the one shipped with the data, or a fixed seeded 20 % hold-out when none is shipped
(digits, an npz file without test arrays). The transforms are the input encodings of recipes B
("binarised": sign of a D x D Gaussian projection) and C ("entangled": sign of a D x 100 one);
see docs/model.md#input-transforms.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import keywords_for
from ..errors import ConfigError
from . import cifar, features
from .common import DataError, RawData
from .npz import load_npz
from .sources import canonical_name, load_idx_dataset

if TYPE_CHECKING:  # the data section's type only: loading data needs no torch
    from ..runconfig import DataConfig

_TEST_FRACTION = 0.2  # hold-out used when a dataset ships no test split
_TEST_SPLIT_SEED = 0  # fixed, so the test set never depends on the user's seed


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

    def fingerprint(self) -> str:
        """SHA-256 of the training data, so a resumed run cannot silently train on other data."""
        digest = hashlib.sha256(np.ascontiguousarray(self.X_train).tobytes())
        digest.update(np.ascontiguousarray(self.y_train).tobytes())
        return digest.hexdigest()


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


def _load_digits() -> RawData:
    """scikit-learn's bundled 8x8 digits; no test split is shipped."""
    from sklearn.datasets import load_digits  # deferred: a slow import only digits needs

    bunch = load_digits()
    X = (bunch.data / 16.0).astype(np.float32)  # pixel counts 0..16 -> [0, 1]
    return X, bunch.target.astype(np.int64), None, None, 10, "scikit-learn"


def _check_preprocessing(
    kind: str | None, per_class: int | None, projection_dim: int | None, sign: bool
) -> None:
    for key_name, value in (("per_class", per_class), ("projection_dim", projection_dim)):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(f"{key_name} must be a positive integer or null, got {value!r}")
    if kind is not None and (projection_dim is not None or sign):
        raise ValueError(
            "transform already projects and takes the sign; use either transform or "
            "projection_dim/sign"
        )


def _read(
    name: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> tuple[str, RawData]:
    """The dataset's key (its name in a run's records) and raw arrays."""
    if features.is_features_name(name):
        return name, features.load_features(name, data_dir)
    if name.startswith("npz:") or name.lower().endswith(".npz"):
        path = Path(name.removeprefix("npz:")).expanduser()
        return f"npz:{path}", load_npz(path)
    key = canonical_name(name)
    if key == "digits":
        return key, _load_digits()
    if key == cifar.NAME:
        return key, cifar.load(data_dir)
    return key, load_idx_dataset(key, data_dir, download)


def _preprocess(
    splits: list[np.ndarray], standardize: bool, projection_dim: int | None, sign: bool, seed: int
) -> list[np.ndarray]:
    """The data section's feature preprocessing (docs/model.md#feature-sets), in order."""
    if standardize:
        splits = features.standardize(splits)
    if projection_dim is not None:
        splits = features.gaussian_projection(splits, projection_dim, seed)
    if sign:
        splits = features.sign(splits)
    return splits


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
    per_class: int | None = None,
    standardize: bool = False,
    projection_dim: int | None = None,
    sign: bool = False,
) -> Dataset:
    """Load ``name`` (a DATASETS entry, 'npz:PATH' or a .npz path) as a train/val/test Dataset.

    The validation set (``val_size``: fraction or count) is a stratified split of the training
    data drawn with ``seed``; ``limit_train`` then keeps that many shuffled training samples.
    ``transform`` "entangled" (default dim 100) or "binarised" (default dim D) replaces the
    features of every split by ``sign_projection(X, dim, transform_seed)``.
    Feature preprocessing (docs/model.md#feature-sets), after the splits: ``per_class``
    keeps at most that many training samples per class (drawn with ``seed``),
    ``standardize`` centres and scales every split by the training split's statistics,
    ``projection_dim`` multiplies by a Gaussian R (D x dim, seed ``transform_seed``),
    ``sign`` takes the sign.

    Returns:
        A `Dataset`: float32 features (n, D) and int64 labels in 0..C-1 for each split.

    Raises:
        DataError: The data set cannot be found or read (the message says where it looked
            and how to get it), or a file is malformed.
        ValueError: An argument out of its range (a split that leaves no training data).
    """
    # Check the arguments before reading (or downloading) anything.
    kind = None if transform is None else transform.lower().replace("binarized", "binarised")
    if kind not in (None, "entangled", "binarised"):
        raise ValueError(f"transform must be 'entangled' or 'binarised', got {transform!r}")
    if kind is None and transform_dim is not None:
        raise ValueError("transform_dim is only meaningful together with a transform")
    if limit_train is not None and limit_train < 1:
        raise ValueError(f"limit_train must be positive, got {limit_train}")
    _check_preprocessing(kind, per_class, projection_dim, sign)
    key, raw = _read(name, data_dir, download)
    X, y, X_test, y_test, n_classes, source = raw
    if X_test is None or y_test is None:
        n_test = round(_TEST_FRACTION * len(y))
        rest, test = _stratified_split(y, n_test, np.random.default_rng(_TEST_SPLIT_SEED))
        X, y, X_test, y_test = X[rest], y[rest], X[test], y[test]

    rng = np.random.default_rng(seed)
    train, val = _stratified_split(y, _held_out_count(val_size, len(y)), rng)
    if limit_train is not None:
        train = rng.permutation(train)[:limit_train]
    if per_class is not None:
        train = train[features.per_class_subsample(y[train], per_class, rng)]
    splits = _preprocess(
        [X[train], X[val], X_test], standardize, projection_dim, sign, transform_seed
    )
    if kind is not None:
        dim = transform_dim
        if dim is None:  # recipe C projects to 100 dimensions, recipe B keeps D
            dim = 100 if kind == "entangled" else X.shape[1]
        splits = [sign_projection(part, dim, transform_seed) for part in splits]
    return Dataset(
        key, splits[0], y[train], splits[1], y[val], splits[2], y_test, n_classes, source
    )


def load_data(
    config: DataConfig, *, name: str | None = None, data_dir: str | None = None
) -> Dataset:
    """The data set a run config's data section describes.

    ``name`` and ``data_dir``, when given, replace the config's.
    """
    try:
        return load_dataset(  # the section's fields under their own names, and these
            **keywords_for(
                load_dataset,
                vars(config),
                name=name or config.name,
                data_dir=data_dir or config.data_dir,
                seed=config.split_seed,
            )
        )
    except DataError:
        raise  # already a complete user-facing message
    except (TypeError, ValueError) as exc:  # an argument the data section passed on
        raise ConfigError(f"config section 'data': {exc}") from None
