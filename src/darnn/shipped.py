"""The YAML files darnn ships: recipes, bench files and sweep spaces, found by name or path.

The checkout's ``configs/`` folder is their only source. A built wheel carries it as the
package data ``darnn/configs`` (pyproject.toml/setup.py map ``configs/`` into the package);
an editable install or a bare checkout reads ``configs/`` beside ``src/`` directly.

A *name* is a file's path under its folder without ``.yaml``: ``recipe_a_sparse_mnist`` and
``authors/lambda_advantage`` are recipes (``configs/``), ``digits`` a bench file
(``configs/bench/``), ``digits_quick`` a search space (``configs/spaces/``). Wherever a
command takes one, an existing file path wins, then the same name under ``./configs`` of the
current directory (your own edited copies), then what ships; ``configs/spaces/NAME.yaml``
as the README writes it also finds the shipped ``NAME`` outside a checkout.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

# kind -> folder under configs/ (recipes are the top level and its sub-folders, except the
# folders of the other kinds)
FOLDERS = {"recipe": "", "bench": "bench", "space": "spaces"}
WHAT = {"recipe": "recipe", "bench": "bench dataset", "space": "search space"}
_DESCRIPTION_CHARS = 110
_SENTENCE_END = re.compile(r"(?<!\bi\.e)(?<!\be\.g)\. ")


def configs_root() -> Path | None:
    """The shipped ``configs`` folder; None if there is none.

    The package data of an installed wheel, else the checkout's ``configs/`` (editable
    install, PYTHONPATH=src).
    """
    try:
        packaged = importlib.resources.files("darnn") / "configs"
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - darnn is a package
        packaged = None
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "configs"
    return checkout if checkout.is_dir() else None


def folder(kind: str, root: Path | None) -> Path | None:
    """The folder of ``kind`` (recipe, bench, space) under a configs folder ``root``."""
    return None if root is None else root / FOLDERS[kind] if FOLDERS[kind] else root


def names(kind: str, root: Path | None = None) -> list[str]:
    """Every name of ``kind`` under ``root`` (default: what ships), sorted."""
    base = folder(kind, configs_root() if root is None else root)
    if base is None or not base.is_dir():
        return []
    if kind != "recipe":
        return sorted(p.stem for p in base.glob("*.yaml"))
    others = {f for k, f in FOLDERS.items() if f}
    found = [p.stem for p in base.glob("*.yaml")]
    for sub in sorted(d for d in base.iterdir() if d.is_dir() and d.name not in others):
        found += [f"{sub.name}/{p.stem}" for p in sub.glob("*.yaml")]
    return sorted(found)


def _candidate(base: Path | None, name: str) -> Path | None:
    if base is None:
        return None
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    parts = stem.split("/")
    if not stem or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None  # a name never climbs out of its folder
    path = base.joinpath(*parts[:-1], parts[-1] + ".yaml")
    return path if path.is_file() else None


def find(kind: str, name: str | os.PathLike[str]) -> Path:
    """The file ``name`` stands for: an existing path, ./configs/FOLDER/NAME.yaml, or shipped.

    Raises:
        ConfigError: None of them exists; the message names what is available.
    """
    text = os.fspath(name)
    if text and Path(text).is_file():
        return Path(text)
    local = folder(kind, Path.cwd() / "configs")
    # configs/spaces/x.yaml, as the README and the file headers write it, means the shipped x
    prefix = "/".join(p for p in ("configs", FOLDERS[kind]) if p) + "/"
    stem = text[len(prefix) :] if text.startswith(prefix) else text
    for base in (local, folder(kind, configs_root())):
        path = _candidate(base, stem)
        if path is not None:
            return path
    available = names(kind)
    what = WHAT[kind]
    raise ConfigError(
        f"unknown {what} {text!r:.80}: it is not a file, nor a name shipped with darnn"
        f"{' or under ./configs' if local is not None and local.is_dir() else ''}. "
        f"Shipped {what}s: {', '.join(available) if available else 'none'} "
        "(`darnn recipes` lists them with what each is)."
    )


def description(path: Path) -> str:
    """The first sentence of the file's header comment, on one line."""
    words: list[str] = []
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("#"):
                    break
                text = line.lstrip("#").strip()
                if not text:
                    if words:
                        break
                    continue
                words.append(text)
                if text.endswith((".", ":")):
                    break
    except OSError:
        return ""
    joined = " ".join(words)
    end = _SENTENCE_END.search(joined)
    if end is not None:
        joined = joined[: end.start() + 1]
    joined = joined.rstrip(":")
    if len(joined) > _DESCRIPTION_CHARS:
        joined = joined[: _DESCRIPTION_CHARS - 1].rstrip() + "…"
    return joined


@dataclass(frozen=True)
class Entry:
    """One shipped file: its kind, name, path and the first sentence of its header."""

    kind: str
    name: str
    path: Path
    description: str


def catalogue() -> list[Entry]:
    """Everything that ships, by kind then name."""
    root = configs_root()
    entries = []
    for kind in FOLDERS:
        for name in names(kind, root):
            path = find_shipped(kind, name, root)
            entries.append(Entry(kind, name, path, description(path)))
    return entries


def find_shipped(kind: str, name: str, root: Path | None = None) -> Path:
    """The shipped file ``name`` of ``kind`` (never a local one); ConfigError if none."""
    path = _candidate(folder(kind, configs_root() if root is None else root), name)
    if path is None:
        raise ConfigError(f"darnn ships no {WHAT[kind]} named {name!r:.80}")
    return path
