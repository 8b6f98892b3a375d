"""CIFAR-10 from its binary distribution files (``data.name: cifar10``).

The binary version (``cifar-10-binary.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html,
extracted: a folder ``cifar-10-batches-bin``) holds six files, ``data_batch_1.bin`` …
``data_batch_5.bin`` (training) and ``test_batch.bin``, each 10,000 records of 3,073 bytes:
one label byte (0–9), then the 32×32 image as 1,024 red, 1,024 green and 1,024 blue bytes
(row-major). The pickled "python version" is never read (unpickling runs code from data).

The site publishes checksums of the archives, not of the six extracted files darnn reads,
so darnn pins none and does not download CIFAR-10: the loader checks the record structure
instead — every file a whole number of 3,073-byte
records, at most 10,000 of them, every label byte in 0..9 — and its error says which files
to place where.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .common import DataError, RawData

NAME = "cifar10"
FOLDER = "cifar-10-batches-bin"  # what the binary archive extracts to
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
FILES = (*TRAIN_FILES, TEST_FILE)
RECORD_BYTES = 3073  # 1 label byte + 3 x 32 x 32 pixel bytes
RECORDS_PER_FILE = 10_000
CLASSES = 10
DESCRIPTION = "CIFAR-10 colour images, 32x32x3, 50000 train / 10000 test (binary version)"


def search_paths(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for the six files, in lookup order."""
    roots = [] if data_dir is None else [Path(data_dir).expanduser()]
    roots += [Path(p).expanduser() for p in os.environ.get("DARNN_DATA", "").split(os.pathsep) if p]
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    roots.append(Path(base) / "darnn")
    paths: list[Path] = []
    for root in roots:
        paths += [root / NAME / FOLDER, root / NAME, root / FOLDER, root]
    return list(dict.fromkeys(paths))


def find(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """First folder of `search_paths` that holds all six files, or None."""
    for folder in search_paths(data_dir):
        if all((folder / f).is_file() for f in FILES):
            return folder
    return None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file: uint8 images (n, 3072) and int64 labels (n,), checked."""
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES:
        raise DataError(
            f"{path}: {size} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 "
            f"records (a truncated or corrupt file); replace it with the file of the same name "
            "from cifar-10-binary.tar.gz."
        )
    n = size // RECORD_BYTES
    if n > RECORDS_PER_FILE:
        raise DataError(
            f"{path}: {n} records, but a CIFAR-10 batch file holds at most {RECORDS_PER_FILE} "
            f"({RECORDS_PER_FILE * RECORD_BYTES} bytes); this is not a CIFAR-10 binary batch."
        )
    records = np.fromfile(path, dtype=np.uint8).reshape(n, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= CLASSES:
        bad = int(np.flatnonzero(labels >= CLASSES)[0])
        raise DataError(
            f"{path}: record {bad} has label byte {labels[bad]}, but CIFAR-10 labels are 0..9; "
            "this is not a CIFAR-10 binary batch (the CIFAR-100 files have two label bytes)."
        )
    return records[:, 1:], labels


def load(data_dir: str | os.PathLike[str] | None = None) -> RawData:
    """Training and test sets, pixels scaled to [0, 1] (float32, channel-major 3072)."""
    folder = find(data_dir)
    if folder is None:
        places = "; ".join(str(p) for p in search_paths(data_dir))
        raise DataError(
            f"CIFAR-10 not found: place the binary version's files {', '.join(FILES)} "
            f"(extract cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html; "
            f"it makes a folder {FOLDER}) in one of these folders (or pass --data-dir DIR / "
            f"data.data_dir=DIR, where DIR/{FOLDER} or DIR/{NAME} works too): {places}. darnn "
            "does not download CIFAR-10."
        )
    train = [read_batch(folder / f) for f in TRAIN_FILES]
    X = np.concatenate([x for x, _ in train]).astype(np.float32) / 255.0
    y = np.concatenate([t for _, t in train])
    x_test, y_test = read_batch(folder / TEST_FILE)
    return X, y, x_test.astype(np.float32) / 255.0, y_test, CLASSES, str(folder)


__all__ = ["FILES", "NAME", "RECORD_BYTES", "find", "load", "read_batch", "search_paths"]
