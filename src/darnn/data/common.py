"""What every loader in darnn.data shares: the error it raises and the raw tuple it returns."""

from __future__ import annotations

import numpy as np


class DataError(ValueError):
    """A dataset is missing or malformed; the message says which file and what to do."""


# Features, labels, test features and labels (None when not shipped), class count, source.
RawData = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, int, str]
