"""The bench's frozen-representation variants learn only the readout."""

import pytest
import torch

from darnn.bench.methods import VARIANT_OVERRIDES
from darnn.data import load_data
from darnn.epoch import fit_epoch, seeded_generators
from darnn.network import Network
from darnn.runconfig import load_run_config


@pytest.mark.parametrize("variant", ["reservoir", "random_features"])
def test_frozen_variants_learn_only_the_readout(variant: str) -> None:
    config = load_run_config(
        None,
        [
            "data.name=digits",
            "data.limit_train=200",
            "network.hidden=[64]",
            "network.j_density=1.0",
            "network.w_in_density=1.0",
            *VARIANT_OVERRIDES[variant],
        ],
    )
    data = load_data(config.data)
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    net = Network(config.network, data.n_features, data.n_classes, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    order, dynamics = seeded_generators(0)
    perm = torch.randperm(len(y), generator=order)
    fit_epoch(net, X, y, config.learning, 16, perm, generator=dynamics)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]) == (not key.startswith("w_out")), key
