"""Shared fixtures: small networks and data, all deterministic."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
