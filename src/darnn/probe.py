"""Linear probes: how linearly separable are the states a trained network settles in?

A probe is a bias-free linear map from a frozen representation to the classes, trained by
cross-entropy with Adam (the authors' JAX tutorial: lr 1e-3, batch 256, 20 epochs). The
representation is the state the network's own prediction reads (warm-up + eval sweeps
from 0, input only): the last module, or every module side by side. It measures what
the dynamics learned apart from the readout's local rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import LearningConfig
from .learning import predict_scores
from .network import Network

REPRESENTATIONS = ("last", "all")


@torch.no_grad()
def representation(
    net: Network, X: Tensor, cfg: LearningConfig, which: str = "last", batch_size: int = 1024
) -> Tensor:
    """(n, N_L) states of the last module, or (n, sum N_l) of all, after prediction dynamics."""
    if which not in REPRESENTATIONS:
        raise ValueError(f"which={which!r} is not valid; accepted: {', '.join(REPRESENTATIONS)}")
    generator = torch.Generator().manual_seed(0)  # masks of stochastic sweeps, if any
    parts = []
    for start in range(0, X.shape[0], batch_size):
        xb = X[start : start + batch_size].to(net.device, net.dtype)
        _, relaxed = predict_scores(net, xb, cfg, generator)
        states = relaxed.states[-1:] if which == "last" else relaxed.states
        parts.append(torch.cat([s.contiguous() for s in states], dim=1).float().cpu())
    return torch.cat(parts) if parts else torch.empty(0, 0)


@dataclass(frozen=True)
class ProbeResult:
    """Accuracies of a fitted probe on each split, and the epochs it trained."""

    val_acc: float
    test_acc: float
    train_acc: float
    epochs: int


def fit_probe(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    n_classes: int,
    *,
    seed: int = 0,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 256,
) -> ProbeResult:
    """Train a bias-free linear probe on (features, labels).

    Cross-entropy with Adam; the last epoch is reported (no epoch is chosen on the test
    split).

    Args:
        train: (features (n, F), int64 labels (n,)) to fit on; likewise ``val`` and ``test``.
        val: Validation split.
        test: Test split, evaluated once at the end.
        n_classes: C, the probe's outputs.
        seed: Seed of the initial weights and the batch order.
        epochs: Passes over ``train``.
        lr: Adam's learning rate.
        batch_size: Samples per step.

    Returns:
        The accuracies on the three splits after the last epoch.
    """
    X, y = train
    gen = torch.Generator().manual_seed(seed)
    probe = nn.Linear(X.shape[1], n_classes, bias=False)
    with torch.no_grad():  # PyTorch's default initialisation, drawn from our generator
        bound = 1.0 / max(X.shape[1], 1) ** 0.5
        probe.weight.uniform_(-bound, bound, generator=gen)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(X.shape[0], generator=gen)
        for start in range(0, X.shape[0], batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss_fn(probe(X[idx]), y[idx]).backward()
            opt.step()

    @torch.no_grad()
    def accuracy(split: tuple[Tensor, Tensor]) -> float:
        features, labels = split
        if len(labels) == 0:
            return float("nan")
        return float((probe(features).argmax(dim=1) == labels).float().mean())

    return ProbeResult(accuracy(val), accuracy(test), accuracy(train), epochs)
