"""The sweep file: schema, loading, ``--set key=value`` overrides, defaults.

Everything a sweep needs is validated here, once, into a frozen ``SweepSpec``; every error names
the file and the key path (``error: sweep.yaml: scheduler.grace_period: ...``).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hypersweep import pbt_space
from hypersweep.errors import ConfigError, did_you_mean, first_error, not_one_of
from hypersweep.search_space import (
    Choice,
    IntParam,
    LogUniform,
    SearchSpace,
    Uniform,
    parse_search_space,
)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SchedulerSpec(_Frozen):
    """Which trials stop early; every decision uses the trial's result so far (``scoring``).

    asha: ASHA stops weak trials at rungs grace_period * reduction_factor**k epochs.
    hyperband: asynchronous Hyperband, ``brackets`` ASHA brackets; bracket s has its first rung at
    grace_period * reduction_factor**s epochs, so later brackets give trials longer before judging.
    median: the median stopping rule: after grace_period epochs a trial stops when its result is
    worse than the median of the other trials' running averages at the same epoch (once
    min_samples_required others have reached it).
    fifo: no trial stops early (but by its own patience or divergence).
    pbt: population-based training: every perturbation_interval epochs a trial in the bottom
    quantile_fraction copies the weights of one in the top quantile_fraction and continues with
    its hyperparameters perturbed (``mutations``: keys of the search space; see ``pbt_space``).
    pb2: population-based bandits: PBT whose new values come from a Gaussian-process bandit over
    the population's results (Ray's ``PB2``) instead of random factors; ranges only, no choices.
    """

    type: Literal["asha", "hyperband", "median", "fifo", "pbt", "pb2"] = "asha"
    grace_period: Annotated[int, Field(ge=1)] = 1
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0
    brackets: Annotated[int, Field(ge=1)] = 3  # hyperband only
    min_samples_required: Annotated[int, Field(ge=1)] = 3  # median only
    # pbt only. Empty mutations: the continuous keys of the space that the trainer can change.
    perturbation_interval: Annotated[int, Field(ge=1)] = 4
    quantile_fraction: Annotated[float, Field(gt=0, le=0.5)] = 0.25
    resample_probability: Annotated[float, Field(ge=0, le=1)] = 0.25
    mutations: tuple[str, ...] = ()

    @property
    def population_based(self) -> bool:
        """PBT or PB2: a population whose members copy each other, not trials stopped early."""
        return self.type in ("pbt", "pb2")

    @field_validator("mutations", mode="before")
    @classmethod
    def _mutation_names(cls, value: Any) -> Any:
        """A list of keys, or a mapping of keys to nothing (the space's distribution is used)."""
        if isinstance(value, str):
            return [value]
        if isinstance(value, Mapping):
            given = [k for k, v in value.items() if v not in (None, {})]
            if given:
                raise _KeyedError(
                    f"scheduler.mutations.{given[0]}",
                    "leave the value empty: a mutation perturbs the search space's own distribution",
                )
            return list(value)
        return value

    def rungs(self, max_epochs: int, bracket: int = 0) -> list[int]:
        """The epochs at which an ASHA bracket compares a trial with its rung, as Ray's
        ``AsyncHyperBandScheduler`` places them (its ``_Bracket``): it decides at the first result
        at or past each, so a trial reports exactly there."""
        grace, factor = self.grace_period, self.reduction_factor
        count = int(math.log(max_epochs / grace) / math.log(factor) - bracket + 1)  # as Ray counts
        return sorted({min(max_epochs, math.ceil(grace * factor ** (k + bracket))) for k in range(count)})


class SearchSpec(_Frozen):
    """optuna = seeded TPE; random = seeded random sampling (same space, same conditions). The seed
    is the sampler's, and the data's too unless ``training.seed`` sets that apart.

    warm_start: earlier sweeps (ids, or names for their latest run) whose trials seed the study
    before the first trial (``warm_start``); they must have optimised the same metric and mode."""

    type: Literal["optuna", "random"] = "optuna"
    seed: Annotated[int, Field(ge=0)] = 0
    warm_start: tuple[Annotated[str, Field(min_length=1)], ...] = ()

    @field_validator("warm_start", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # `warm_start: my-sweep` is one sweep


class ResourcesSpec(_Frozen):
    cpus_per_trial: Annotated[float, Field(gt=0)] = 1.0
    gpus_per_trial: Annotated[float, Field(ge=0)] = 0.0
    # None: as many as the cluster's CPUs (and GPUs) fit at once.
    max_concurrent: Annotated[int | None, Field(ge=1)] = None
    # A trial that asked for a GPU but finds no CUDA device: train on the CPU (tagged and warned)
    # instead of failing.
    allow_cpu_fallback: bool = False


class TrainingSpec(_Frozen):
    """Lessons built into every trial: early stopping, the divergence guard, clipping."""

    # Epochs without a val_loss improvement of more than min_delta before a trial stops itself;
    # null turns within-trial early stopping off.
    patience: Annotated[int | None, Field(ge=1)] = 5
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    # A loss that is NaN/inf, or above divergence_factor x the first epoch's, ends the trial.
    divergence_factor: Annotated[float, Field(gt=1)] = 10.0
    grad_clip_norm: Annotated[float | None, Field(gt=0)] = None
    # A trial whose code raises or whose worker dies is retried this many times, each time from
    # its last checkpoint (its last finished epoch), before it is marked failed.
    max_failures: Annotated[int, Field(ge=0)] = 2
    # Mixed precision: float16 autocast + gradient scaling on CUDA, bfloat16 autocast on the CPU.
    amp: bool = False
    # A trial sends its epochs to the driver (live view, MLflow) at ASHA's rung epochs, at its end
    # and otherwise at most this many seconds apart; 0: after every epoch. Each report is a round
    # trip through Tune that costs more than a small model's epoch.
    report_every_s: Annotated[float, Field(ge=0)] = 2.0
    # Seconds between the checkpoints a retried trial resumes from (0: one with every report).
    # ASHA's rung epochs and a trial's last epoch always get one, so weights stay exact.
    checkpoint_every_s: Annotated[float, Field(ge=0)] = 10.0
    # Seed of the data split, the weights' initialisation and the batch order; null: search.seed.
    # Set it to compare searches (search.seed varying) on one split and one initialisation.
    seed: Annotated[int | None, Field(ge=0)] = None


class SweepSpec(_Frozen):
    """A validated sweep; ``source`` is the file it came from (for messages and artifacts)."""

    name: Annotated[str, Field(pattern=_NAME, max_length=100)]
    experiment: Annotated[str, Field(pattern=_IMPORT_PATH)]
    search_space: SearchSpace
    fixed: dict[str, Any] = Field(default_factory=dict)
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    max_epochs: Annotated[int, Field(ge=1)] = 20
    num_samples: Annotated[int, Field(ge=1)] = 16
    scheduler: SchedulerSpec = SchedulerSpec()
    search: SearchSpec = SearchSpec()
    resources: ResourcesSpec = ResourcesSpec()
    training: TrainingSpec = TrainingSpec()
    tracking_uri: str | None = None
    storage: str | None = None
    # A plain path that every node of a multi-node cluster sees (NFS, a shared mount).
    storage_shared: bool = False
    source: Path = Path("<inline>")

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if self.scheduler.population_based:
            _check_pbt(self)
        elif self.scheduler.type != "fifo" and self.scheduler.grace_period > self.max_epochs:
            raise _KeyedError(
                "scheduler.grace_period",
                f"{self.scheduler.grace_period} exceeds max_epochs ({self.max_epochs})",
            )
        if self.scheduler.type == "hyperband":
            possible = len(self.scheduler.rungs(self.max_epochs))  # a later bracket has one rung less
            if self.scheduler.brackets > possible:
                raise _KeyedError(
                    "scheduler.brackets",
                    f"{self.scheduler.brackets} brackets need more room: at most {possible} fit between "
                    f"grace_period {self.scheduler.grace_period} and max_epochs {self.max_epochs} "
                    f"(reduction_factor {self.scheduler.reduction_factor:g})",
                )
        if self.metric in ("train_loss", "val_loss") and self.mode == "max":
            # The best trial would be the worst one, and ASHA would stop the good ones.
            raise _KeyedError("mode", f"max with metric {self.metric}: a loss is minimised, use min")
        clash = sorted(set(self.fixed) & set(self.search_space.names))
        if clash:
            raise _KeyedError(f"fixed.{clash[0]}", "is also in the search space")
        _check_trainer_values(self.fixed, self.search_space)
        return self

    @property
    def mutations(self) -> tuple[str, ...]:
        """The keys PBT perturbs (empty unless the scheduler is pbt)."""
        if not self.scheduler.population_based:
            return ()
        return self.scheduler.mutations or pbt_space.default_mutations(self.search_space)

    @property
    def data_seed(self) -> int:
        """The seed of the data split and of every trial's initialisation and batch order."""
        return self.search.seed if self.training.seed is None else self.training.seed

    def resolved(self) -> dict[str, Any]:
        """The sweep as plain data, search space inlined: what the parent run stores."""
        data = self.model_dump(mode="json", exclude={"search_space", "source"})
        data["search_space"] = self.search_space.as_dict()
        return data


_PBT_POPULATION = 4  # the fewest members with a distinct top and bottom quantile


def _check_pbt(spec: SweepSpec) -> None:
    """A PBT sweep that cannot work: no perturbation before the end, too small a population,
    mutations of keys the trainer cannot change (``pbt_space``)."""
    scheduler = spec.scheduler
    if scheduler.perturbation_interval >= spec.max_epochs:
        raise _KeyedError(
            "scheduler.perturbation_interval",
            f"{scheduler.perturbation_interval} is not below max_epochs ({spec.max_epochs}): "
            "no trial would ever copy another",
        )
    if spec.num_samples < _PBT_POPULATION:
        raise _KeyedError(
            "num_samples",
            f"{spec.num_samples} is too small a population for {scheduler.type}: at least {_PBT_POPULATION}, "
            "so that a bottom and a top quantile exist",
        )
    if spec.search.warm_start:
        raise _KeyedError(
            "search.warm_start", f"{scheduler.type} samples its population itself: no searcher to seed"
        )
    for key in scheduler.mutations:
        problem = pbt_space.mutation_problem(key, spec.search_space, spec.fixed, scheduler.type)
        if problem is not None:
            hint = did_you_mean(key, spec.search_space.names) if "not a key" in problem else ""
            raise _KeyedError(f"scheduler.mutations.{key}", problem + hint)
    if not spec.mutations:
        raise _KeyedError(
            "scheduler.mutations",
            "none given, and the search space has no continuous key PBT can change "
            f"({', '.join(pbt_space.CHANGEABLE)})",
        )


# Values the trainer or common layers read, with the range each must lie in (key -> test, words).
_VALUE_RULES: dict[str, tuple[Any, str]] = {
    "dropout": (lambda v: 0 <= v < 1, "must be at least 0 and below 1"),
    "batch_size": (lambda v: isinstance(v, int) and v > 0, "must be a positive integer"),
    "lr": (lambda v: v > 0, "must be positive"),
}


def _check_trainer_values(fixed: Mapping[str, Any], space: SearchSpace) -> None:
    """Every value a trial could get for dropout, batch_size or lr must make sense."""
    for name, value in fixed.items():
        _check_value(name, value, f"fixed.{name}")
    for name, entry in space.entries:
        prefix = f"search_space.{name}"
        if isinstance(entry, Choice):
            for value in entry.values:
                _check_value(name, value, f"{prefix}.values")
        elif isinstance(entry, LogUniform | Uniform | IntParam):
            _check_value(name, entry.low, f"{prefix}.low")
            _check_value(name, entry.high, f"{prefix}.high")
        else:
            _check_value(name, entry, prefix)


def _check_value(name: str, value: Any, key: str) -> None:
    rule = _VALUE_RULES.get(name)
    if rule is None:
        return
    test, words = rule
    ok = isinstance(value, int | float) and not isinstance(value, bool) and test(value)
    if not ok:
        raise _KeyedError(key, f"{name} {words}, got {value!r}")


class _KeyedError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def load_sweep(
    path: str | Path,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
    notes: list[str] | None = None,
) -> SweepSpec:
    """Load a sweep file, apply ``--set key.path=value`` overrides, then ``values`` (CLI flags,
    dotted keys, already typed), and validate. ``notes`` receives one line per setting adapted to
    a sweep the command line shortened (see ``_fit_shortened``)."""
    file = Path(path)
    source = str(path)
    raw = _read_yaml(file, source)
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(source, "", "must be a non-empty mapping of sweep settings")
    data = copy.deepcopy(dict(raw))
    for item in overrides:
        if item.startswith("search_space.") and isinstance(data.get("search_space"), str):
            data["search_space"] = _read_space_file(data["search_space"], file)  # inline, then edit
        apply_override(data, item)
    for key, value in (values or {}).items():
        if value is not None:
            set_path(data, key, value, source="command line")
    given = {item.partition("=")[0].strip() for item in overrides}
    given |= {key for key, value in (values or {}).items() if value is not None}
    adapted = _fit_shortened(data, given)
    if notes is not None:
        notes.extend(adapted)
    return build_spec(data, file)


def _fit_shortened(data: dict[str, Any], given: set[str]) -> list[str]:
    """A sweep shortened from the command line (``--max-epochs 2``) means a shorter sweep: the
    file's scheduler settings that no longer fit in it (a grace period, Hyperband's brackets) are
    brought within it, each with a line saying so. What the file itself contradicts, and what
    the command line set too, stays an error."""
    scheduler = data.get("scheduler")
    epochs = data.get("max_epochs")
    if "max_epochs" not in given or not isinstance(scheduler, dict) or not isinstance(epochs, int):
        return []
    notes = []
    grace = scheduler.get("grace_period")
    if "scheduler.grace_period" not in given and isinstance(grace, int) and 1 <= epochs < grace:
        scheduler["grace_period"] = epochs
        notes.append(f"scheduler.grace_period {grace} -> {epochs}: the sweep's max_epochs is {epochs}")
    population = scheduler.get("type") in ("pbt", "pb2")
    interval = scheduler.get("perturbation_interval", 4) if population else None
    if (
        "scheduler.perturbation_interval" not in given
        and isinstance(interval, int)
        and 2 <= epochs <= interval
    ):
        scheduler["perturbation_interval"] = epochs // 2  # PBT's default is 4: say so when it changes
        notes.append(
            f"scheduler.perturbation_interval {interval} -> {epochs // 2}: the sweep's max_epochs is {epochs}"
        )
    brackets = scheduler.get("brackets")
    if (
        scheduler.get("type") == "hyperband"
        and "scheduler.brackets" not in given
        and isinstance(brackets, int)
    ):
        try:
            fits = len(SchedulerSpec.model_validate(scheduler).rungs(epochs))
        except ValidationError:
            return notes  # the section's own error is reported by the validation
        if 1 <= fits < brackets:
            scheduler["brackets"] = fits
            notes.append(f"scheduler.brackets {brackets} -> {fits}: more do not fit in max_epochs {epochs}")
    return notes


def import_roots(sweep_file: Path) -> list[str]:
    """Folders an experiment's module is imported from: cwd, the sweep file's parent and its folder.

    ``experiments/x.yaml`` naming ``experiments.mod:Cls`` resolves from the project root; a user's
    ``my_exp:Cls`` beside its sweep file resolves from the sweep file's folder. Workers get the same
    folders on their PYTHONPATH.
    """
    folder = sweep_file.resolve().parent
    roots: list[str] = []
    for path in (Path.cwd(), folder.parent, folder):
        if str(path) not in roots:
            roots.append(str(path))
    return roots


def _read_yaml(file: Path, source: str) -> Any:
    if not file.is_file():
        raise ConfigError(source, "", "file not found")
    try:
        # safe_load: a `!!python/...` tag is an error, never executed.
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, where, f"invalid YAML: {problem}") from None


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; value is parsed as YAML (``[32, 16]``, ``0.1``)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", item, "expected KEY=VALUE")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError("--set", key, f"cannot parse value {text!r}") from None
    set_path(data, key.strip(), value, source="--set")


def set_path(data: dict[str, Any], key: str, value: Any, *, source: str) -> None:
    """Set ``data[a][b][c] = value`` for ``key`` 'a.b.c', creating sections as needed."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(source, key, f"'{part}' is not a mapping")
        node = child
    node[parts[-1]] = value


def build_spec(data: Mapping[str, Any], file: Path) -> SweepSpec:
    source = str(file)
    fields = dict(data)
    allowed = [f for f in SweepSpec.model_fields if f != "source"]
    for key in fields:
        if key not in allowed:  # reported before the search space file is even read
            raise ConfigError(source, str(key), f"unknown key{did_you_mean(str(key), allowed)}")
    fields["search_space"] = _load_space(fields.get("search_space"), file)
    fields["source"] = file
    try:
        return SweepSpec.model_validate(fields)
    except ValidationError as exc:
        raise _to_config_error(exc, source) from None


def _load_space(value: Any, file: Path) -> SearchSpace:
    source = str(file)
    if value is None:
        raise ConfigError(source, "search_space", "missing: a file path or an inline mapping")
    if isinstance(value, str):
        space_file = (file.parent / value).resolve()
        return parse_search_space(_read_space_file(value, file), _display(space_file))
    return parse_search_space(value, source, prefix="search_space.")


def _read_space_file(value: str, file: Path) -> Any:
    """The raw mapping of a search space file, given relative to the sweep file."""
    space_file = (file.parent / value).resolve()
    if not space_file.is_file():
        raise ConfigError(str(file), "search_space", f"file not found: {value}")
    return _read_yaml(space_file, _display(space_file))


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _to_config_error(exc: ValidationError, source: str) -> ConfigError:
    err = first_error(exc.errors())
    loc = [str(p) for p in err["loc"]]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _KeyedError):
        return ConfigError(source, ctx_error.key, str(ctx_error))
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        return ConfigError(source, key, f"unknown key{did_you_mean(loc[-1], _fields_at(loc))}")
    if err["type"] == "missing":
        return ConfigError(source, key, "missing required key")
    if err["type"] in ("literal_error", "enum"):  # a closed set: name the value, suggest one
        allowed = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        return ConfigError(source, key, not_one_of(err["input"], allowed))
    return ConfigError(source, key, err["msg"].removeprefix("Value error, "))


def _fields_at(loc: list[str]) -> list[str]:
    """The valid keys of the section that holds ``loc[-1]`` (for did-you-mean hints)."""
    model: type[BaseModel] = SweepSpec
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [f for f in model.model_fields if f != "source"]
