"""Model and checkpoint files: the saved network and the exact position of a run.

The model is ``model.safetensors`` (weights) + ``model.json`` (how to rebuild it, SHA-256);
a checkpoint is one safetensors file holding weights, random streams and the JSON state of
the run. Both are written atomically (darnn.files) and every field read back is checked
before it is used, so a damaged or foreign file gives a RunError that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from .checks import short_repr
from .config import NetworkConfig, from_dict, to_dict
from .couplings import DenseCoupling, IdentityCoupling, SparseCoupling, check_csr_indices
from .data import MAX_CLASSES, sha256_file
from .devices import DTYPES
from .errors import RunError
from .files import atomic_write, write_json
from .network import Network

MODEL_FORMAT = "darnn-model"
CHECKPOINT_FORMAT = "darnn-checkpoint"
FORMAT_VERSION = 1
# Largest input dimension a model file may declare (2^24: 4096 x 4096 images); anything
# larger in a model.json is taken for corruption rather than allocated.
MAX_FEATURES = 1 << 24
# Seeds torch.Generator.manual_seed accepts.
_SEED_RANGE = (-(2**63), 2**64 - 1)


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
    except (OSError, ValueError, RecursionError) as exc:
        # ValueError: bad JSON, bad UTF-8, an integer past Python's digit limit;
        # RecursionError: brackets nested past the parser's depth
        detail = "nested too deeply" if isinstance(exc, RecursionError) else short(exc)
        raise RunError(f"Model description {manifest} is not readable JSON ({detail}).") from None
    if not isinstance(info, dict) or info.get("format") != MODEL_FORMAT:
        raise RunError(f"{manifest} is not a darnn model description (no format: {MODEL_FORMAT}).")
    if info.get("version") != FORMAT_VERSION:
        raise RunError(
            f"{manifest} has model format version {info.get('version')!r}; this "
            f"darnn reads version {FORMAT_VERSION}."
        )
    return info


def _model_fields(info: dict[str, Any], manifest: Path) -> tuple[NetworkConfig, int, int, int]:
    """(config, n_features, n_classes, seed) of a model.json, each checked before use.

    Sizes are bounded before anything is allocated: a corrupt or hand-edited file must give
    an error naming the field, not a 400 GB allocation.
    """

    def bad(field: str, value: Any, rule: str) -> RunError:
        return RunError(
            f"Model description {manifest}: field {field} = {short_repr(value)} is not valid; it "
            f"must be {rule}. The file is corrupt or was edited; use the model.json written "
            "with the weights."
        )

    for field in ("network", "n_features", "n_classes", "seed", "dtype", "sha256"):
        if field not in info:
            raise RunError(f"Model description {manifest} has no field {field}; it is incomplete.")
    n_features, n_classes, seed = info["n_features"], info["n_classes"], info["seed"]

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not integer(n_features) or not 1 <= n_features <= MAX_FEATURES:
        raise bad("n_features", n_features, f"an integer in [1, {MAX_FEATURES}]")
    if not integer(n_classes) or not 2 <= n_classes <= MAX_CLASSES:
        raise bad("n_classes", n_classes, f"an integer in [2, {MAX_CLASSES}]")
    if not integer(seed) or not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]:
        raise bad("seed", seed, "an integer seed (-2^63 <= seed < 2^64)")
    if info["dtype"] not in DTYPES:
        raise bad("dtype", info["dtype"], f"one of {', '.join(DTYPES)}")
    sha = info["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise bad("sha256", sha, "64 lowercase hexadecimal digits")
    if not isinstance(info["network"], dict):
        raise bad("network", info["network"], "a mapping of network settings")
    try:
        config = from_dict(NetworkConfig, info["network"], section="network")
    except (TypeError, ValueError) as exc:
        raise RunError(f"Model description {manifest}: {exc}") from exc
    return config, n_features, n_classes, seed


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Network:
    """Rebuild the Network described by ``model.json`` and load ``model.safetensors``.

    Every field of the description is checked (sizes bounded) before anything is allocated;
    then the file's SHA-256, its header, and every tensor name, dtype, shape and sparse
    index. Any problem is a RunError naming the file.
    """
    stem = Path(path).with_suffix("")
    weights, manifest = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    info = read_model_info(stem)
    config, n_features, n_classes, seed = _model_fields(info, manifest)
    dtype = DTYPES[info["dtype"]]
    if not weights.is_file():
        raise RunError(f"Model weights {weights} are missing (described by {manifest}).")
    if sha256_file(weights) != info["sha256"]:
        raise RunError(
            f"Model weights {weights} do not match the SHA-256 recorded in "
            f"{manifest}: the file is corrupt or was modified after training."
        )
    tensors, _ = _read_safetensors(weights, "Model weights")
    try:
        net = Network(config, n_features, n_classes, seed=seed, dtype=dtype)
    except ValueError as exc:  # NetworkTooLargeError: the sizes in the description
        raise RunError(f"Model description {manifest}: {exc}") from exc
    check_tensors(net, tensors, weights)
    net.load_state_dict(tensors)
    return net.to(device)


def check_tensors(net: Network, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Check that ``tensors`` (from ``path``) can be loaded into ``net``; a RunError if not.

    Names, dtypes and shapes must be those of ``net.state_dict()``; weights must be finite
    and masks 0/1. Every CSR index tensor is validated (``check_csr_indices``) before a
    sparse matrix is ever built from it; a sparse coupling whose support differs from the
    one ``net`` drew (a different number of non-zeros, e.g. a model saved by a darnn that
    sampled supports differently) is resized to the file's support, which is then loaded.
    """
    expected = net.state_dict()
    names, found = set(expected), set(tensors)
    if names != found:
        diff = sorted(names ^ found)
        raise RunError(
            f"{path} does not hold the tensors of the described network (names present in "
            f"only one of the two: {diff[:6]}{' ...' if len(diff) > 6 else ''})."
        )
    for name, module in net.named_modules():
        if isinstance(module, SparseCoupling):
            _adopt_support(module, name, tensors, path)
    expected = net.state_dict()
    for name, want in expected.items():
        got = tensors[name]
        # Sparse indices may be int32 or int64 (validated above; the copy converts exactly).
        index = name.endswith((".crow", ".col")) and not got.is_floating_point()
        if (got.dtype != want.dtype and not index) or got.shape != want.shape:
            raise RunError(
                f"{path}: tensor {name} has dtype {got.dtype} and shape {tuple(got.shape)}; "
                f"the described network needs {want.dtype} and {tuple(want.shape)}."
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise RunError(f"{path}: tensor {name} holds NaN or infinite values.")
        if name.endswith(".mask") and not bool(((got == 0) | (got == 1)).all()):
            raise RunError(f"{path}: mask {name} holds values other than 0 and 1.")


def _adopt_support(
    module: SparseCoupling, name: str, tensors: dict[str, torch.Tensor], path: Path
) -> None:
    """Validate the CSR arrays stored for ``module``; resize it to their support."""
    crow, col, values = (tensors[f"{name}.{leaf}"] for leaf in ("crow", "col", "values"))
    if values.ndim != 1:
        raise RunError(f"{path}: tensor {name}.values must be 1-D, got {tuple(values.shape)}.")
    problem = check_csr_indices(crow, col, (module.n_out, module.n_in), nnz=len(values))
    if problem is not None:
        raise RunError(
            f"{path}: the sparse matrix {name} has invalid indices ({problem}); the file is "
            "corrupt or was edited by hand, so it was not loaded."
        )
    if len(col) != len(module.col):
        # The file's support: buffers and parameter of its length, which load_state_dict
        # then fills (indices stored as SparseCoupling stores them: int32 below 2^31).
        index = torch.int32 if len(col) < 2**31 else torch.int64
        module.crow = module.crow.new_empty(len(crow), dtype=index)
        module.col = module.col.new_empty(len(col), dtype=index)
        module.values = torch.nn.Parameter(
            module.values.new_empty(len(values)), requires_grad=False
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
    try:
        return json.loads(metadata["state"]), tensors
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else short(exc)
        raise RunError(f"Checkpoint {path} holds an unreadable state ({detail}).") from None


def short(exc: BaseException, limit: int = 200) -> str:
    """An exception's message, cut to ``limit`` characters (it may echo a huge input)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
