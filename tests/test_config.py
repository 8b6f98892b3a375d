import pytest

from darnn.config import LearningConfig, NetworkConfig, from_dict, to_dict


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"hidden": (0,)}, "hidden"),
        ({"hidden": (-5, 10)}, "hidden"),
        ({"hidden": ()}, "hidden"),
        ({"j_density": 0.0}, "j_density"),
        ({"w_in_density": 1.5}, "w_in_density"),
        ({"inter": "dense"}, "identity, sparse"),
        ({"label_encoding": "onehot"}, "pm1, rescaled"),
        ({"j_strength": -1.0}, "j_strength"),
        ({"j_d": float("nan")}, "j_d"),
        ({"hidden": (4, 8), "inter": "sparse", "inter_fan_in": 5}, "inter_fan_in"),
    ],
)
def test_network_config_rejects(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        NetworkConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"schedule": "random"}, "synchronous, sequential, asynchronous"),
        ({"free_sweeps": -1}, "free_sweeps"),
        ({"lr_j": -0.1}, "lr_j"),
        ({"decay_out": 1.0}, "decay_out"),
        ({"margin_convention": "jax"}, "total, offdiag"),
        ({"kappa_out": float("inf")}, "kappa_out"),
    ],
)
def test_learning_config_rejects(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        LearningConfig(**kwargs)


def test_from_dict_round_trip_and_errors() -> None:
    cfg = from_dict(NetworkConfig, {"hidden": [30, 30], "j_d": 1, "inter": "sparse"})
    assert cfg.hidden == (30, 30) and cfg.j_d == 1
    assert from_dict(NetworkConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match=r"unknown config key 'network\.jd'"):
        from_dict(NetworkConfig, {"jd": 0.5}, section="network")
    with pytest.raises(TypeError, match=r"'learning\.free_sweeps'.*expected int"):
        from_dict(LearningConfig, {"free_sweeps": 2.5}, section="learning")
    with pytest.raises(TypeError, match="learn_inter"):
        from_dict(LearningConfig, {"learn_inter": "yes"})
