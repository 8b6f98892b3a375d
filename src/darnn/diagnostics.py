"""Diagnostics of a trained network: coupling symmetry and the field components at s*."""

from __future__ import annotations

import math

import torch

from . import protocol
from .config import LearningConfig
from .couplings import Coupling, DenseCoupling, IdentityCoupling, SparseCoupling, row_indices
from .learning import two_phase
from .network import Network


def coupling_symmetry(matrix: torch.Tensor | Coupling) -> float:
    """(|J_s| - |J_a|) / (|J_s| + |J_a|) with J_s, J_a the (anti)symmetric parts of J.

    +1 for a symmetric J, -1 for an antisymmetric one, about 0 for i.i.d. entries.
    ``matrix`` is a square tensor or a coupling; a CSR coupling is measured from its stored
    entries and their transpose, in O(nnz) memory and time (never N x N).
    """
    if isinstance(matrix, SparseCoupling):
        square, cross = _sparse_square_and_cross(matrix)
    elif isinstance(matrix, IdentityCoupling):  # diagonal: symmetric
        square = cross = float((matrix.weight.detach().double() ** 2).sum())
    else:
        dense = matrix.weight.detach() if isinstance(matrix, DenseCoupling) else matrix
        square, cross = _dense_square_and_cross(dense)
    sym, anti = math.sqrt(max(square + cross, 0) / 2), math.sqrt(max(square - cross, 0) / 2)
    return (sym - anti) / (sym + anti) if sym + anti > 0 else 0.0


def _dense_square_and_cross(matrix: torch.Tensor) -> tuple[float, float]:
    """|J|^2 and <J, J^T>: |J_s|^2 and |J_a|^2 are (|J|^2 +- <J, J^T>) / 2.

    Accumulated over blocks of rows, so a large J never needs float64 copies of itself or its
    transpose.
    """
    square = cross = 0.0
    for start in range(0, matrix.shape[0], 1024):
        rows = matrix[start : start + 1024].double()
        cols = matrix[:, start : start + 1024].T.double()
        square += float((rows * rows).sum())
        cross += float((rows * cols).sum())
    return square, cross


def _sparse_square_and_cross(coupling: SparseCoupling) -> tuple[float, float]:
    """|J|^2 and <J, J^T> of a CSR coupling from its (row, col, value) triplets.

    Each entry (i, j) meets the stored (j, i), if any, by a sorted-key lookup. O(nnz log nnz).
    """
    n = coupling.n_out
    values = coupling.values.detach().to("cpu", torch.float64)
    if values.numel() == 0:
        return 0.0, 0.0
    rows = row_indices(coupling.crow.to("cpu"))
    cols = coupling.col.to("cpu").long()
    keys = rows * n + cols
    keys, order = torch.sort(keys)
    values = values[order]
    transposed = (keys % n) * n + keys // n  # (j, i) for every stored (i, j)
    where = torch.searchsorted(keys, transposed).clamp_(max=len(keys) - 1)
    partner = torch.where(keys[where] == transposed, values[where], 0.0)
    return float((values * values).sum()), float((values * partner).sum())


@torch.no_grad()
def field_components(
    net: Network, x: torch.Tensor, y: torch.Tensor, cfg: LearningConfig
) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]]:
    """Field components at the end of the free phase, per hidden module, and the states.

    internal: recurrent field (J s + J_D s + inter-module); input: W_in x; label: the
    feedback W_back label the clamped phase added to the last module.
    """
    # A private generator: measuring must not advance the training's random streams.
    generator = torch.Generator().manual_seed(0)
    if net.config.readout == "neurons":
        return _protocol_components(net, x, y, cfg, generator)
    drives, free = two_phase(net, x, y, cfg, generator)
    parts: list[dict[str, torch.Tensor]] = []
    for l in range(net.recurrent.n_layers):
        layer = {"internal": free.internal[l], "input": drives[l]}
        if l == net.recurrent.n_layers - 1:
            layer["label"] = net.label_field(y)
        parts.append(layer)
    return parts, free.states


def _protocol_components(
    net: Network, x: torch.Tensor, y: torch.Tensor, cfg: LearningConfig, generator: torch.Generator
) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]]:
    """`field_components` for readout neurons.

    At the end of the protocol's training dynamics, the label-free fields split into internal and
    input parts, and the feedback W_back e(r) the clamped readout sends to the last module.
    """
    final = protocol.relax_training(net, x, y, cfg, generator).final
    feedback = final.readout @ net.w_back.T  # the readout is held coded: e(r)
    drives = net.input_drives(x)
    hidden, _ = protocol.Fields(net, drives, net.targets(y))(
        final.clone(), protocol.label_free(cfg)
    )
    parts = [{"internal": h - d, "input": d} for h, d in zip(hidden, drives)]
    parts[-1]["label"] = feedback
    return parts, final.modules


def field_summary(
    parts: list[dict[str, torch.Tensor]], states: list[torch.Tensor]
) -> list[dict[str, dict[str, float]]]:
    """mean, std and aligned mean (mean of s_i h_i: its push towards stability) of each part."""
    return [
        {
            name: {"mean": float(h.mean()), "std": float(h.std()), "aligned": float((s * h).mean())}
            for name, h in layer.items()
        }
        for layer, s in zip(parts, states)
    ]
