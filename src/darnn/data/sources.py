"""The built-in datasets: where their files are looked for, downloaded (SHA-256 checked) and loaded.

The MNIST family (mnist, fashion-mnist, kmnist) is four IDX files per dataset, found in the
folders of ``search_paths`` or fetched into a per-user cache; digits comes from scikit-learn
(see darnn.data.loading). Tests patch ``fetch_url``, ``SOURCES`` and ``SYSTEM_DATA_DIR`` here,
in this module, where they are looked up.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import cifar
from .common import DataError, RawData
from .idx import read_labelled_images

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "kmnist", "digits", "cifar10")

# Debian's dataset packages (e.g. dataset-fashion-mnist) install under this root.
SYSTEM_DATA_DIR = Path("/usr/share/datasets")

# The four files of every MNIST-family dataset, in the order train images, train labels,
# test images, test labels; each may be stored gzipped (".gz" appended) or decompressed.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IDX_CLASSES = 10  # every MNIST-family dataset has ten classes


@dataclass(frozen=True)
class IdxSource:
    """Where one MNIST-family dataset is published and how its files are checked."""

    description: str
    torchvision_dir: str  # torchvision keeps the files in ROOT/<this>/raw
    url: str  # base URL of the canonical .gz files
    sha256: tuple[str, str, str, str]  # of the canonical .gz files, in IDX_FILES order


# SHA-256 of the canonical .gz files (the ones whose MD5s torchvision pins), as listed in
# torchvision's prototype datasets (torchvision/prototype/datasets/_builtin/mnist.py) and
# torchvision-ruby. Debian re-packs the Fashion-MNIST files (same deflate data, a gzip header
# without file name or original time), so only downloads are verified, never files found locally.
SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
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
    "fashion-mnist": IdxSource(
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
    "kmnist": IdxSource(
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


# ---------------------------------------------------------------- finding the files


def canonical_name(name: str) -> str:
    """The registered name for ``name`` (case and ``_``/``-`` insensitive) or a DataError."""
    key = name.strip().lower().replace("_", "-")
    key = "cifar10" if key == "cifar-10" else key
    if key not in DATASETS:
        raise DataError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(DATASETS)}; a file of your "
            "own is given as 'npz:PATH' (or a path ending in .npz) holding arrays X and y, a "
            "feature set as 'features:PATH' (Parquet, Arrow or npz) or 'hf:OWNER/NAME'."
        )
    return key


def _cache_dir(name: str) -> Path:
    """Per-user download folder: $XDG_CACHE_HOME/darnn/NAME, else ~/.cache/darnn/NAME."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "darnn" / name


def search_paths(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for an IDX dataset, in lookup order (empty for digits)."""
    key = canonical_name(name)
    if key not in SOURCES:
        return []
    roots = [] if data_dir is None else [Path(data_dir).expanduser()]
    roots += [Path(p).expanduser() for p in os.environ.get("DARNN_DATA", "").split(os.pathsep) if p]
    paths: list[Path] = []
    for root in roots:
        # Named sub-folders first, so one root shared by several datasets resolves correctly.
        tv_raw = root / SOURCES[key].torchvision_dir / "raw"
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
        if all(_idx_file(directory, stem) for stem in IDX_FILES):
            return directory
    return None


def list_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, object]]:
    """One dict per built-in dataset: name, available, path (str or None), description."""
    rows: list[dict[str, object]] = []
    for name in DATASETS:
        if name in SOURCES:
            found = find_dataset(name, data_dir)
            available, path, description = found is not None, found, SOURCES[name].description
        elif name == cifar.NAME:
            found = cifar.find(data_dir)
            available, path, description = found is not None, found, cifar.DESCRIPTION
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
        absent = [stem for stem in IDX_FILES if _idx_file(directory, stem) is None]
        note = "" if len(absent) == len(IDX_FILES) else f" (incomplete: no {', '.join(absent)})"
        looked.append(f"{directory}{note}")
    apt = (
        " install the Debian package (apt-get install dataset-fashion-mnist),"
        if (name == "fashion-mnist")
        else ""
    )
    return (
        f"Dataset {name!r} was not found: looked for {', '.join(IDX_FILES)} (each .gz or "
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
    source, target = SOURCES[name], _cache_dir(name)
    for stem, expected in zip(IDX_FILES, source.sha256, strict=True):
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


# ---------------------------------------------------------------- loading


def load_idx_dataset(name: str, data_dir: str | os.PathLike[str] | None, download: bool) -> RawData:
    """An MNIST-family dataset from the first complete folder found, downloading if allowed."""
    directory = find_dataset(name, data_dir)
    if directory is None:
        if not download:
            reason = "Downloading was not allowed (download=False)"
            raise DataError(_missing_message(name, data_dir, reason))
        directory = _download(name, data_dir)
    files = [_idx_file(directory, stem) or directory / stem for stem in IDX_FILES]
    X, y = read_labelled_images(files[0], files[1], IDX_CLASSES)
    X_test, y_test = read_labelled_images(files[2], files[3], IDX_CLASSES)
    if X_test.shape[1] != X.shape[1]:
        raise DataError(
            f"{files[2]}: test images have {X_test.shape[1]} pixels but the "
            f"training images {X.shape[1]}."
        )
    return X, y, X_test, y_test, IDX_CLASSES, str(directory)
