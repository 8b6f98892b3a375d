"""The documentation site builds with ``mkdocs build --strict``.

Strict mode turns every warning into an error: a page link or anchor that does not resolve,
a page missing from the nav, an API reference to a name that does not exist, a docstring
mkdocstrings cannot parse. The docs extra (mkdocs, mkdocs-material, mkdocstrings) is
installed by scripts/setup.sh; without it the build is skipped, saying so. The tutorials are
rendered here, not run (tests/test_tutorials.py runs them).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_EXTRA = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing() -> list[str]:
    missing = []
    for name in DOCS_EXTRA:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


@pytest.mark.skipif(
    bool(_missing()),
    reason=f"the docs extra is not installed (pip install -e '.[docs]'): missing {_missing()}",
)
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    site = tmp_path / "site"
    for page in ("index.html", "model/index.html", "api/darnn/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "darnn" / "index.html").read_text(encoding="utf-8")
    import darnn

    for name in darnn.__all__:
        if name not in ("DARNClassifier", "__version__"):
            assert f'id="darnn.{name}"' in api, f"darnn.{name} is missing from the API reference"
    for n in range(1, 6):
        assert list((site / "tutorials").glob(f"0{n}_*/index.html")), f"tutorial {n} not rendered"
