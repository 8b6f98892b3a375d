"""Memory of a network before it is built: its size estimate and the check against the machine.

`Network` calls `check_memory` before allocating anything, so a network too large for the
machine fails at once with a message saying how much it needs and how much is available.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .config import NetworkConfig

# "auto" stores a masked coupling as CSR at or below this density.
_AUTO_CSR_DENSITY = 0.2
# Temporaries of the CSR sampler (bernoulli_support's chunk of uniforms, gaps, positions).
_SAMPLER_BYTES = 48 << 20


class NetworkTooLargeError(ValueError):
    """The network asked for would not fit in memory; raised before anything is allocated."""


def uses_csr(config: NetworkConfig, density: float) -> bool:
    """Whether a coupling of this density is stored as CSR under ``config.sparse_format``."""
    if config.sparse_format == "auto":
        return density <= _AUTO_CSR_DENSITY
    return config.sparse_format == "csr"


def estimate_bytes(
    config: NetworkConfig, n_features: int, n_classes: int, dtype: torch.dtype = torch.float32
) -> tuple[int, int]:
    """(bytes kept, peak bytes while building) of ``Network(config, n_features, n_classes)``.

    Counts every matrix as it will be stored (dense: weights, plus a float mask when masked;
    CSR: one value and one int32 column per expected non-zero, plus the row pointers). The
    peak adds the temporaries of building the largest coupling (drawn in float32, then
    masked or compressed, then cast to ``dtype``). Within a few per cent for large networks.
    """
    item = torch.empty((), dtype=dtype).element_size()
    sizes = config.hidden
    kept = 0
    temporary = 0

    def add(n_out: int, n_in: int, density: float, diagonal: bool) -> None:
        nonlocal kept, temporary
        entries = n_out * n_in - (n_out if diagonal and density >= 1 else 0)
        if uses_csr(config, density):
            nnz = math.ceil(entries * density)
            kept += nnz * (item + 4) + (n_out + 1) * 4
            if density >= 1:  # drawn dense, then compressed (bool support, int64 indices)
                build = n_out * n_in * 5 + nnz * 24
            else:  # int32 columns twice (chunks, then joined), float32 values, row counts
                build = nnz * 12 + n_out * 16 + _SAMPLER_BYTES
        else:
            masked = density < 1
            kept += n_out * n_in * item * (2 if masked else 1)
            # float32 draw, masked product and diagonal copy, bool mask
            build = n_out * n_in * (13 if masked else 8)
        temporary = max(temporary, build)

    fed = sizes if config.input_to_all else sizes[:1]
    for n in fed:
        add(n, n_features, config.w_in_density, False)
    for n in sizes:
        add(n, n, config.j_density, True)
    for a, b in zip(sizes[:-1], sizes[1:]):
        if config.inter == "identity":
            kept += (a + b) * item
        elif config.inter == "gaussian":
            kept += 2 * a * b * item
            temporary = max(temporary, a * b * 8)
        else:
            k = config.inter_fan_in
            kept += (a + b) * k * (item + 4) + (a + b + 2) * 4
            # distinct_columns: int64 draws, sort, mask (a dense bool block when 2k > n_in)
            dense_block = max(a, b) if 2 * k > min(a, b) else 0
            temporary = max(temporary, max(a, b) * (24 * k + dense_block))
    kept += 2 * sizes[-1] * n_classes * item  # W_out and W_back
    return kept, kept + temporary


def available_memory(
    meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """Bytes this process can still allocate, or None when the system does not say.

    Linux: MemAvailable of /proc/meminfo (free memory plus reclaimable caches), lowered to
    the room left under a cgroup memory limit when one is set (containers, SLURM jobs;
    cgroup v2 memory.max or v1 memory.limit_in_bytes). Elsewhere: the total physical memory.
    """
    limit: int | None = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limit = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    for cap_file, used_file in (
        (cgroup / "memory.max", cgroup / "memory.current"),
        (cgroup / "memory" / "memory.limit_in_bytes", cgroup / "memory" / "memory.usage_in_bytes"),
    ):
        try:
            cap = cap_file.read_text().strip()
            if cap != "max" and int(cap) < 2**60:  # v1 writes "no limit" as ~2^63
                room = int(cap) - int(used_file.read_text())
                limit = room if limit is None else min(limit, room)
        except (OSError, ValueError):
            pass
    if limit is None:
        try:
            limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    return max(limit, 0)


def check_memory(
    config: NetworkConfig,
    n_features: int,
    n_classes: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> int:
    """Refuse (NetworkTooLargeError) a network whose build peak exceeds available memory.

    The rule: the peak of ``estimate_bytes`` must fit in ``available_memory()`` (the network
    is always built in main memory) and, on a CUDA device, what it keeps must fit in the
    device's free memory. Returns the peak estimate.
    """
    kept, peak = estimate_bytes(config, n_features, n_classes, dtype)
    where, room = "main memory", available_memory()
    if torch.device(device).type == "cuda" and (room is None or peak <= room):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        where, room, peak = f"free memory on {device}", free, kept
    if room is not None and peak > room:
        raise NetworkTooLargeError(
            f"The network hidden={list(config.hidden)} (j_density={config.j_density}, "
            f"w_in_density={config.w_in_density}, sparse_format={config.sparse_format!r}, "
            f"{n_features} inputs, {n_classes} classes, {str(dtype).removeprefix('torch.')}) "
            f"needs an estimated {gib(peak)} ({gib(kept)} kept after building), but only "
            f"{gib(room)} of {where} is available. Use smaller hidden modules, or sparse "
            "couplings (a lower j_density / w_in_density with sparse_format auto or csr, "
            "whose memory follows the non-zeros)"
            + (", or float32." if dtype == torch.float64 else ".")
        )
    return peak


def gib(n: int) -> str:
    """``n`` bytes written in GiB, with the exact count."""
    return f"{n / 2**30:.3g} GiB ({n} bytes)"
