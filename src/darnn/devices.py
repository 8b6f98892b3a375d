"""Devices and dtypes by name: the one table and the one check shared by every door."""

from __future__ import annotations

import re

import torch

from .checks import short_repr
from .errors import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_device_name(name: object) -> None:
    """``cpu``, ``cuda`` or ``cuda:N``; a ValueError names anything else."""
    if not (isinstance(name, str) and re.fullmatch(r"cpu|cuda(:\d+)?", name)):
        raise ValueError(
            f"device={short_repr(name)} is not valid; accepted values: cpu, cuda, cuda:N"
        )


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` means, if this machine has it (ConfigError otherwise)."""
    try:
        check_device_name(name)
    except ValueError as exc:
        raise ConfigError(f"--device: {exc}") from None
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={name!r} but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use --device cpu"
        )
    return torch.device(name)
