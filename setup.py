"""Packaging that pyproject.toml cannot say alone: configs/ ships inside the package.

The checkout's configs/ folder (recipes, bench files, sweep spaces) becomes darnn/configs in
the wheel, read at run time with importlib.resources (darnn.shipped). configs/ stays the one
source: nothing is copied in the tree; an editable install reads configs/ where it is.
"""

from pathlib import Path

from setuptools import find_packages, setup

CONFIGS = Path(__file__).resolve().parent / "configs"
folders = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir() and not p.name.startswith("."))
data_packages = ["darnn.configs", *(f"darnn.configs.{name}" for name in folders)]

setup(
    packages=[*find_packages("src"), *data_packages],
    package_dir={"": "src", "darnn.configs": "configs"},
    package_data={"darnn": ["py.typed", "fused.c"], **{name: ["*.yaml"] for name in data_packages}},
)
