"""Baselines the paper compares with (docs/model.md#baselines).

Backprop MLPs with the same number of parameters, and a perceptron on the raw input.

- `parameter_counts` / `matched_width`: the trainable non-zeros of a `Network` and the
  width of a one-hidden-layer MLP with as many parameters.
- `tune_mlp`: that MLP (ReLU or sign with a straight-through estimator) trained with Adam,
  its learning rate chosen on the validation split; the test split is evaluated once.
- `fit_perceptron`: a multiclass perceptron on the raw input.

``darnn bench`` (darnn.bench) runs them next to darnn on identical splits; the frozen
representations (random features, reservoir) are darnn recipes with learning switched off,
so they are bench variants (darnn.bench.methods), not functions here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .config import EVAL_BATCH_SIZE, LearningConfig
from .couplings import Coupling, SparseCoupling
from .network import Network
from .threads import choose_threads, using_threads

ACTIVATIONS = ("relu", "sign")


# ---------------------------------------------------------------- parameter counts


def nonzeros(coupling: Coupling) -> int:
    """Entries of a coupling whose value is not zero (a frozen J of strength 0 has none)."""
    values = coupling.values if isinstance(coupling, SparseCoupling) else coupling.weight
    return int(torch.count_nonzero(values))


def parameter_counts(net: Network, learning: LearningConfig) -> dict[str, int]:
    """Trainable and frozen non-zeros of a network: ``{"learned": ..., "fixed": ...}``.

    ``learned``: entries the local rule may change (the support of every matrix with a
    non-zero rate: W_in, the off-diagonal J, learned inter-module couplings, W_out and the
    readout skips); ``fixed``: non-zero frozen weights that prediction uses (W_in or J when
    frozen, fixed inter-module couplings). W_back, its skips and J_D are never counted:
    the feedback acts only during training and J_D is one constant.
    """
    rec = net.recurrent
    groups: list[tuple[bool, Sequence[Coupling]]] = [
        (learning.lr_in > 0, list(net.w_in)),
        (learning.lr_j > 0, list(rec.J)),
        (learning.learn_inter and learning.lr_inter > 0, list(rec.forward_couplings)),
        (False, list(rec.backward_couplings)),
        (learning.lr_out > 0, [net.w_out]),
        (learning.lr_out_skip > 0, list(net.w_forth_skip)),  # readout skips (readout neurons)
    ]
    learned = sum(m.nnz for on, ms in groups if on for m in ms)
    fixed = sum(nonzeros(m) for on, ms in groups if not on for m in ms if m is not net.w_out)
    return {"learned": int(learned), "fixed": int(fixed)}


def mlp_parameters(n_in: int, width: int, n_out: int) -> int:
    """Weights and biases of n_in -> width -> n_out."""
    return n_in * width + width + width * n_out + n_out


def matched_width(params: int, n_in: int, n_out: int) -> int:
    """Hidden width (>= 1) whose MLP parameter count is closest to ``params``.

    The smaller width on a tie.
    """
    low = max((params - n_out) // (n_in + n_out + 1), 1)
    return min(
        (low, low + 1),
        key=lambda w: (abs(mlp_parameters(n_in, w, n_out) - params), w),
    )


# ---------------------------------------------------------------- backprop MLPs


class SignSTE(torch.autograd.Function):
    """sign in the forward pass (ties -> +1), hard-tanh gradient in the backward pass."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        """sign(h) in {-1, +1}, +1 at 0."""
        ctx.save_for_backward(h)
        return torch.where(h >= 0, 1.0, -1.0).to(h.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        """The straight-through gradient: passed where |h| <= 1, zero elsewhere."""
        (h,) = ctx.saved_tensors
        return grad * (h.abs() <= 1).to(grad.dtype)


class Sign(nn.Module):
    """sign activation with a straight-through (hard-tanh) gradient."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """sign(h), with the straight-through gradient."""
        return SignSTE.apply(h)  # type: ignore[no-any-return]


def mlp(n_in: int, width: int, n_out: int, activation: str, bias: bool = True) -> nn.Sequential:
    """One-hidden-layer MLP x -> act(W1 x + b1) -> W2 h + b2 (PyTorch's initialisation).

    Without the biases if ``bias`` is False (the authors' width-matched binary MLP).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation={activation!r} is not valid; accepted values: {', '.join(ACTIVATIONS)}"
        )
    act: nn.Module = nn.ReLU() if activation == "relu" else Sign()
    return nn.Sequential(nn.Linear(n_in, width, bias=bias), act, nn.Linear(width, n_out, bias=bias))


@torch.no_grad()
def accuracy(model: nn.Module, X: Tensor, y: Tensor) -> float:
    """Fraction of rows of X whose argmax output is the label (model in eval mode)."""
    model.eval()
    correct = 0
    for start in range(0, len(X), EVAL_BATCH_SIZE):
        out = model(X[start : start + EVAL_BATCH_SIZE])
        correct += int((out.argmax(1) == y[start : start + EVAL_BATCH_SIZE]).sum())
    return correct / max(len(X), 1)


@dataclass
class Split:
    """Features (float) and labels (int64) of one split, as tensors on one device."""

    X: Tensor
    y: Tensor

    @classmethod
    def of(cls, X: np.ndarray, y: np.ndarray, device: str | torch.device = "cpu") -> Split:
        """Float32 features and int64 labels on ``device`` from NumPy arrays."""
        return cls(
            torch.as_tensor(X, dtype=torch.float32, device=device),
            torch.as_tensor(y, dtype=torch.int64, device=device),
        )


@dataclass
class Fit:
    """One training run of a baseline: validation accuracy after every epoch, time spent."""

    val_curve: list[float] = field(default_factory=list)
    train_time: float = 0.0  # seconds in training steps (evaluation excluded)
    samples: int = 0  # training samples processed


def fit_mlp(
    model: nn.Module,
    train: Split,
    val: Split,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> Fit:
    """Adam on the cross-entropy for ``epochs`` epochs (a seeded sample order per epoch)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    fit = Fit()
    n = len(train.y)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen).to(train.X.device)
        tick = time.perf_counter()
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(train.X[idx]), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        fit.train_time += time.perf_counter() - tick
        fit.samples += n
        fit.val_curve.append(accuracy(model, val.X, val.y))
    return fit


def seeded_mlp(
    n_in: int, width: int, n_out: int, activation: str, seed: int, bias: bool = True
) -> nn.Sequential:
    """`mlp` initialised from ``seed`` alone (the global torch generator is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return mlp(n_in, width, n_out, activation, bias)


def tune_mlp(
    train: Split,
    val: Split,
    test: Split,
    *,
    n_classes: int,
    activation: str,
    width: int,
    epochs: int,
    batch_size: int,
    lrs: Sequence[float],
    seed: int,
    threads: int | None = None,
    bias: bool = True,
) -> dict[str, Any]:
    """Train one MLP per learning rate in ``lrs``; test only the best on validation.

    Same seed and initial weights for every rate; the one with the best validation accuracy after
    the last epoch (the first on a tie) is evaluated on the test split, once. Returns a record: the
    chosen ``lr``, ``lr_grid`` (validation accuracy of every rate; no test numbers), ``val_curve``,
    ``val_acc``, ``test_acc``, ``test_evaluations``, ``params``, timings.
    """
    if not lrs:
        raise ValueError("lrs must hold at least one learning rate")
    n_in, n_out = train.X.shape[1], n_classes
    work = float(batch_size) * n_in * width  # multiply-adds of the largest product
    grid: list[dict[str, float]] = []
    best: tuple[float, nn.Module, Fit, float] | None = None
    with using_threads(choose_threads(work, threads)):
        for lr in lrs:
            model = seeded_mlp(n_in, width, n_out, activation, seed, bias).to(train.X.device)
            fit = fit_mlp(model, train, val, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
            grid.append({"lr": lr, "val_acc": fit.val_curve[-1], "train_time": fit.train_time})
            if best is None or fit.val_curve[-1] > best[0]:
                best = (fit.val_curve[-1], model, fit, lr)
        assert best is not None
        _, model, fit, lr = best
        test_acc = accuracy(model, test.X, test.y)  # the only look at the test split
    return {
        "activation": activation,
        "width": width,
        "bias": bias,
        "params": sum(p.numel() for p in model.parameters()),
        "lr": lr,
        "lr_grid": grid,
        "val_curve": fit.val_curve,
        "val_acc": fit.val_curve[-1],
        "test_acc": test_acc,
        "test_evaluations": 1,
        "train_time": fit.train_time,
        "samples_per_s": fit.samples / max(fit.train_time, 1e-9),
        "tuning_time": sum(g["train_time"] for g in grid),
    }


# ---------------------------------------------------------------- perceptron


def fit_perceptron(
    train: Split,
    val: Split,
    test: Split,
    *,
    n_classes: int,
    epochs: int,
    batch_size: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Multiclass perceptron with bias on the raw input, from zero weights.

    Each sample (or the summed mistakes of a mini-batch, computed with the weights at its start)
    adds x to the row of its label and subtracts it from the row the argmax chose. A seeded random
    order per epoch; validation after every epoch; the test split once, at the end.
    """
    X, y = train.X.cpu().numpy().astype(np.float64), train.y.cpu().numpy()
    n, d = X.shape
    n_out = n_classes
    Xb = np.hstack([X, np.ones((n, 1))])  # bias as a constant input
    W = np.zeros((n_out, d + 1))
    rng = np.random.default_rng(seed)
    fit = Fit()

    def score(split: Split) -> float:
        Z = split.X.cpu().numpy().astype(np.float64) @ W[:, :d].T + W[:, d]
        return float((Z.argmax(1) == split.y.cpu().numpy()).mean())

    for _ in range(epochs):
        order = rng.permutation(n)
        tick = time.perf_counter()
        if batch_size == 1:
            for i in order:  # the classic online rule
                x, label = Xb[i], y[i]
                guess = int((W @ x).argmax())
                if guess != label:
                    W[label] += x
                    W[guess] -= x
        else:
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                guess = (Xb[idx] @ W.T).argmax(1)
                wrong = guess != y[idx]
                np.add.at(W, y[idx][wrong], Xb[idx][wrong])
                np.subtract.at(W, guess[wrong], Xb[idx][wrong])
        fit.train_time += time.perf_counter() - tick
        fit.samples += n
        fit.val_curve.append(score(val))
    return {
        "params": int(W.size),
        "batch_size": batch_size,
        "val_curve": fit.val_curve,
        "val_acc": fit.val_curve[-1],
        "test_acc": score(test),  # the only look at the test split
        "test_evaluations": 1,
        "train_time": fit.train_time,
        "samples_per_s": fit.samples / max(fit.train_time, 1e-9),
    }
