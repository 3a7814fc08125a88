"""The search space: every tunable hyperparameter in one typed table, the default space of each stage, and
narrowing from the command line (``--space lr=1e-4:1e-2 --space backbone=xresnet1d18,inception1d``).

A dimension is a :class:`FloatRange`, a :class:`Choice` or a :class:`Fixed` value. Each parameter says
which stages it applies to and how it changes a :class:`~ecgml.train.pipeline.TrainConfig`, so the objective
is ``apply_params(base, space.sample(trial))`` and nothing else.

Why these parameters: learning rate, weight decay and head dropout set the regularisation of the
Strodthoff et al. (2020) models; backbone (family and depth, a registered name) and width (a channel
multiplier every family accepts) set capacity; crop length and window aggregation are the benchmark's
input choices; batch size interacts with the one-cycle schedule. Fine-tuning starts from a registered
backbone, so its architecture, head dropout and input length are fixed there; it tunes what trains
(strategy) and the discriminative learning-rate decay instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from ecgml.config import STRATEGIES

if TYPE_CHECKING:
    import optuna

    from ecgml.train.pipeline import TrainConfig

Stage = Literal["pretrain", "finetune"]
STAGES: tuple[Stage, ...] = ("pretrain", "finetune")
#: Fine-tuning strategies as an Optuna choice, sorted: the order stored studies were created with.
_STRATEGY_CHOICES = tuple(sorted(STRATEGIES))
Scalar = str | int | float | bool


class SpaceError(ValueError):
    """A search space that cannot be searched (unknown name, empty, low > high, bad value)."""


@dataclass(frozen=True)
class FloatRange:
    """A continuous range, sampled uniformly or (``log``) log-uniformly; ``low == high`` is a fixed value."""

    low: float
    high: float
    log: bool = False

    def check(self, name: str) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise SpaceError(f"{name}: range bounds must be finite numbers, not {self.low}:{self.high}")
        if self.low > self.high:
            raise SpaceError(f"{name}: range low {self.low:g} > high {self.high:g}")
        if self.log and self.low <= 0:
            raise SpaceError(f"{name}: a log range needs low > 0, not {self.low:g}")

    @property
    def is_fixed(self) -> bool:
        return self.low == self.high

    def corners(self) -> tuple[float, ...]:
        return (self.low, self.high)

    def to_json(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}

    def __str__(self) -> str:
        return f"{self.low:g}:{self.high:g}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Choice:
    """One of a list of values (categorical); a single value is a fixed value."""

    choices: tuple[Scalar, ...]

    def check(self, name: str) -> None:
        if not self.choices:
            raise SpaceError(f"{name}: the list of values is empty")
        if len(set(self.choices)) != len(self.choices):
            raise SpaceError(f"{name}: values repeat in {list(self.choices)}")

    @property
    def is_fixed(self) -> bool:
        return len(self.choices) == 1

    def corners(self) -> tuple[Scalar, ...]:
        return self.choices

    def to_json(self) -> dict[str, Any]:
        return {"type": "choice", "choices": list(self.choices)}

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.choices)


@dataclass(frozen=True)
class Fixed:
    """Not searched: every trial uses this value."""

    value: Scalar

    def check(self, name: str) -> None:
        return None

    is_fixed = True

    def corners(self) -> tuple[Scalar, ...]:
        return (self.value,)

    def to_json(self) -> dict[str, Any]:
        return {"type": "fixed", "value": self.value}

    def __str__(self) -> str:
        return f"{self.value} (fixed)"


Dimension = FloatRange | Choice | Fixed


# -- the parameters ----------------------------------------------------------------------------------------------
def _optim(field: str) -> Callable[[TrainConfig, Any], TrainConfig]:
    return lambda config, value: replace(config, optim=replace(config.optim, **{field: value}))


def _model_kwarg(key: str) -> Callable[[TrainConfig, Any], TrainConfig]:
    return lambda config, value: replace(config, model=replace(config.model, kwargs={**config.model.kwargs,
                                                                                       key: value}))


def _backbone(config: TrainConfig, value: Any) -> TrainConfig:
    return replace(config, model=replace(config.model, backbone=str(value)))


def _crop(config: TrainConfig, value: Any) -> TrainConfig:
    return replace(config, crop_s=float(value))


def _registered(value: Any) -> str | None:
    from ecgml.models import get_backbone_entry

    try:
        get_backbone_entry(str(value))
    except ValueError as exc:
        return str(exc)
    return None


def _strategy(value: Any) -> str | None:
    return None if value in STRATEGIES else f"must be one of {', '.join(STRATEGIES)}"


@dataclass(frozen=True)
class Parameter:
    """A tunable hyperparameter: its value type, meaning, stages, how it is checked and applied."""

    name: str
    kind: type
    doc: str
    stages: tuple[Stage, ...]
    apply: Callable[[TrainConfig, Any], TrainConfig]
    check: Callable[[Any], str | None]
    defaults: Mapping[Stage, Dimension]


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("lr", float, "peak learning rate of the one-cycle schedule (AdamW)", STAGES, _optim("lr"), _positive,
              {"pretrain": FloatRange(1e-4, 3e-2, log=True), "finetune": FloatRange(1e-5, 1e-2, log=True)}),
    Parameter("weight_decay", float, "AdamW decoupled weight decay", STAGES, _optim("weight_decay"),
              lambda v: None if v >= 0 else "must be >= 0",
              {"pretrain": FloatRange(1e-5, 1e-1, log=True), "finetune": FloatRange(1e-5, 1e-1, log=True)}),
    Parameter("dropout", float, "dropout of the classifier head (the backbone's `ps`)", ("pretrain",),
              _model_kwarg("ps"), lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
              {"pretrain": FloatRange(0.0, 0.5)}),
    Parameter("backbone", str, "registered backbone: family and depth (see `ecgml models`)", ("pretrain",),
              _backbone, _registered,
              {"pretrain": Choice(("xresnet1d18", "xresnet1d50", "resnet1d_wang", "inception1d"))}),
    Parameter("width", float, "channel multiplier of the backbone (its `width`)", ("pretrain",),
              _model_kwarg("width"), _positive, {"pretrain": Choice((0.25, 0.5, 1.0))}),
    Parameter("crop_s", float, "training crop and evaluation window length in seconds", ("pretrain",), _crop,
              _positive, {"pretrain": Choice((1.25, 2.5, 5.0))}),
    Parameter("batch_size", int, "mini-batch size", STAGES, _optim("batch_size"),
              lambda v: None if v >= 1 else "must be >= 1",
              {"pretrain": Choice((32, 64, 128)), "finetune": Choice((32, 64, 128))}),
    Parameter("aggregate", str, "how window predictions combine per record (max or mean)", STAGES,
              _optim("aggregate"), lambda v: None if v in ("max", "mean") else "must be max or mean",
              {"pretrain": Choice(("max", "mean")), "finetune": Choice(("max", "mean"))}),
    Parameter("strategy", str, "what trains: full, linear (head only) or gradual unfreezing", ("finetune",),
              _optim("strategy"), _strategy, {"finetune": Choice(_STRATEGY_CHOICES)}),
    Parameter("lr_decay", float, "discriminative learning rates: factor per group from the head down",
              ("finetune",), _optim("lr_decay"), lambda v: None if 0 < v <= 1 else "must be in (0, 1]",
              {"finetune": FloatRange(0.1, 1.0, log=True)}),
)}


def _convert(param: Parameter, text: str) -> Scalar:
    text = text.strip()
    try:
        if param.kind is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if param.kind is float:
            return float(text)
    except ValueError:
        raise SpaceError(f"{param.name}: {text!r} is not a{'n integer' if param.kind is int else ' number'}") from None
    return text


def parse_dimension(param: Parameter, text: str, default: Dimension | None = None) -> Dimension:
    """``LOW:HIGH[:log|:linear]`` (a float range), ``A,B,C`` (choices) or ``V`` (fixed)."""
    text = text.strip()
    if ":" in text:
        if param.kind is not float:
            raise SpaceError(f"{param.name} takes a list of values (e.g. {default or 'a,b'}), not a range")
        parts = text.split(":")
        log = default.log if isinstance(default, FloatRange) else False
        if len(parts) == 3 and parts[2].strip() in ("log", "linear"):
            log = parts[2].strip() == "log"
            parts = parts[:2]
        if len(parts) != 2:
            raise SpaceError(f"{param.name}: {text!r} is not LOW:HIGH[:log|:linear]")
        return FloatRange(float(_convert(param, parts[0])), float(_convert(param, parts[1])), log)
    if "," in text or not text:
        return Choice(tuple(_convert(param, t) for t in text.split(",") if t.strip()))
    return Fixed(_convert(param, text))


def _dimension_from_json(doc: Mapping[str, Any]) -> Dimension:
    kind = doc.get("type")
    if kind == "float":
        return FloatRange(float(doc["low"]), float(doc["high"]), bool(doc.get("log", False)))
    if kind == "choice":
        return Choice(tuple(doc["choices"]))
    if kind == "fixed":
        return Fixed(doc["value"])
    raise SpaceError(f"unknown dimension type {kind!r} in {dict(doc)}")


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions of one stage's study, in a fixed order (the order parameters are suggested in)."""

    stage: Stage
    dims: tuple[tuple[str, Dimension], ...]

    @classmethod
    def default(cls, stage: Stage) -> SearchSpace:
        if stage not in STAGES:
            raise SpaceError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
        return cls(stage, tuple((p.name, p.defaults[stage]) for p in PARAMETERS.values() if stage in p.stages))

    def narrowed(self, overrides: Mapping[str, str]) -> SearchSpace:
        """This space with some dimensions replaced from ``NAME=SPEC`` texts (see :func:`parse_dimension`)."""
        current = dict(self.dims)
        for name, text in overrides.items():
            if name not in PARAMETERS:
                raise SpaceError(f"unknown parameter {name!r}; tunable: {', '.join(PARAMETERS)}")
            if name not in current:
                raise SpaceError(f"{name} is not tunable when the stage is {self.stage} "
                                 f"(tunable: {', '.join(current)})")
            current[name] = parse_dimension(PARAMETERS[name], text, current[name])
        return SearchSpace(self.stage, tuple(current.items()))

    def validate(self) -> None:
        """Every dimension well formed, every value acceptable, and at least one dimension left to search."""
        for name, dim in self.dims:
            param = PARAMETERS[name]
            dim.check(name)
            for value in dim.corners():
                allowed = (float, int) if param.kind is float else (param.kind,)
                if isinstance(value, bool) or not isinstance(value, allowed):
                    raise SpaceError(f"{name}: {value!r} is not of type {param.kind.__name__}")
                problem = param.check(value)
                if problem:
                    raise SpaceError(f"{name}={value}: {problem}")
        if not self.searched:
            raise SpaceError("the search space is empty: every parameter is fixed ("
                             + ", ".join(f"{n}={d}" for n, d in self.dims) + "); give at least one a range or "
                             "several values")

    @property
    def searched(self) -> tuple[str, ...]:
        return tuple(name for name, dim in self.dims if not dim.is_fixed)

    def sample(self, trial: optuna.Trial) -> dict[str, Scalar]:
        """Every parameter's value for ``trial``: suggested where searched, the fixed value otherwise."""
        values: dict[str, Scalar] = {}
        for name, dim in self.dims:
            if isinstance(dim, Fixed):
                values[name] = dim.value
            elif dim.is_fixed:
                values[name] = dim.corners()[0]
            elif isinstance(dim, FloatRange):
                values[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
            else:
                values[name] = trial.suggest_categorical(name, list(dim.choices))
        return values

    def corner_configs(self, base: TrainConfig) -> Iterable[TrainConfig]:
        """Configs at every bound and choice of each dimension (the others at their first value): building
        them checks the whole space against the base config (e.g. a crop longer than the cache) up front."""
        first = {name: dim.corners()[0] for name, dim in self.dims}
        for name, dim in self.dims:
            for value in dim.corners():
                yield apply_params(base, {**first, name: value})

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "dims": {name: dim.to_json() for name, dim in self.dims}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SearchSpace:
        return cls(doc["stage"], tuple((name, _dimension_from_json(d)) for name, d in doc["dims"].items()))

    def describe(self) -> str:
        return "\n".join(f"  {name:<13} {dim!s:<40} {PARAMETERS[name].doc}" for name, dim in self.dims)


def apply_params(base: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
    """``base`` with every parameter applied (ValueError from the config's own checks if one is invalid)."""
    config = base
    for name, value in params.items():
        config = PARAMETERS[name].apply(config, value)
    return config


def parse_overrides(texts: Iterable[str]) -> dict[str, str]:
    """``["lr=1e-4:1e-2", "aggregate=max"]`` -> ``{"lr": "1e-4:1e-2", "aggregate": "max"}``; one text may hold
    several, separated by ``;`` (an MLproject parameter is one string); empty texts are skipped."""
    out: dict[str, str] = {}
    for text in (part.strip() for whole in texts for part in whole.split(";")):
        if not text:
            continue
        name, sep, spec = text.partition("=")
        if not sep or not name.strip():
            raise SpaceError(f"--space {text!r} is not NAME=SPEC (e.g. lr=1e-4:1e-2, backbone=xresnet1d18,inception1d)")
        if name.strip() in out:
            raise SpaceError(f"--space gives {name.strip()} twice")
        out[name.strip()] = spec
    return out
