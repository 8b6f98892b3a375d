"""The IDX file format of the MNIST family: bounded reading (gzipped or not) and writing."""

from __future__ import annotations

import gzip
import math
import os
import struct
import typing
import zlib
from pathlib import Path

import numpy as np

from .common import DataError

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


def read_labelled_images(
    images_path: Path, labels_path: Path, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images scaled to float32 [0, 1] and flattened, with their int64 labels < n_classes."""
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
    if labels.size and labels.max() >= n_classes:
        raise DataError(f"{labels_path}: label {labels.max()} is outside 0..{n_classes - 1}.")
    X = images.reshape(len(images), -1).astype(np.float32)
    X /= 255.0
    return X, labels.astype(np.int64)
