"""Search spaces: YAML distributions -> an Optuna define-by-run function.

A search space is an ordered mapping ``name -> distribution | constant``::

    lr:        {type: loguniform, low: 1.0e-4, high: 0.3}
    optimizer: {type: choice, values: [sgd, momentum, adam]}
    momentum:  {type: uniform, low: 0.5, high: 0.99, when: {optimizer: momentum}}
    hidden:    [64, 32]          # anything that is not a mapping with `type` is a constant

``when`` makes a parameter conditional on earlier choice parameters: it is only sampled (and only
present in the trial's config) when every named parameter took one of the listed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hypersweep.errors import ConfigError, did_you_mean, first_error, not_one_of

# Optuna stores categorical choices natively only for these types; others are encoded as labels.
_NATIVE = (type(None), bool, int, float, str)


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: dict[str, list[Any]] | None = None

    @field_validator("when", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value


class _Range(_Param):
    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        low, high = getattr(self, "low"), getattr(self, "high")  # noqa: B009
        if not low < high:
            raise ValueError(f"low ({low}) must be below high ({high})")
        return self


class LogUniform(_Range):
    type: Literal["loguniform"] = "loguniform"
    low: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    high: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Uniform(_Range):
    type: Literal["uniform"] = "uniform"
    low: Annotated[float, Field(allow_inf_nan=False)]
    high: Annotated[float, Field(allow_inf_nan=False)]


class IntParam(_Range):
    type: Literal["int"] = "int"
    low: int
    high: int
    step: Annotated[int, Field(ge=1)] = 1
    log: bool = False

    @model_validator(mode="after")
    def _log_positive(self) -> IntParam:
        if self.log and self.low <= 0:
            raise ValueError("low must be positive when log is true")
        return self


class Choice(_Param):
    type: Literal["choice"] = "choice"
    values: Annotated[list[Any], Field(min_length=1)]


Distribution = LogUniform | Uniform | IntParam | Choice
_DISTRIBUTIONS = (LogUniform, Uniform, IntParam, Choice)
_TYPES: dict[str, type[Distribution]] = {
    "loguniform": LogUniform,
    "uniform": Uniform,
    "int": IntParam,
    "choice": Choice,
}


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; ``entries`` keeps file order (conditions refer backwards)."""

    entries: tuple[tuple[str, Distribution | Any], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.entries]

    @property
    def swept(self) -> list[str]:
        """The parameters sampled per trial (constants left out)."""
        return [name for name, entry in self.entries if isinstance(entry, _DISTRIBUTIONS)]

    def as_dict(self) -> dict[str, Any]:
        """The space as plain data (what the YAML file said, normalised)."""
        out: dict[str, Any] = {}
        for name, entry in self.entries:
            is_dist = isinstance(entry, BaseModel)
            out[name] = entry.model_dump(exclude_none=True) if is_dist else entry
        return out

    def corners(self) -> list[dict[str, Any]]:
        """A few configurations that between them hold every choice and both ends of every
        range (conditions respected): what a preflight builds before any trial can fail."""
        widest = max([len(e.values) for _, e in self.entries if isinstance(e, Choice)], default=0)
        configs = []
        for i in range(max(2, widest)):
            config: dict[str, Any] = {}
            for name, entry in self.entries:
                if not isinstance(entry, _DISTRIBUTIONS):
                    config[name] = entry
                elif _active(entry, config):
                    config[name] = _corner(entry, i)
            configs.append(config)
        return configs

    def define_by_run(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample one configuration on ``trial``; returns the constants (as Ray's OptunaSearch wants).

        Sampled values are recorded on the trial by Optuna; the returned dict holds the constants
        and decoded non-native choices, which Ray merges into the trial's config.
        """
        sampled: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for name, entry in self.entries:
            if not isinstance(entry, _DISTRIBUTIONS):
                extra[name] = entry
                continue
            if not _active(entry, sampled):
                continue
            value, decoded = _suggest(trial, name, entry)
            sampled[name] = value
            if decoded is not _SAME:
                extra[name] = decoded
                sampled[name] = decoded
        return extra


_SAME = object()


def _corner(entry: Distribution, i: int) -> Any:
    if isinstance(entry, Choice):
        return entry.values[i % len(entry.values)]
    return entry.low if i % 2 == 0 else entry.high


def _active(entry: Distribution, sampled: Mapping[str, Any]) -> bool:
    if not entry.when:
        return True
    return all(k in sampled and sampled[k] in allowed for k, allowed in entry.when.items())


def _suggest(trial: optuna.Trial, name: str, entry: Distribution) -> tuple[Any, Any]:
    """Suggest ``name``; returns (value as Optuna stores it, decoded value or _SAME)."""
    if isinstance(entry, LogUniform):
        return trial.suggest_float(name, entry.low, entry.high, log=True), _SAME
    if isinstance(entry, Uniform):
        return trial.suggest_float(name, entry.low, entry.high), _SAME
    if isinstance(entry, IntParam):
        step = 1 if entry.log else entry.step
        return trial.suggest_int(name, entry.low, entry.high, step=step, log=entry.log), _SAME
    if all(isinstance(v, _NATIVE) for v in entry.values):
        return trial.suggest_categorical(name, entry.values), _SAME
    labels = [choice_label(v) for v in entry.values]
    label = trial.suggest_categorical(name, labels)
    return label, entry.values[labels.index(label)]


def choice_label(value: Any) -> str:
    """A stable text label for a choice Optuna cannot store natively (e.g. a list of sizes)."""
    return str(value)


def parse_search_space(data: Any, source: str, prefix: str = "") -> SearchSpace:
    """Validate raw YAML data into a SearchSpace; errors name ``source`` and the key path."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(source, prefix.rstrip("."), "must be a non-empty mapping of parameters")
    entries: list[tuple[str, Distribution | Any]] = []
    for name, raw in data.items():
        key = f"{prefix}{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(source, key, "parameter names must be identifiers")
        if raw is None:
            continue  # `name: null` (`--set search_space.name=null`) takes the parameter out
        entry = _parse_entry(raw, source, key) if _is_distribution(raw) else raw
        if isinstance(entry, _DISTRIBUTIONS):
            _check_condition(entry, entries, source, key)
        entries.append((name, entry))
    if not entries:
        raise ConfigError(source, prefix.rstrip("."), "every parameter is taken out (null)")
    return SearchSpace(entries=tuple(entries))


def _is_distribution(raw: Any) -> bool:
    return isinstance(raw, Mapping) and "type" in raw


def _parse_entry(raw: Mapping[str, Any], source: str, key: str) -> Distribution:
    kind = raw["type"]
    model = _TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ConfigError(source, f"{key}.type", not_one_of(kind, _TYPES))
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        err = first_error(exc.errors())
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{key}.{loc}" if loc else key
        if err["type"] == "extra_forbidden":
            fields = model.model_fields
            raise ConfigError(source, where, f"unknown key{did_you_mean(loc, fields)}") from None
        raise ConfigError(source, where, _clean(err["msg"])) from None


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _check_condition(
    entry: Distribution,
    earlier: list[tuple[str, Distribution | Any]],
    source: str,
    key: str,
) -> None:
    known = dict(earlier)
    for ref, allowed in (entry.when or {}).items():
        where = f"{key}.when.{ref}"
        parent = known.get(ref)
        if not isinstance(parent, Choice):
            hint = did_you_mean(ref, [n for n, e in earlier if isinstance(e, Choice)])
            raise ConfigError(source, where, f"must name an earlier choice parameter{hint}")
        missing = [v for v in allowed if v not in parent.values]
        if missing:
            # Often a narrowed choice (--set search_space.optimizer.values=[adam]) leaving a
            # parameter of the optimizers it dropped: say how to follow suit.
            name = key.rpartition(".")[2]
            raise ConfigError(
                source,
                where,
                f"{missing} not among {ref}'s values {parent.values}: narrow it too, or take"
                f" {name} out (--set search_space.{name}=null)",
            )
