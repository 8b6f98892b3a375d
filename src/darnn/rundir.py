"""The run directory: one layout for ``darnn train``, ``darnn theory`` and ``darnn bench``.

Every run directory holds ``config.yaml`` (the resolved settings) and ``meta.json`` (seed,
versions, command line, start time), plus what the run itself writes: for ``darnn train``
``metrics.jsonl`` (one record per epoch), ``checkpoint.safetensors`` (rewritten at every
save), the model (``model.safetensors`` + ``model.json``) and two plots; the file names are
the constants below. (A sweep's folder only gathers its trials' run directories.)

A new run claims its directory atomically before doing any work:
``mkdir`` is create-exclusive, and an existing empty directory is claimed by creating
``meta.json`` with O_EXCL, so two runs started at the same moment on the same ``--out``
cannot both succeed. A run that fails before it has produced anything removes what it
created.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import RunError
from .files import write_json, write_text
from .runconfig import RunConfig, read_config_file

CONFIG_FILE, META_FILE = "config.yaml", "meta.json"
METRICS_FILE, CHECKPOINT_FILE, MODEL_STEM = "metrics.jsonl", "checkpoint.safetensors", "model"
CURVES_FILE, FIELDS_FILE = "learning_curves.png", "field_histograms.png"


def default_run_dir(kind: str, root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/YYYYmmdd-HHMMSS-KIND-PID``: unique per process (and claimed exclusively)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(kind).stem) or "run"
    return Path(root) / f"{stamp}-{name}-{os.getpid()}"


def claim(out: Path, *, resumable: bool = True) -> bool:
    """Claim ``out`` for a new run; returns True if this call created the directory.

    Refuses (RunError) a path that exists and is not an empty directory, a path that cannot
    be created (a file in the way, a read-only parent, /proc, ...) and a directory another
    run claimed first. ``resumable``: the refusal suggests ``darnn train --resume``.
    """
    resume_hint = "choose another --out" + (
        f", or continue that run with: darnn train --resume {out}" if resumable else ""
    )
    if out.exists() and not out.is_dir():
        raise RunError(f"Run directory {out} exists and is not a directory; {resume_hint}.")
    try:
        out.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    except OSError as exc:
        raise RunError(
            f"Cannot create the run directory {out} ({exc.strerror or exc}); choose an --out "
            "in a writable folder."
        ) from None
    try:  # the claim itself: whoever creates meta.json first owns the directory
        fd = os.open(out / META_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        raise RunError(
            f"Run directory {out} already exists and is not empty; {resume_hint}."
        ) from None
    except OSError as exc:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise RunError(
            f"Cannot write into the run directory {out} ({exc.strerror or exc}); choose an "
            "--out in a writable folder."
        ) from None
    os.close(fd)
    others = [p.name for p in out.iterdir() if p.name != META_FILE]
    if others:
        (out / META_FILE).unlink(missing_ok=True)
        raise RunError(
            f"Run directory {out} already exists and is not empty ({', '.join(sorted(others)[:5])}"
            f"); {resume_hint}."
        )
    return created


def discard(out: Path, created: bool) -> None:
    """Undo a new run: the folder if this run created it, else only its contents."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in out.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def remove_stray_temporaries(out: Path) -> list[str]:
    """Delete the ``.NAME.*.tmp`` files a killed process left mid-write; returns their names."""
    removed = []
    for entry in out.glob(".*.tmp"):
        if entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


def write_run_info(
    out: Path,
    config: dict[str, Any],
    *,
    seed: int | None,
    command: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``config.yaml`` (``config`` as plain data) and ``meta.json`` into ``out``."""
    import numpy as np
    import torch

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_text(out / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    write_json(
        out / META_FILE,
        {
            "seed": seed,
            "versions": {
                "darnn": importlib.metadata.version("darnn"),
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "platform": platform.platform(),
            "command": list(sys.argv if command is None else command),
            "cwd": os.getcwd(),
            "start_time": now,
            **(extra or {}),
        },
    )


def record_resume(out: Path, command: Sequence[str] | None = None) -> None:
    """Append this resumption (time, command line) to ``meta.json``."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        meta = json.loads((out / META_FILE).read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, RecursionError):  # lost or damaged: still resumable
        meta = {"note": f"{META_FILE} was unreadable when the run was resumed"}
    meta.setdefault("resumed", []).append(
        {"time": now, "command": list(sys.argv if command is None else command)}
    )
    write_json(out / META_FILE, meta)


def read_run_config(run_dir: str | os.PathLike[str]) -> RunConfig:
    """The resolved config saved in a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a darnn run directory (no {CONFIG_FILE}).")
    return RunConfig.from_dict(read_config_file(path))
