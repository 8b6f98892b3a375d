"""Shared fixtures: small networks and data, all deterministic."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

from darnn.threads import choose_threads

# Property tests draw the same examples on every run: CI can never fail on a fresh draw.
settings.register_profile("darnn", derandomize=True)
settings.load_profile("darnn")

# The library's own thread policy for small work: one thread unless OMP_NUM_THREADS says
# otherwise, so the suite does not slow down many times on a busy machine.
torch.set_num_threads(choose_threads(0))


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
