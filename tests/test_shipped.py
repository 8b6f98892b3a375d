"""Shipped recipes, bench files and spaces.

Found by name, a path or ./configs wins, listed by `darnn recipes` with their header's
first sentence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from darnn import shipped
from darnn.cli import main
from darnn.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_names_cover_every_file_of_configs() -> None:
    recipes = shipped.names("recipe")
    assert "recipe_a_sparse_mnist" in recipes and "default" in recipes
    assert "authors/lambda_advantage" in recipes  # sub-folders: FOLDER/NAME
    assert not any(n.startswith(("bench/", "spaces/")) for n in recipes)
    assert "digits" in shipped.names("bench")
    assert "digits_quick" in shipped.names("space")
    on_disk = {p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml")}
    listed = {e.path.relative_to(shipped.configs_root()) for e in shipped.catalogue()}
    assert listed == on_disk


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("recipe", "recipe_a_sparse_mnist", "recipe_a_sparse_mnist.yaml"),
        ("recipe", "recipe_a_sparse_mnist.yaml", "recipe_a_sparse_mnist.yaml"),
        ("recipe", "authors/lambda_advantage", "authors/lambda_advantage.yaml"),
        ("recipe", "configs/default.yaml", "default.yaml"),
        ("bench", "digits", "bench/digits.yaml"),
        ("bench", "configs/bench/digits.yaml", "bench/digits.yaml"),
        ("space", "digits_quick", "spaces/digits_quick.yaml"),
        ("space", "configs/spaces/digits_quick.yaml", "spaces/digits_quick.yaml"),
    ],
)
def test_shipped_names(
    kind: str, name: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./configs here
    assert shipped.find(kind, name) == shipped.configs_root() / expected


def test_a_path_then_local_configs_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "configs" / "spaces" / "digits_quick.yaml"
    own.parent.mkdir(parents=True)
    own.write_text("# mine\n")
    assert shipped.find("space", "digits_quick").resolve() == own
    mine = tmp_path / "elsewhere.yaml"
    mine.write_text("# a file\n")
    assert shipped.find("recipe", "elsewhere.yaml") == Path("elsewhere.yaml")
    assert shipped.find("recipe", str(mine)) == mine


@pytest.mark.parametrize("name", ["nope", "../default", "authors/../default", "", ".hidden"])
def test_unknown_names_list_what_ships(name: str) -> None:
    with pytest.raises(ConfigError, match="recipe_a_sparse_mnist") as info:
        shipped.find("recipe", name)
    assert "darnn recipes" in str(info.value)


def test_description_is_the_first_sentence(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("# Narrow recipe: (configs/a.yaml, i.e. recipe A\n# with more). Next.\n#\n")
    assert shipped.description(path) == "Narrow recipe: (configs/a.yaml, i.e. recipe A with more)."
    path.write_text("data: {}\n")
    assert shipped.description(path) == ""


def test_darnn_recipes_lists_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for entry in shipped.catalogue():
        assert entry.name in out
    assert "Recipe A -- the authors' JAX library" in out
    assert "darnn bench --dataset NAME" in out and "darnn sweep --space NAME" in out


def test_unknown_names_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "no_such_recipe"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("darnn: error: unknown recipe 'no_such_recipe'")
    assert main(["bench", "--dataset", "no_such_bench"]) == 2
    assert "digits" in capsys.readouterr().err


def test_own_bench_file_anywhere_uses_shipped_recipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from darnn.bench.methods import load_plan

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "elsewhere" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_bytes((shipped.configs_root() / "bench" / "digits.yaml").read_bytes())
    plan = load_plan(str(mine), quick=True)
    assert plan.bench_file == mine
    assert any(m.config is not None for m in plan.methods)


def test_sweep_space_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("optuna")
    assert main(["sweep", "--space", "no_such_space", "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown search space 'no_such_space'" in err and "digits_quick" in err
