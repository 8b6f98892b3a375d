"""Files of a run directory: atomic writes, the saved model, checkpoints, metrics and plots.

A run directory holds ``config.yaml`` (the resolved config), ``meta.json`` (seed, versions,
command line, start time), ``metrics.jsonl`` (one record per epoch), ``checkpoint.safetensors``
(everything needed to continue, rewritten at every save), and at the end the model
(``model.safetensors`` + ``model.json``) and PNG plots. Every file is written to a temporary
file in the same folder and renamed into place, so a crash never leaves a half-written file,
and every weight file carries a SHA-256 that is checked when it is read back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import safetensors
import safetensors.torch
import torch

from .config import NetworkConfig, from_dict, to_dict
from .couplings import DenseCoupling, IdentityCoupling, SparseCoupling
from .data import sha256_file
from .network import Network

MODEL_FORMAT = "darnn-model"
CHECKPOINT_FORMAT = "darnn-checkpoint"
FORMAT_VERSION = 1
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# mkstemp creates 0600 files; run files get the permissions the umask gives a new file.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class RunError(Exception):
    """A problem the user can fix (run directory, model or checkpoint file); one paragraph."""


# ---------------------------------------------------------------- atomic files


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(stream)`` into a temporary file, then rename it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda stream: stream.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, or a RunError saying why not."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise RunError(f"{what} {path} does not exist.") from None
    except (OSError, safetensors.SafetensorError, ValueError, RuntimeError) as exc:
        raise RunError(
            f"{what} {path} is not a readable safetensors file ({exc}); it is corrupt or was "
            "replaced by another file."
        ) from exc
    return tensors, metadata


# ---------------------------------------------------------------- model files


def _tensor_formats(net: Network) -> dict[str, str]:
    """Storage format of every state_dict entry: dense, csr (crow/col/values) or identity."""
    kinds = {DenseCoupling: "dense", SparseCoupling: "csr", IdentityCoupling: "identity"}
    formats = {}
    for name in net.state_dict():
        module_name, _, leaf = name.rpartition(".")
        module = net.get_submodule(module_name) if module_name else net
        kind = kinds.get(type(module), "dense")
        formats[name] = f"csr.{leaf}" if kind == "csr" else kind
    return formats


def save_model(
    net: Network,
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``PATH.safetensors`` (weights) and ``PATH.json`` (how to rebuild, SHA-256).

    ``path`` may name either file or the common stem. ``seed`` is the seed the network was
    built with: it fixes the sparsity masks, hence the tensor shapes load_model expects.
    """
    stem = Path(path).with_suffix("")
    weights, manifest = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    blob = safetensors.torch.save(tensors, metadata={"format": MODEL_FORMAT})
    atomic_write(weights, lambda stream: stream.write(blob))
    formats = _tensor_formats(net)
    info = {
        "format": MODEL_FORMAT,
        "version": FORMAT_VERSION,
        "network": to_dict(net.config),
        "n_features": net.n_features,
        "n_classes": net.n_classes,
        "dtype": str(net.dtype).removeprefix("torch."),
        "seed": seed,
        "tensors": {
            k: {
                "dtype": str(v.dtype).removeprefix("torch."),
                "shape": list(v.shape),
                "format": formats[k],
            }
            for k, v in tensors.items()
        },
        "sha256": hashlib.sha256(blob).hexdigest(),
        **(extra or {}),
    }
    write_json(manifest, info)


