from __future__ import annotations

from pathlib import Path

import pytest

from hypersweep.config import load_sweep
from hypersweep.errors import ConfigError
from tests.conftest import DEFAULT_SWEEP

MINIMAL = """
name: t
experiment: tests.toy:ToyRegression
search_space:
  lr: {type: loguniform, low: 1.0e-3, high: 1.0e-1}
"""


def _error(write_sweep, text: str, *overrides: str) -> ConfigError:
    path = write_sweep(text)
    with pytest.raises(ConfigError) as info:
        load_sweep(path, overrides)
    return info.value


def test_default_sweep_loads_with_its_search_space_file() -> None:
    spec = load_sweep(DEFAULT_SWEEP)
    assert spec.name == "breast-cancer-mlp"
    assert spec.search_space.names == [
        "lr",
        "optimizer",
        "momentum",
        "beta1",
        "dropout",
        "batch_size",
    ]
    assert spec.scheduler.type == "asha" and spec.mode == "min"


def test_spec_is_frozen(write_sweep) -> None:
    spec = load_sweep(write_sweep(MINIMAL))
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on assignment
        spec.num_samples = 3  # type: ignore[misc]


def test_defaults_fill_what_the_file_leaves_out(write_sweep) -> None:
    spec = load_sweep(write_sweep(MINIMAL))
    assert (spec.metric, spec.mode, spec.max_epochs, spec.num_samples) == (
        "val_loss",
        "min",
        20,
        16,
    )
    assert spec.resources.cpus_per_trial == 1 and spec.resources.gpus_per_trial == 0
    assert spec.training.patience == 5


def test_misspelled_key_names_file_key_and_suggestion(write_sweep) -> None:
    err = _error(write_sweep, MINIMAL + "num_sample: 3\n")
    assert err.key == "num_sample"
    assert err.source.endswith("sweep.yaml")
    assert "did you mean 'num_samples'" in err.message
    assert err.line().startswith("error: ") and "\n" not in err.line()


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        (
            "scheduler: {type: ashaa}",
            "scheduler.type",
            "'ashaa' is not one of asha, hyperband, median, fifo, pbt, pb2 (did you mean 'asha'?)",
        ),
        (
            "search: {type: optna}",
            "search.type",
            "'optna' is not one of optuna, random (did you mean 'optuna'?)",
        ),
        ("mode: mx", "mode", "'mx' is not one of min, max (did you mean 'max'?)"),
        ("mode: lowest", "mode", "'lowest' is not one of min, max"),
    ],
)
def test_a_misspelled_value_of_a_closed_set_is_named_with_a_suggestion(
    write_sweep, line, key, message
) -> None:
    err = _error(write_sweep, MINIMAL + line + "\n")
    assert (err.key, err.message) == (key, message)


def test_a_misspelled_distribution_type_is_named_with_a_suggestion(write_sweep) -> None:
    err = _error(write_sweep, MINIMAL.replace("type: loguniform", "type: loguniferm"))
    assert err.key == "search_space.lr.type"
    assert (
        err.message
        == "'loguniferm' is not one of loguniform, uniform, int, choice (did you mean 'loguniform'?)"
    )


def test_misspelled_nested_key_suggests_within_its_section(write_sweep) -> None:
    err = _error(write_sweep, MINIMAL + "scheduler: {grace_periods: 2}\n")
    assert err.key == "scheduler.grace_periods"
    assert "did you mean 'grace_period'" in err.message


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("num_samples: many\n", "num_samples"),
        ("num_samples: 0\n", "num_samples"),
        ("max_epochs: 3\nscheduler: {grace_period: 5}\n", "scheduler.grace_period"),
        ("scheduler: {type: successive}\n", "scheduler.type"),
        ("search: {type: grid}\n", "search.type"),
        ("resources: {gpus_per_trial: -1}\n", "resources.gpus_per_trial"),
        ("mode: minimize\n", "mode"),
        ("mode: max\n", "mode"),  # with the default metric, val_loss
        ("fixed: {lr: 0.1}\n", "fixed.lr"),
    ],
)
def test_bad_values_name_their_key(write_sweep, extra: str, key: str) -> None:
    assert _error(write_sweep, MINIMAL + extra).key == key


@pytest.mark.parametrize(
    ("space", "key", "words"),
    [
        ("lr: {type: loguniform, low: 0.1, high: 0.01}", "search_space.lr", "below high"),
        ("lr: {type: loguniform, low: 0, high: 0.01}", "search_space.lr.low", "greater than 0"),
        (
            "lr: {type: logunifrom, low: 0.1, high: 1}",
            "search_space.lr.type",
            "did you mean 'loguniform'",
        ),
        ("bs: {type: choice, values: []}", "search_space.bs.values", "at least 1"),
        ("lr: {type: uniform, low: 0, hgh: 1}", "search_space.lr.hgh", "did you mean 'high'"),
        (
            "m: {type: uniform, low: 0, high: 1, when: {optimizr: sgd}}",
            "search_space.m.when.optimizr",
            "earlier choice",
        ),
    ],
)
def test_bad_search_space_entries_name_their_key(write_sweep, space: str, key: str, words: str) -> None:
    text = "name: t\nexperiment: tests.toy:ToyRegression\nsearch_space:\n  " + space + "\n"
    err = _error(write_sweep, text)
    assert err.key == key
    assert words in err.message


