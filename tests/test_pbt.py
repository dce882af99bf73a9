"""Population-based training on the trainer's side: a trial restarted from a donor's checkpoint
with a new configuration (what Ray's PBT does on an exploit) takes over the donor's weights and
optimizer state and trains with the new values."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from hypersweep import pbt
from hypersweep.trainer import TrainerState, TrainSettings, fit, make_optimizer
from tests.test_trainer import ListReporter
from tests.toy import ToyRegression


class _FirstStepProbe(ToyRegression):
    """Records the model as the first training batch sees it: after the copy, before any step."""

    def __init__(self) -> None:
        super().__init__()
        self.first: dict[str, Any] | None = None

    def loss(self, output, target) -> torch.Tensor:
        if self.first is None:
            self.first = {
                "weights": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "dropout": [m.p for m in self.model.modules() if isinstance(m, nn.Dropout)],
            }
        return super().loss(output, target)

    def build_model(self, config, data) -> nn.Module:
        self.model = super().build_model(config, data)
        return self.model


_DONOR = {"optimizer": "adam", "lr": 0.01, "dropout": 0.1, "batch_size": 32}
_SETTINGS = TrainSettings(max_epochs=4, mutable=("lr", "dropout"))


def _donor_checkpoint() -> TrainerState:
    experiment = ToyRegression()
    reporter = ListReporter(keep_epoch=2)
    fit(experiment, experiment.load_data(seed=0), _DONOR, _SETTINGS, reporter)
    assert reporter.kept is not None
    return reporter.kept


def _exploit(donor: TrainerState, config: dict[str, Any]) -> tuple[_FirstStepProbe, ListReporter]:
    probe = _FirstStepProbe()
    # A copy, as Tune's checkpoint on disk is: torch's load_state_dict keeps the given tensors.
    reporter = ListReporter(resume_from=copy.deepcopy(donor), keep_epoch=3)
    fit(probe, probe.load_data(seed=0), config, _SETTINGS, reporter)
    return probe, reporter


def test_an_exploited_trial_starts_from_the_donors_weights_with_its_new_dropout() -> None:
    donor = _donor_checkpoint()
    probe, _ = _exploit(donor, {**_DONOR, "lr": 0.012, "dropout": 0.3})
    assert probe.first is not None
    assert probe.first["weights"].keys() == donor.model.keys()
    for name, value in donor.model.items():
        assert torch.equal(probe.first["weights"][name], value), name
    assert probe.first["dropout"] == [0.3]


def test_after_a_perturbation_the_optimizer_has_the_new_lr_and_the_donors_moments() -> None:
    donor = _donor_checkpoint()
    _, reporter = _exploit(donor, {**_DONOR, "lr": 0.012, "dropout": 0.3})
    assert reporter.kept is not None
    groups = reporter.kept.optimizer["param_groups"]
    assert [g["lr"] for g in groups] == [0.012]
    # One more Adam step on the donor's moments: step 2 -> 3, not a fresh optimizer's 0 -> 1.
    steps = {float(s["step"]) for s in reporter.kept.optimizer["state"].values()}
    donor_steps = {float(s["step"]) for s in donor.optimizer["state"].values()}
    assert steps == {s + 192 / 32 for s in donor_steps} == {18.0}


def test_the_schedule_is_the_donors_then_the_recipients_and_each_epoch_logs_hp_metrics() -> None:
    donor = _donor_checkpoint()
    _, reporter = _exploit(donor, {**_DONOR, "lr": 0.012, "dropout": 0.3})
    assert reporter.kept is not None
    assert reporter.kept.schedule == [
        {"epoch": 1.0, "lr": 0.01, "dropout": 0.1},
        {"epoch": 2.0, "lr": 0.01, "dropout": 0.1},
        {"epoch": 3.0, "lr": 0.012, "dropout": 0.3},
    ]
    assert [r["epoch"] for r in reporter.results] == [3, 4]
    assert reporter.results[0]["hp/lr"] == 0.012 and reporter.results[0]["hp/dropout"] == 0.3


def test_loading_a_donors_optimizer_state_brings_its_old_lr_unless_the_settings_are_restored() -> None:
    model = nn.Linear(2, 1)
    donor = make_optimizer(model, {"optimizer": "momentum", "lr": 0.1, "momentum": 0.9})
    recipient = make_optimizer(model, {"optimizer": "momentum", "lr": 0.05, "momentum": 0.8})
    wanted = pbt.settings_of(recipient)
    recipient.load_state_dict(donor.state_dict())
    assert recipient.param_groups[0]["lr"] == 0.1  # what torch does: the donor's values
    pbt.restore_settings(recipient, wanted)
    assert (recipient.param_groups[0]["lr"], recipient.param_groups[0]["momentum"]) == (0.05, 0.8)


def _space() -> Any:
    from hypersweep.search_space import parse_search_space

    return parse_search_space(
        {
            "lr": {"type": "loguniform", "low": 1e-4, "high": 0.1},
            "optimizer": {"type": "choice", "values": ["sgd", "momentum"]},
            "momentum": {"type": "uniform", "low": 0.5, "high": 0.99, "when": {"optimizer": "momentum"}},
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        },
        "space",
    )


def test_the_population_is_seeded_and_keeps_conditions() -> None:
    from hypersweep.pbt_scheduler import population

    members = population(_space(), 8, seed=1)
    assert members == population(_space(), 8, seed=1) != population(_space(), 8, seed=2)
    for member in members:
        assert ("momentum" in member) == (member["optimizer"] == "momentum")
        assert 1e-4 <= member["lr"] <= 0.1


def test_a_perturbed_value_stays_within_the_space() -> None:
    from hypersweep.pbt_scheduler import _Clip

    clip = _Clip({"dropout": (0.0, 0.5), "batch_size": (16.0, 128.0)}, frozenset({"batch_size"}))
    assert clip({"dropout": 0.6, "batch_size": 153.6, "lr": 5.0}) == {
        "dropout": 0.5,
        "batch_size": 128,
        "lr": 5.0,
    }


def test_pbt_reports_with_a_checkpoint_at_every_perturbation_epoch() -> None:
    from hypersweep.config import SweepSpec
    from hypersweep.schedulers import decision_epochs

    spec = SweepSpec.model_validate(
        {
            "name": "t",
            "experiment": "tests.toy:ToyRegression",
            "search_space": _space(),
            "max_epochs": 7,
            "num_samples": 4,
            "scheduler": {"type": "pbt", "perturbation_interval": 2},
        }
    )
    assert decision_epochs(spec) == {2, 4, 6}
    assert spec.mutations == ("lr", "dropout")  # momentum is conditional: not every member has it
