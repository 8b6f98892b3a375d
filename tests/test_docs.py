"""The model's documentation and the citation metadata.

docs/model.md is where every pointer in the sources, configs, README and docs leads: each
``docs/model.md#<section>`` must name one of its headings, and every config key must be
described there. No reference to the project's internal contract document (a file users
do not have) may come back, neither in the tree nor in the built wheel. CITATION.cff must
be valid YAML with the keys of CFF 1.2.0 and cite the paper.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import typing
import unicodedata
import zipfile
from pathlib import Path

import pytest
import yaml

from darnn.runconfig import RunConfig

ROOT = Path(__file__).resolve().parents[1]
MODEL_DOC = ROOT / "docs" / "model.md"
# The word is built from parts so that this file does not trip its own check.
WORD = "SP" + "EC"
WORD_RE = re.compile(rf"\b{WORD}\b")
# Where a reader or a user of the wheel could meet a reference.
PLACES = (
    "src",
    "configs",
    "docs",
    "tests",
    "scripts",
    "benchmarks",
    "README.md",
    "pyproject.toml",
    "CITATION.cff",
)
TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".yaml",
    ".yml",
    ".toml",
    ".cff",
    ".txt",
    ".sh",
    ".cfg",
    ".ini",
    ".json",
    ".rst",
}
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
MODEL_LINK = re.compile(r"docs/model\.md#([\w-]+)")


def _text_files() -> list[Path]:
    files = []
    for place in PLACES:
        path = ROOT / place
        if path.is_file():
            files.append(path)
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            # Build artefacts (an egg-info's copy of an old README) are not the project's text.
            dirnames[:] = [
                d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")
            ]
            files.extend(Path(dirpath) / f for f in filenames if Path(f).suffix in TEXT_SUFFIXES)
    return files


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading.

    Lower case, punctuation dropped (letters, digits, '_', '-' and spaces kept), spaces
    turned into hyphens.
    """
    text = heading.strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in ("L", "N"))
    return kept.replace(" ", "-")


def model_anchors() -> set[str]:
    """The anchors of docs/model.md's headings (repeated slugs get -1, -2, ... as on GitHub)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in MODEL_DOC.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_slug_rule() -> None:
    assert github_slug("The local rule") == "the-local-rule"
    assert github_slug("Input, readout and label feedback") == "input-readout-and-label-feedback"
    assert github_slug("Recipe A") == "recipe-a"


def test_no_reference_to_the_internal_contract_document() -> None:
    hits = []
    for path in _text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if WORD_RE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, (
        "references to a document users do not have; point to a section of "
        "docs/model.md (docs/model.md#<section>) or of the paper instead:\n" + "\n".join(hits)
    )


def test_every_model_anchor_exists() -> None:
    anchors = model_anchors()
    missing = []
    for path in _text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        links = MODEL_LINK.findall(text)
        if path.parent == MODEL_DOC.parent and path.suffix == ".md":
            # Relative links between the docs pages, and docs/model.md's own (#anchor) links.
            links += re.findall(r"\]\((?:\./)?model\.md#([^)\s]+)\)", text)
            if path == MODEL_DOC:
                links += re.findall(r"\]\(#([^)\s]+)\)", text)
        missing += [f"{path.relative_to(ROOT)}: #{a}" for a in links if a not in anchors]
    assert not missing, "anchors not among docs/model.md's headings:\n" + "\n".join(missing)


def test_every_config_key_is_described_in_the_model_doc() -> None:
    text = MODEL_DOC.read_text(encoding="utf-8")
    sections = typing.get_type_hints(RunConfig)
    missing = [
        f"{section}.{field.name}"
        for section, cls in sections.items()
        for field in dataclasses.fields(cls)
        if f"`{field.name}`" not in text
    ]
    assert not missing, "config keys docs/model.md does not describe: " + ", ".join(missing)


def _setuptools_available() -> bool:
    return importlib.util.find_spec("setuptools") is not None


@pytest.mark.skipif(not _setuptools_available(), reason="building a wheel needs setuptools")
def test_wheel_has_no_reference_to_the_internal_contract_document(tmp_path: Path) -> None:
    # Build from a copy, so the working tree gets no build/ or egg-info of this test.
    source = tmp_path / "source"
    source.mkdir()
    for path in ROOT.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, source / path.name)
    for folder in ("src", "configs"):  # setup.py maps configs/ into the package
        shutil.copytree(
            ROOT / folder,
            source / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
        )
    out = tmp_path / "dist"
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=180,
        env=env,
    )
    (wheel,) = out.glob("darnn-*.whl")
    pattern = re.compile(rb"\b" + WORD.encode() + rb"\b")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "darnn/__init__.py" in names
        hits = [name for name in names if pattern.search(archive.read(name))]
    assert not hits, f"files of {wheel.name} that name the internal document: {hits}"


def _pyproject_version() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert match, "pyproject.toml has no version"
    return match.group(1)


def test_citation_cff() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    for key in ("cff-version", "message", "title", "authors", "type", "version", "license"):
        assert cff.get(key), f"CITATION.cff lacks {key}"
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software"
    assert cff["license"] == "MIT"
    assert str(cff["version"]) == _pyproject_version()
    assert all(
        isinstance(a, dict) and (a.get("name") or a.get("family-names")) for a in cff["authors"]
    )
    paper = cff["preferred-citation"]
    for key in ("type", "title", "authors"):
        assert paper.get(key), f"preferred-citation lacks {key}"
    assert [a["family-names"] for a in paper["authors"]] == [
        "Badalotti",
        "Baldassi",
        "Mézard",
        "Scardecchia",
        "Zecchina",
    ]
    assert "2509.05041" in yaml.safe_dump(paper)
    for ref in cff.get("references", []):  # CFF requires these of every reference
        assert ref.get("type") and ref.get("title") and ref.get("authors"), ref


def test_readme_tells_how_to_cite() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## How to cite" in readme
    assert "2509.05041" in readme and "@misc{" in readme
    assert "github.com/Willinki/darnax" in readme
    assert "github.com/mattia-scardecchia/Biological-Learning" in readme
