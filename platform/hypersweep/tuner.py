"""The only place that builds a Ray Tune ``Tuner``: searcher, scheduler, resources, storage, and
the trainable every trial runs (with what all trials share: ``trial.TrialJob``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from hypersweep import cluster
from hypersweep.config import SweepSpec
from hypersweep.manifest import (
    storage_path,
)
from hypersweep.pbt_scheduler import make_population_based, placeholders, population_search
from hypersweep.registry import is_function, resolve_target
from hypersweep.run_board import board_name
from hypersweep.schedulers import SCHEDULER_FILE, decision_epochs, make_scheduler
from hypersweep.searcher import STUDY_FILE, make_searcher
from hypersweep.trainer import TrainSettings
from hypersweep.trial import TrialJob, trainable


def build_tuner(
    spec: SweepSpec,
    *,
    roots: list[str],
    data: Any,
    sweep_id: str,
    concurrent: int,
    callbacks: list[tune.Callback],
    folder: Path,
    seeded: Sequence[optuna.trial.FrozenTrial] = (),
    tracking_uri: str = "",
) -> tune.Tuner:
    """``folder``: the sweep's folder on this machine, where the searcher keeps its study and
    the scheduler its journal; ``seeded``: earlier trials the study starts with (a warm start);
    ``tracking_uri``: where a function trial's own MLflow calls go."""
    pbt = spec.scheduler.population_based
    return tune.Tuner(
        trainable_of(spec, roots, data, sweep_id=sweep_id, tracking_uri=tracking_uri),
        param_space={**dict(spec.fixed), **(placeholders(spec.search_space) if pbt else {})},
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            num_samples=spec.num_samples,
            search_alg=(
                population_search(spec.search_space, spec.num_samples, spec.search.seed)
                if pbt
                else _searcher(spec, folder / STUDY_FILE, sweep_id, seeded)
            ),
            scheduler=(
                make_population_based(
                    spec.scheduler,
                    space=spec.search_space,
                    mutations=spec.mutations,
                    sweep_id=sweep_id,
                    seed=spec.search.seed,
                )
                if pbt
                else make_scheduler(
                    spec.scheduler, max_epochs=spec.max_epochs, journal=folder / SCHEDULER_FILE
                )
            ),
            # OptunaSearch alone keeps one trial pending; this wraps it in a ConcurrencyLimiter.
            # (PBT has no searcher and needs every member at once: see pbt_scheduler.)
            max_concurrent_trials=None if pbt else concurrent,
            # Trials reuse worker processes: no actor start-up, imports or data load per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=sweep_id,
            storage_path=storage_path(spec.storage),
            callbacks=callbacks,
            verbose=0,
            # Tune snapshots the whole sweep (every trial's state: O(trials)) whenever a trial has
            # made num_to_keep checkpoints since the last snapshot; with 1 that is on every
            # checkpoint, a cost that grows with the sweep. With 2, a trial that ends with one
            # checkpoint forces none; one that finished after the last snapshot is recognised
            # on resume from the recorder's state (see trial.trainable).
            # PBT: a paused trial may copy a donor's checkpoint long after the donor made it, so
            # none is removed (Ray warns of num_to_keep <= 2 with PBT, pbt.py on_trial_add).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if pbt else 2),
            # A trial that raises or loses its worker restarts from its last checkpoint.
            failure_config=tune.FailureConfig(max_failures=spec.training.max_failures),
        ),
    )


def trainable_of(
    spec: SweepSpec,
    roots: list[str],
    data: Any,
    finished: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    sweep_id: str,
    tracking_uri: str = "",
) -> Any:
    function = is_function(resolve_target(spec.experiment, roots, source=str(spec.source)))
    job = TrialJob(
        experiment=spec.experiment,
        roots=tuple(roots),
        settings=TrainSettings(
            max_epochs=spec.max_epochs,
            seed=spec.data_seed,
            patience=spec.training.patience,
            min_delta=spec.training.min_delta,
            divergence_factor=spec.training.divergence_factor,
            grad_clip_norm=spec.training.grad_clip_norm,
            amp=spec.training.amp,
            metric=spec.metric,
            mode=spec.mode,
            mutable=spec.mutations,
        ),
        threads=max(1, int(spec.resources.cpus_per_trial)),
        gpus=spec.resources.gpus_per_trial,
        allow_cpu_fallback=spec.resources.allow_cpu_fallback,
        metric=spec.metric,
        mode=spec.mode,
        data=data,
        decision_epochs=decision_epochs(spec),
        report_every_s=spec.training.report_every_s,
        checkpoint_every_s=spec.training.checkpoint_every_s,
        finished=dict(finished or {}),
        function=function,
        fixed=dict(spec.fixed),
        tracking_uri=tracking_uri,
        run_board=board_name(sweep_id) if function else "",
    )
    return tune.with_resources(
        tune.with_parameters(trainable, job=job), cluster.trial_resources(spec.resources)
    )


def _searcher(
    spec: SweepSpec, study_file: Path, sweep_id: str, seeded: Sequence[optuna.trial.FrozenTrial]
) -> OptunaSearch:
    return make_searcher(
        spec.search.type,
        seed=spec.search.seed,
        space=spec.search_space.define_by_run,
        metric=spec.metric,
        mode=spec.mode,
        study_file=study_file,
        study_name=sweep_id,
        scheduler=spec.scheduler.type,
        num_samples=spec.num_samples,
        seeded=seeded,
    )
