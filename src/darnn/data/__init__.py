"""Datasets: the MNIST family (IDX files), scikit-learn's 8x8 digits and user ``.npz`` files.

``load_dataset`` returns float32 features and int64 labels split into train / validation /
test (see `loading`). The modules:

- `common`: ``DataError`` and the raw tuple every loader returns;
- `idx`: the IDX file format (bounded reading of gzipped or plain files, writing);
- `sources`: where the built-in datasets are looked for, listing, downloading with SHA-256
  checks, loading an MNIST-family folder;
- `npz`: a user's ``numpy.savez`` archive;
- `loading`: ``Dataset``, ``load_dataset`` (and ``load_data`` for a run config's data
  section), the seeded stratified splits and ``sign_projection``.

The names below are re-exported for ``from darnn.data import X``. A test that replaces one
(``fetch_url``, ``SYSTEM_DATA_DIR``, ``SOURCES``) must patch `darnn.data.sources`, where it is
looked up, not this package.
"""

from .common import DataError, RawData
from .idx import read_idx, read_labelled_images, write_idx
from .loading import Dataset, load_data, load_dataset, sign_projection
from .npz import MAX_CLASSES, load_npz
from .sources import (
    DATASETS,
    IDX_CLASSES,
    IDX_FILES,
    SOURCES,
    SYSTEM_DATA_DIR,
    IdxSource,
    canonical_name,
    fetch_url,
    find_dataset,
    list_datasets,
    load_idx_dataset,
    search_paths,
    sha256_file,
)

__all__ = [
    "DATASETS",
    "IDX_CLASSES",
    "IDX_FILES",
    "MAX_CLASSES",
    "SOURCES",
    "SYSTEM_DATA_DIR",
    "DataError",
    "Dataset",
    "IdxSource",
    "RawData",
    "canonical_name",
    "fetch_url",
    "find_dataset",
    "list_datasets",
    "load_data",
    "load_dataset",
    "load_idx_dataset",
    "load_npz",
    "read_idx",
    "read_labelled_images",
    "search_paths",
    "sha256_file",
    "sign_projection",
    "write_idx",
]
