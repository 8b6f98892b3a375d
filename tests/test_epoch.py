"""The shared epoch loop: `darnn train` and `DARNClassifier` are one training procedure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from darnn import DARNClassifier
from darnn.config import to_dict
from darnn.data import load_data
from darnn.epoch import EpochCounters, fit_epoch, seeded_generators
from darnn.modelfiles import load_model
from darnn.network import Network
from darnn.runconfig import load_run_config
from darnn.training import train


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["network.j_density=0.2", "network.sparse_format=csr", "learning.schedule=sequential"],
    ],
)
def test_cli_and_estimator_give_identical_weights(tmp_path: Path, extra: list[str]) -> None:
    config = load_run_config(
        None,
        [
            "data.name=digits",
            "network.hidden=[40]",
            "network.j_density=1.0",
            "network.w_in_density=1.0",
            "train.epochs=2",
            "train.batch_size=24",
            "train.seed=11",
            "train.probe_size=16",
            *extra,
        ],
    )
    train(config, tmp_path / "run", progress=False)
    data = load_data(config.data)
    clf = DARNClassifier(
        **to_dict(config.network),
        **to_dict(config.learning),
        n_epochs=config.train.epochs,
        batch_size=config.train.batch_size,
        random_state=config.train.seed,
    ).fit(data.X_train, data.y_train)
    saved = load_model(tmp_path / "run" / "model").state_dict()
    fitted = clf.network_.state_dict()
    assert saved.keys() == fitted.keys()
    for name in saved:
        assert torch.equal(saved[name], fitted[name]), name


def test_fit_epoch_stops_and_continues_where_asked() -> None:
    """Stopping after batch k and continuing from k equals one uninterrupted epoch."""
    from darnn.config import LearningConfig, NetworkConfig

    gen = torch.Generator().manual_seed(0)
    X, y = torch.rand(50, 12, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    cfg = LearningConfig()
    nets = [Network(NetworkConfig(hidden=(16,)), 12, 3, seed=1) for _ in range(2)]
    order = torch.randperm(50, generator=gen)
    whole, done = fit_epoch(nets[0], X, y, cfg, 8, order, generator=seeded_generators(2)[1])
    assert done == 7 and whole.seen == 50
    dyn = seeded_generators(2)[1]
    part, done = fit_epoch(
        nets[1], X, y, cfg, 8, order, generator=dyn, after_batch=lambda b, c: b == 3
    )
    assert done == 3 and part.seen == 24
    rest, done = fit_epoch(
        nets[1], X, y, cfg, 8, order, generator=dyn, start_batch=3, counters=part
    )
    assert done == 7 and rest.seen == 50
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)
    assert rest.fraction("correct") == whole.fraction("correct")


def test_counters_round_trip() -> None:
    c = EpochCounters(seen=3, correct=2.0, train_time=1.5)
    assert EpochCounters(**c.to_state()).to_state() == c.to_state()
    assert np.isclose(c.fraction("correct"), 2 / 3)


def test_one_default_story() -> None:
    """The estimator's defaults are the default recipe.

    That is what `darnn train` runs without a config and what configs/default.yaml holds.
    """
    from darnn.config import LearningConfig, NetworkConfig
    from darnn.estimator import LEARNING_PARAMS, NETWORK_PARAMS

    TRAIN_PARAMS = {"n_epochs", "batch_size", "random_state", "device", "n_threads", "dtype"}
    from darnn.runconfig import DEFAULT_RECIPE, RunConfig, load_run_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    assert load_run_config(configs / "default.yaml") == load_run_config(None) == RunConfig()
    assert RunConfig() == DEFAULT_RECIPE
    clf = DARNClassifier()
    assert clf.network_config() == DEFAULT_RECIPE.network
    assert clf.learning_config() == DEFAULT_RECIPE.learning
    assert clf.train_config() == DEFAULT_RECIPE.train
    # every config field is a hyperparameter, with the default recipe's value
    assert set(NETWORK_PARAMS) == {f.name for f in dataclasses.fields(NetworkConfig)}
    assert set(LEARNING_PARAMS) == {f.name for f in dataclasses.fields(LearningConfig)}
    params = clf.get_params()
    assert set(params) == {*NETWORK_PARAMS, *LEARNING_PARAMS, *TRAIN_PARAMS}
    for name in NETWORK_PARAMS + LEARNING_PARAMS:
        section = DEFAULT_RECIPE.network if name in NETWORK_PARAMS else DEFAULT_RECIPE.learning
        assert params[name] == getattr(section, name), name
