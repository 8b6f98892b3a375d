#!/usr/bin/env bash
# Set up darnn from a fresh clone: Fashion-MNIST (where the system package manager has
# it), a virtual environment in .venv, the CPU build of PyTorch, darnn with its test tools
# (pytest, build, twine: the packaging test), the sweep extra (Optuna, SQLAlchemy, psycopg:
# `darnn sweep`), the tensorboard extra (train.tensorboard), the features extra (pyarrow:
# Parquet and Arrow feature sets, data.name=features:PATH) and the docs extra (mkdocs,
# mkdocs-material, mkdocstrings: the documentation site, `mkdocs build --strict` in the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    # Optional: without it `darnn train` explains where else the data can come from.
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; } \
        || echo "setup: could not install dataset-fashion-mnist; see 'darnn data list'" >&2
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch is pinned to the CPU wheel: an unconstrained resolve pulls a multi-GB CUDA build.
# For a GPU, install the CUDA build of torch yourself first, then `pip install -e .`.
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[dev,sweep,tensorboard,features,docs]"
echo "setup: ok ($(.venv/bin/python -c 'import darnn, torch; print("darnn", darnn.__version__, "torch", torch.__version__)'))"