def read_model_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``model.json`` next to (or named by) ``path``."""
    manifest = Path(path).with_suffix(".json")
    try:
        info = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise RunError(
            f"No saved model at {manifest}: the run has not finished (resume it with "
            "darnn train --resume RUN_DIR) or this is not a run directory."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"Model description {manifest} is not readable JSON ({exc}).") from exc
    if not isinstance(info, dict) or info.get("format") != MODEL_FORMAT:
        raise RunError(f"{manifest} is not a darnn model description (no format: {MODEL_FORMAT}).")
    if info.get("version") != FORMAT_VERSION:
        raise RunError(
            f"{manifest} has model format version {info.get('version')!r}; this "
            f"darnn reads version {FORMAT_VERSION}."
        )
    return info


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Network:
    """Rebuild the Network described by ``model.json`` and load ``model.safetensors``.

    The file's SHA-256, its header, and every tensor name and shape are checked; any
    mismatch is a RunError naming the file.
    """
    stem = Path(path).with_suffix("")
    weights, manifest = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    info = read_model_info(stem)
    try:
        config = from_dict(NetworkConfig, info["network"], section="network")
        dtype = DTYPES[info["dtype"]]
        n_features, n_classes, seed = int(info["n_features"]), int(info["n_classes"]), info["seed"]
        expected_sha = str(info["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"Model description {manifest} is incomplete or invalid ({exc}).") from exc
    if not weights.is_file():
        raise RunError(f"Model weights {weights} are missing (described by {manifest}).")
    if sha256_file(weights) != expected_sha:
        raise RunError(
            f"Model weights {weights} do not match the SHA-256 recorded in "
            f"{manifest}: the file is corrupt or was modified after training."
        )
    tensors, _ = _read_safetensors(weights, "Model weights")
    net = Network(config, n_features, n_classes, seed=seed, dtype=dtype)
    check_tensors(net, tensors, weights)
    net.load_state_dict(tensors)
    return net.to(device)


def check_tensors(net: Network, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))
        raise RunError(
            f"{path} does not hold the tensors of the described network "
            f"(differing names/shapes: {diff[:6]})."
        )


# ---------------------------------------------------------------- checkpoints


def _content_digest(state_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the JSON state and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(state_json.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """One safetensors file: ``tensors`` plus the JSON ``state`` and their digest as metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    state_json = json.dumps(state)
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "state": state_json,
        "sha256": _content_digest(state_json, tensors),
    }
    blob = safetensors.torch.save(tensors, metadata=metadata)
    atomic_write(path, lambda stream: stream.write(blob))


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The (state, tensors) written by save_checkpoint, verified against its digest."""
    tensors, metadata = _read_safetensors(path, "Checkpoint")
    if metadata.get("format") != CHECKPOINT_FORMAT or "state" not in metadata:
        raise RunError(f"Checkpoint {path} is not a darnn checkpoint.")
    if _content_digest(metadata["state"], tensors) != metadata.get("sha256"):
        raise RunError(
            f"Checkpoint {path} fails its SHA-256 check: it is corrupt or was "
            "modified. Restart the run, or resume from a copy of the run directory."
        )
    return json.loads(metadata["state"]), tensors


# ---------------------------------------------------------------- plots


@contextlib.contextmanager
def _figure(path: Path, rows: int, cols: int, size: tuple[float, float]) -> Iterator[Any]:
    """A matplotlib (Agg) figure saved atomically to ``path`` and closed afterwards."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    try:
        yield axes
        fig.tight_layout()
        atomic_write(path, lambda stream: fig.savefig(stream, format="png", dpi=110))
    finally:
        plt.close(fig)


def plot_learning_curves(path: Path, metrics: list[dict[str, Any]]) -> None:
    """Accuracies (left) and dynamics diagnostics (right) against the epoch."""
    epochs = [m["epoch"] for m in metrics]
    with _figure(path, 1, 2, (11, 4)) as axes:
        acc, dyn = axes[0]
        for key, label in (
            ("train_acc", "train (free phase, running)"),
            ("val_acc", "validation"),
            ("test_acc", "test"),
        ):
            acc.plot(epochs, [m[key] for m in metrics], marker="o", label=label)
        acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
        acc.legend()
        for key, label in (
            ("unstable", "unstable hidden units"),
            ("converged", "free phase at a fixed point"),
            ("eval_converged", "evaluation at a fixed point"),
        ):
            dyn.plot(epochs, [m[key] for m in metrics], marker="o", label=label)
        n_layers = len(metrics[0]["symmetry"]) if metrics else 0
        for l in range(n_layers):
            dyn.plot(
                epochs,
                [m["symmetry"][l] for m in metrics],
                marker="s",
                linestyle="--",
                label=f"symmetry of J_{l + 1}",
            )
        dyn.set(xlabel="epoch", ylabel="fraction / symmetry", title="Dynamics")
        dyn.legend(fontsize="small")


def plot_field_histograms(path: Path, components: list[dict[str, torch.Tensor]]) -> None:
    """Per hidden module, histograms of each field component on the probe batch."""
    with _figure(path, len(components), 1, (7, 3 * len(components))) as axes:
        for l, parts in enumerate(components):
            ax = axes[l][0]
            for name, values in parts.items():
                ax.hist(
                    values.flatten().double().cpu().numpy(),
                    bins=80,
                    alpha=0.5,
                    density=True,
                    label=name,
                )
            ax.set(
                xlabel="field",
                ylabel="density",
                title=f"Hidden module {l + 1}: field components after the free phase",
            )
            ax.legend()
