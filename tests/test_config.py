import numpy as np
import pytest
import yaml

from darnn.checks import short_repr
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


def test_shown_caps_long_values() -> None:
    assert short_repr([1, (2,), {"a": 3}]) == repr([1, (2,), {"a": 3}])
    long = list(range(100_000))
    text = short_repr(long)
    assert text == f"{repr(long)[:200]}... ({len(repr(long))} chars)"
    loop: list = []
    loop.append(loop)
    assert short_repr(loop) == "[[...]]"


def alias_bomb() -> object:
    # 9^8 = 43 million leaves from a 1 kB document: repr() would need ~200 MB.
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    return yaml.safe_load("\n".join(lines))["i"]


def test_error_messages_do_not_echo_megabytes() -> None:
    bomb = alias_bomb()
    with pytest.raises(TypeError) as info:
        from_dict(NetworkConfig, {"hidden": bomb}, section="network")
    assert "'network.hidden'" in str(info.value) and "(over 1000000 chars)" in str(info.value)
    assert len(str(info.value)) < 500
    with pytest.raises(ValueError) as info:
        NetworkConfig(hidden=bomb)  # type: ignore[arg-type]
    assert len(str(info.value)) < 500
    for kwargs in ({"j_d": bomb}, {"inter": bomb}, {"inter_fan_in": bomb}):
        with pytest.raises(ValueError) as info:
            NetworkConfig(**kwargs)  # type: ignore[arg-type]
        assert len(str(info.value)) < 500
    with pytest.raises(ValueError) as info:
        LearningConfig(decay_j="x" * 10**6)  # type: ignore[arg-type]
    assert len(str(info.value)) < 500
    with pytest.raises(ValueError, match="unknown config key") as info:
        from_dict(LearningConfig, {"k" * 10**5: 1})
    assert len(str(info.value)) < 700


def test_numpy_numbers_are_accepted_as_plain_python() -> None:
    cfg = NetworkConfig(hidden=(np.int64(16), np.int32(8)), inter="sparse",
                        inter_fan_in=np.int64(2), j_d=np.float64(0.5))  # fmt: skip
    assert cfg.hidden == (16, 8) and all(type(n) is int for n in cfg.hidden)
    assert type(cfg.inter_fan_in) is int and type(cfg.j_d) is float
    assert cfg == NetworkConfig(hidden=(16, 8), inter="sparse", inter_fan_in=2, j_d=0.5)
    lc = LearningConfig(free_sweeps=np.int64(3), lr_j=np.float32(0.25))
    assert type(lc.free_sweeps) is int and lc.lr_j == 0.25 and type(lc.lr_j) is float
    yaml.safe_dump(to_dict(cfg))  # plain data: serialises
    with pytest.raises(ValueError, match="hidden"):
        NetworkConfig(hidden=(np.float64(16),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden"):
        NetworkConfig(hidden=(2**31,))


def test_keywords_for_passes_matching_names_and_given_values() -> None:
    from darnn.config import keywords_for

    def target(a: int, b: int = 0, *, c: int = 0) -> None:
        del a, b, c

    assert keywords_for(target, {"a": 1, "c": 3, "other": 9}) == {"a": 1, "c": 3}
    assert keywords_for(target, {"a": 1, "b": 2}, b=5) == {"a": 1, "b": 5}  # given wins
