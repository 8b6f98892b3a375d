"""User datasets in ``.npz`` files: a numpy.savez archive of X, y and optionally X_test, y_test."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from .common import DataError, RawData

# Labels of a user's data must be integers in [0, MAX_CLASSES): the readout has one unit per
# label value, so a label of 10^9 would otherwise mean a 10^9-class network.
MAX_CLASSES = 10_000


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


def load_npz(path: Path) -> RawData:
    """A user's numpy.savez archive with X, y and optionally X_test, y_test."""
    if not path.is_file():
        raise DataError(
            f"{path}: no such file; an npz dataset is a numpy.savez archive "
            "holding X (n, d) and y (n,), optionally X_test and y_test."
        )
    check_declared_sizes(path)
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
    if y_test is not None:
        unseen = np.setdiff1d(np.unique(y_test), present)
        if len(unseen):
            shown_unseen = ", ".join(str(int(c)) for c in unseen[:10])
            raise DataError(
                f"{path}: y_test holds class{'es' if len(unseen) > 1 else ''} {shown_unseen}"
                f"{' ...' if len(unseen) > 10 else ''} that never occur{'s' * (len(unseen) == 1)}"
                " in y. The test set never shapes the model (the readout is sized from the "
                "training labels) and a class without training samples cannot be learned: "
                "drop those test samples or add training samples of the class."
            )
    n_classes = int(y.max()) + 1  # from the training labels only
    return X, y, X_test, y_test, n_classes, str(path)


def check_declared_sizes(path: Path) -> None:
    """Refuse an archive member whose .npy header claims more data than the member holds.

    Checked before numpy allocates anything (a 10^12 x 1000 shape in a few bytes): numpy
    allocates the header's shape before reading.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = {
                        (1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0,
                    }.get(version)
                    if read_header is None:
                        continue  # numpy's own reader explains an unknown version
                    shape, _, dtype = read_header(member, max_header_size=10_000)
                    header_end = member.tell()
                claimed = math.prod(shape) * dtype.itemsize
                if claimed > info.file_size - header_end:
                    raise DataError(
                        f"{path}: array {info.filename[:-4]} claims shape {str(shape)[:100]} of "
                        f"{dtype} ({claimed:.3g} bytes) but its member holds only "
                        f"{info.file_size} bytes; the file is corrupt or hand-made."
                    )
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, TypeError):
        return  # not a zip, or an unreadable header: np.load reports it below
