"""MkDocs hook: render the jupytext percent scripts of docs/tutorials/ as pages.

Each ``docs/tutorials/NAME.py`` becomes the page ``tutorials/NAME.md``: a ``# %% [markdown]``
cell becomes markdown (the leading ``# `` of its lines removed), any other ``# %%`` cell a
fenced Python block. The script itself is still copied to the site, and each page links to
it. Nothing is executed here (the test suite runs every tutorial: tests/test_tutorials.py),
so the site builds offline in seconds; no Jupyter is needed. A figure a tutorial draws is
shown from a copy committed in docs/figures/ (tutorialNN_*.png, written by running the
script), linked from the markdown cell after the code that draws it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

CELL = re.compile(r"^# %%(.*)$")


def script_to_markdown(text: str, name: str) -> str:
    """Markdown for the percent-format script ``text`` (file name ``name``)."""
    cells: list[tuple[str, list[str]]] = []
    kind, lines = "code", []
    for line in text.splitlines():
        match = CELL.match(line)
        if match:
            cells.append((kind, lines))
            kind = "markdown" if "[markdown]" in match.group(1) else "code"
            lines = []
        else:
            lines.append(line)
    cells.append((kind, lines))
    parts = []
    for kind, lines in cells:
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            continue
        if kind == "markdown":
            parts.append("\n".join(re.sub(r"^# ?", "", line) for line in lines))
        elif not all(line.startswith("#") for line in lines) or parts:
            parts.append("```python\n" + "\n".join(lines) + "\n```")
    parts.append(
        f"*This page is the script [`{name}`]({name}), rendered; run it with "
        f"`python {name}` (the test suite runs it on every commit).*"
    )
    return "\n\n".join(parts) + "\n"


def on_files(files: Files, config: Any) -> Files:
    """Add a generated page for every tutorial script."""
    folder = Path(config["docs_dir"]) / "tutorials"
    for script in sorted(folder.glob("*.py")):
        markdown = script_to_markdown(script.read_text(encoding="utf-8"), script.name)
        files.append(File.generated(config, f"tutorials/{script.stem}.md", content=markdown))
    return files
