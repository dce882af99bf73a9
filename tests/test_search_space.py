from __future__ import annotations

from typing import Any

import optuna
import pytest

from hypersweep.search_space import Choice, parse_search_space

SPACE = {
    "lr": {"type": "loguniform", "low": 1e-4, "high": 1.0},
    "optimizer": {"type": "choice", "values": ["sgd", "momentum", "adam", "adamw"]},
    "momentum": {"type": "uniform", "low": 0.5, "high": 0.99, "when": {"optimizer": "momentum"}},
    "beta1": {
        "type": "uniform",
        "low": 0.8,
        "high": 0.95,
        "when": {"optimizer": ["adam", "adamw"]},
    },
    "layers": {"type": "int", "low": 1, "high": 4},
    "hidden": {"type": "choice", "values": [[32], [64, 32]]},
    "activation": "relu",
}


def _sample(n: int, seed: int = 0) -> list[dict[str, Any]]:
    space = parse_search_space(SPACE, "space.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        extra = space.define_by_run(trial)
        configs.append({**trial.params, **extra})
        study.tell(trial, 0.0)
    return configs


def test_conditional_parameters_appear_only_with_their_optimizer() -> None:
    configs = _sample(60)
    for config in configs:
        assert ("momentum" in config) == (config["optimizer"] == "momentum")
        assert ("beta1" in config) == (config["optimizer"] in ("adam", "adamw"))
    assert {c["optimizer"] for c in configs} == {"sgd", "momentum", "adam", "adamw"}


def test_corners_hold_every_choice_and_both_ends_of_every_range() -> None:
    corners = parse_search_space(SPACE, "space.yaml").corners()
    assert len(corners) == 4  # the widest choice has 4 values
    assert [c["optimizer"] for c in corners] == ["sgd", "momentum", "adam", "adamw"]
    assert {c["lr"] for c in corners} == {1e-4, 1.0} and {c["layers"] for c in corners} == {1, 4}
    assert [c["hidden"] for c in corners] == [[32], [64, 32]] * 2
    for config in corners:  # conditions hold, constants pass through
        assert ("momentum" in config) == (config["optimizer"] == "momentum")
        assert ("beta1" in config) == (config["optimizer"] in ("adam", "adamw"))
        assert config["activation"] == "relu"
    assert {c.get("beta1") for c in corners} == {None, 0.8, 0.95}


def test_values_lie_in_their_ranges_and_constants_pass_through() -> None:
    for config in _sample(40):
        assert 1e-4 <= config["lr"] <= 1.0
        assert 1 <= config["layers"] <= 4 and isinstance(config["layers"], int)
        assert config["hidden"] in ([32], [64, 32])  # decoded from Optuna's label
        assert config["activation"] == "relu"


def test_log_uniform_spreads_over_decades() -> None:
    lrs = [c["lr"] for c in _sample(200)]
    assert sum(lr < 1e-2 for lr in lrs) > 60  # half the decades below 1e-2


def test_sampling_is_reproducible_given_a_seed() -> None:
    assert _sample(10, seed=1) == _sample(10, seed=1)
    assert _sample(10, seed=1) != _sample(10, seed=2)


def test_parse_keeps_order_and_types() -> None:
    space = parse_search_space(SPACE, "space.yaml")
    assert space.names == list(SPACE)
    assert isinstance(dict(space.entries)["optimizer"], Choice)
    assert space.as_dict()["momentum"]["when"] == {"optimizer": ["momentum"]}


@pytest.mark.parametrize("bad", [{}, [], "lr"])
def test_space_must_be_a_non_empty_mapping(bad) -> None:
    from hypersweep.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_search_space(bad, "space.yaml")


def test_null_takes_a_parameter_out_and_a_narrowed_choice_says_so() -> None:
    """Narrowing the optimizers to adaptive ones leaves momentum conditional on one no longer
    offered: the error says how to follow suit, and ``momentum: null`` takes it out."""
    from hypersweep.errors import ConfigError

    narrowed = {**SPACE, "optimizer": {"type": "choice", "values": ["adam", "adamw"]}}
    with pytest.raises(ConfigError, match=r"take momentum out \(--set search_space\.momentum=null\)"):
        parse_search_space(narrowed, "space.yaml")
    space = parse_search_space({**narrowed, "momentum": None}, "space.yaml")
    assert "momentum" not in space.names and "beta1" in space.names
    assert all("momentum" not in c for c in space.corners())
    with pytest.raises(ConfigError, match="every parameter is taken out"):
        parse_search_space({"lr": None}, "space.yaml")
