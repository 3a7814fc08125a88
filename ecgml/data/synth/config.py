"""Options of one synthetic tree, frozen and validated, and dumped into the tree's ``SYNTH.json``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ecgml.data.dx_mapping import DX_DIALECTS
from ecgml.data.sources.g12ec import G12EC_FS
from ecgml.data.sources.ptbxl import PTBXL_FS
from ecgml.data.synth.cpsc import (
    CPSC_FS,
    CPSC_MALE_FRACTION,
    CPSC_MAX_SECONDS,
    CPSC_MIN_SECONDS,
    check_class_weights,
)
from ecgml.data.synth.labels import SOURCES, Priors
from ecgml.data.synth.noise import CPSC_NOISE, G12EC_NOISE, PTBXL_NOISE, NoiseConfig

#: Bump when a change to the generator changes what a given seed produces.
GENERATOR_VERSION = "1"
PTBXL_RATES = PTBXL_FS  # the rates each format ships at: the readers' own
GEORGIA_RATES = (G12EC_FS,)
CPSC = "cpsc"
#: The trees the generator writes: PTB-XL and Georgia (drawn from their priors) and CPSC 2018 (its nine classes).
TREE_SOURCES: tuple[str, ...] = (*SOURCES, CPSC)
_RATES = {"ptbxl": PTBXL_RATES, "g12ec": GEORGIA_RATES, CPSC: (CPSC_FS,)}

#: Per-source defaults of the fields left at None: PTB-XL (Wagner et al. 2020: ages 60 +- 17,
#: 52 % male, 18,885 patients for 21,837 records) and Georgia (ages about 61 +- 14, 54 % male, no
#: patient ids, 500 Hz only), CPSC 2018 (54 % male, no patient ids, 500 Hz, records of 6 to 60 s, ``#Dx:`` as
#: the first release's abbreviations; ages an assumption).
_SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "ptbxl": {"sampling_rates": PTBXL_RATES, "age_mean": 60.0, "age_sd": 17.0, "male_fraction": 0.52,
              "multi_record_patients": True, "noise": PTBXL_NOISE, "seconds": 10.0},
    "g12ec": {"sampling_rates": GEORGIA_RATES, "age_mean": 61.0, "age_sd": 14.0, "male_fraction": 0.54,
              "multi_record_patients": False, "noise": G12EC_NOISE, "seconds": 10.0},
    CPSC: {"sampling_rates": (CPSC_FS,), "age_mean": 60.0, "age_sd": 18.0, "male_fraction": CPSC_MALE_FRACTION,
           "multi_record_patients": False, "noise": CPSC_NOISE, "seconds": CPSC_MAX_SECONDS,
           "dx_dialect": DX_DIALECTS[0]},
}


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the bytes of a synthetic tree (with ``GENERATOR_VERSION``).

    Fields left at None take the source's default (see ``_SOURCE_DEFAULTS``); ``noise`` is a
    :class:`NoiseConfig`, ``"default"`` (the source's: 50 Hz mains and cleaner baselines for PTB-XL,
    60 Hz and more wander and EMG for Georgia) or ``"off"`` (noise-free records at unit gain).
    ``priors`` override concept probabilities (see :mod:`ecgml.data.synth.labels`); for a CPSC tree they
    override class shares by abbreviation (``{"AF": 0.3}``, see :mod:`ecgml.data.synth.cpsc`). ``seconds`` is
    each record's length, or for a CPSC tree the longest (records are 6 s to ``seconds``); ``dx_dialect`` (CPSC
    only) writes ``#Dx:`` as abbreviations or SNOMED CT codes.
    """

    source: str
    n_records: int
    seed: int = 0
    sampling_rates: tuple[int, ...] | None = None
    seconds: float | None = None
    workers: int = 0
    progress: bool = True
    priors: tuple[tuple[str, float], ...] = ()
    noise: NoiseConfig | str | None = "default"
    age_mean: float | None = None
    age_sd: float | None = None
    male_fraction: float | None = None
    multi_record_patients: bool | None = None
    header_2020_fraction: float = 0.05
    gain_defect_fraction: float = 0.5
    duplicate_dx_fraction: float = 0.003
    chunk_size: int = 32
    dx_dialect: str | None = None

    def __post_init__(self) -> None:
        if self.source not in TREE_SOURCES:
            raise ValueError(f"unknown source {self.source!r}; choose one of {', '.join(TREE_SOURCES)}")
        if self.dx_dialect is not None and self.source != CPSC:
            raise ValueError(f"dx_dialect is an option of CPSC-shaped trees, not of {self.source}")
        defaults = _SOURCE_DEFAULTS[self.source]
        for name, value in defaults.items():
            if getattr(self, name) is None or (name == "noise" and getattr(self, name) == "default"):
                object.__setattr__(self, name, value)
        if self.noise in ("off", "none"):
            object.__setattr__(self, "noise", NoiseConfig.off())
        if not isinstance(self.noise, NoiseConfig):
            raise ValueError(f"noise must be 'default', 'off' or a NoiseConfig, not {self.noise!r}")
        object.__setattr__(self, "sampling_rates", tuple(sorted({int(r) for r in self.sampling_rates or ()})))
        object.__setattr__(self, "priors", tuple(sorted((str(k), float(v)) for k, v in dict(self.priors).items())))
        allowed = _RATES[self.source]
        if not self.sampling_rates or not set(self.sampling_rates) <= set(allowed):
            raise ValueError(f"{self.source} trees are written at {' and/or '.join(map(str, allowed))} Hz, "
                             f"not {self.sampling_rates}")
        if self.n_records < 1:
            raise ValueError(f"n_records must be at least 1, not {self.n_records}")
        if self.workers < 0 or self.chunk_size < 1:
            raise ValueError("workers must be >= 0 (0 = all cores) and chunk_size >= 1")
        shortest = CPSC_MIN_SECONDS if self.source == CPSC else 1.0
        if not shortest <= float(self.seconds or 0.0) <= 60.0:
            raise ValueError(f"seconds must be within {shortest:g}-60, not {self.seconds}")
        if self.dx_dialect is not None and self.dx_dialect not in DX_DIALECTS:
            raise ValueError(f"dx_dialect must be one of {', '.join(DX_DIALECTS)}, not {self.dx_dialect!r}")
        for name in ("male_fraction", "header_2020_fraction", "gain_defect_fraction", "duplicate_dx_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], not {value}")
        if self.age_sd is not None and self.age_sd < 0:
            raise ValueError("age_sd must be non-negative")
        if self.source == CPSC:
            check_class_weights(dict(self.priors))
        else:
            self.build_priors()  # validates the overrides

    @classmethod
    def for_source(cls, source: str, n_records: int, seed: int = 0, *,
                   priors: Mapping[str, float] | None = None,
                   noise: NoiseConfig | str | None = "default", **options: Any) -> SynthConfig:
        """A config from keyword options; ``noise=None`` means noise-free, like ``"off"``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown synth option(s) {', '.join(unknown)}; options: {', '.join(sorted(known))}")
        return cls(source=source, n_records=n_records, seed=seed, noise="off" if noise is None else noise,
                   priors=tuple((priors or {}).items()), **options)

    def build_priors(self) -> Priors:
        return Priors.build(self.source, dict(self.priors))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the options that cannot change the output (workers, progress, chunks)."""
        out = asdict(self)
        for name in ("workers", "progress", "chunk_size"):
            out.pop(name)
        if self.dx_dialect is None:  # PTB-XL and Georgia trees: their marker stays as it was
            out.pop("dx_dialect")
        out["priors"] = dict(self.priors)
        out["generator_version"] = GENERATOR_VERSION
        return out