def test_condition_values_must_be_among_the_choices(write_sweep) -> None:
    text = MINIMAL + (
        "  optimizer: {type: choice, values: [sgd, adam]}\n"
        "  momentum: {type: uniform, low: 0.5, high: 0.9, when: {optimizer: [momentum]}}\n"
    )
    err = _error(write_sweep, text)
    assert err.key == "search_space.momentum.when.optimizer"


def test_search_space_file_errors_name_that_file(write_sweep, tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text("lr: {type: uniform, low: 1, high: 0}\n")
    err = _error(write_sweep, "name: t\nexperiment: tests.toy:ToyRegression\nsearch_space: space.yaml\n")
    assert err.source.endswith("space.yaml") and err.key == "lr"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: [unclosed\n", "invalid YAML"),
        ("", "non-empty mapping"),
        ("- a\n- b\n", "non-empty mapping"),
        (
            "name: t\nexperiment: tests.toy:ToyRegression\nsearch_space: nope.yaml\n",
            "file not found",
        ),
        ("name: !!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),
    ],
)
def test_malformed_files_are_config_errors(write_sweep, text: str, words: str) -> None:
    assert words in _error(write_sweep, text).message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_sweep(tmp_path / "absent.yaml")


def test_set_overrides_apply_before_validation(write_sweep) -> None:
    spec = load_sweep(
        write_sweep(MINIMAL), ["scheduler.grace_period=2", "fixed.hidden=[8, 4]", "num_samples=5"]
    )
    assert spec.scheduler.grace_period == 2
    assert spec.fixed == {"hidden": [8, 4]}
    assert spec.num_samples == 5


def test_flag_values_override_the_file(write_sweep) -> None:
    spec = load_sweep(write_sweep(MINIMAL + "num_samples: 9\n"), values={"num_samples": 4, "search.seed": 7})
    assert spec.num_samples == 4 and spec.search.seed == 7


def test_the_data_seed_is_the_search_seed_unless_training_sets_its_own(write_sweep) -> None:
    """A search benchmark varies the sampler's seed on one split and one initialisation."""
    path = write_sweep(MINIMAL)
    assert load_sweep(path, values={"search.seed": 7}).data_seed == 7
    pinned = load_sweep(path, ["training.seed=3"], values={"search.seed": 7})
    assert pinned.data_seed == 3 and pinned.search.seed == 7


def test_bad_override_syntax(write_sweep) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_sweep(write_sweep(MINIMAL), ["num_samples"])


def test_resolved_inlines_the_search_space() -> None:
    data = load_sweep(DEFAULT_SWEEP).resolved()
    assert data["search_space"]["momentum"]["when"] == {"optimizer": ["momentum"]}
    assert "source" not in data


def test_set_can_edit_a_search_space_that_lives_in_its_own_file() -> None:
    spec = load_sweep(DEFAULT_SWEEP, ["search_space.lr.high=0.1"])
    assert spec.search_space.as_dict()["lr"] == {"type": "loguniform", "low": 1e-4, "high": 0.1}


def test_a_sweep_shortened_on_the_command_line_brings_its_grace_period_within(write_sweep) -> None:
    path = write_sweep(MINIMAL + "max_epochs: 20\nscheduler: {type: asha, grace_period: 3}\n")
    notes: list[str] = []
    spec = load_sweep(path, values={"max_epochs": 2}, notes=notes)
    assert (spec.max_epochs, spec.scheduler.grace_period) == (2, 2)
    assert notes == ["scheduler.grace_period 3 -> 2: the sweep's max_epochs is 2"]
    assert load_sweep(path, ["max_epochs=2"], notes=[]).scheduler.grace_period == 2  # --set too


def test_a_contradiction_written_in_the_file_or_on_the_command_line_stays_an_error(write_sweep) -> None:
    err = _error(write_sweep, MINIMAL + "max_epochs: 2\nscheduler: {type: asha, grace_period: 3}\n")
    assert (err.key, err.message) == ("scheduler.grace_period", "3 exceeds max_epochs (2)")
    path = write_sweep(MINIMAL + "max_epochs: 20\n")
    with pytest.raises(ConfigError, match="3 exceeds max_epochs"):
        load_sweep(path, ["scheduler.grace_period=3"], values={"max_epochs": 2})


def test_a_shortened_hyperband_keeps_the_brackets_that_fit(write_sweep) -> None:
    text = (
        MINIMAL
        + "max_epochs: 27\nscheduler: {type: hyperband, grace_period: 1, reduction_factor: 3, brackets: 3}\n"
    )
    notes: list[str] = []
    spec = load_sweep(write_sweep(text), values={"max_epochs": 3}, notes=notes)
    assert spec.scheduler.brackets == len(spec.scheduler.rungs(3)) == 2
    assert notes == ["scheduler.brackets 3 -> 2: more do not fit in max_epochs 3"]
