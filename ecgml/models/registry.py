"""One registry of model constructors (timm-style): adding a model is one decorated entry function.

    @register_backbone(tiny={"width": 0.125, "num_classes": 5})
    def xresnet1d50(**kwargs): ...

    model = create_backbone("xresnet1d50", in_channels=12, num_classes=71, width=0.25)
    spec = model.constructor                       # {"name": "xresnet1d50", "kwargs": {...}}, JSON-ready
    clone = rebuild_backbone(spec, model.state_dict())

Entry functions take keyword arguments only, so ``name`` + ``kwargs`` rebuild a model exactly (the entry's
defaults are pinned by the reference-output test). ``tiny`` holds the kwargs of a tiny, CPU-cheap instance that
the tests (and smoke runs) build for every registered backbone. Nothing happens at import beyond registration.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar, overload

import torch

from ecgml.models.base import Backbone, BackboneSpec

B = TypeVar("B", bound=Backbone)


@dataclass(frozen=True)
class BackboneEntry:
    """A registered entry function, its family (module name) and the kwargs of its tiny test instance."""

    name: str
    fn: Callable[..., Backbone]
    family: str
    tiny: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""


_REGISTRY: dict[str, BackboneEntry] = {}


def _json_kwargs(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The kwargs as they will read back from JSON (tuples become lists); non-JSON values are refused early,
    because a constructor that cannot travel with the weights cannot rebuild them."""
    try:
        return json.loads(json.dumps(dict(kwargs), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TypeError(f"backbone {name!r}: keyword arguments must be JSON values so the architecture can be "
                        f"saved beside the weights ({err})") from None


@overload
def register_backbone(fn: Callable[..., B], /) -> Callable[..., B]: ...
@overload
def register_backbone(*, name: str | None = None, family: str | None = None,
                      tiny: Mapping[str, Any] | None = None) -> Callable[[Callable[..., B]], Callable[..., B]]: ...
def register_backbone(fn: Callable[..., B] | None = None, /, *, name: str | None = None, family: str | None = None,
                      tiny: Mapping[str, Any] | None = None) -> Any:
    """Registers an entry function under its name (or ``name``); usable bare or with arguments.

    ``family`` defaults to the defining module's last component (``xresnet1d``, ``resnet1d``, ...). The returned
    function records its name and keyword arguments on every model it builds (``model.constructor``).
    """

    def decorate(f: Callable[..., B]) -> Callable[..., B]:
        entry_name = name or f.__name__
        fam = family or f.__module__.rsplit(".", 1)[-1]

        @functools.wraps(f)
        def build(**kwargs: Any) -> B:
            spec_kwargs = _json_kwargs(entry_name, kwargs)
            model = f(**kwargs)
            if not isinstance(model, Backbone):
                raise TypeError(f"entry {entry_name!r} returned {type(model).__name__}, not an ecgml Backbone")
            model._set_constructor(BackboneSpec(entry_name, spec_kwargs))
            return model

        old = _REGISTRY.get(entry_name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (f.__module__, f.__qualname__):
            raise ValueError(f"backbone {entry_name!r} is already registered by {old.fn.__module__}")
        doc = (f.__doc__ or "").strip().splitlines()
        _REGISTRY[entry_name] = BackboneEntry(entry_name, build, fam, MappingProxyType(dict(tiny or {})),
                                              doc[0] if doc else "")
        return build

    return decorate(fn) if fn is not None else decorate


def _unknown(name: str) -> ValueError:
    names = sorted(_REGISTRY)
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ValueError(f"unknown backbone {name!r}{hint}; registered backbones: {', '.join(names) or 'none'}")


def get_backbone_entry(name: str) -> BackboneEntry:
    """The registry entry for ``name``; ValueError listing the registered names if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise _unknown(name) from None


def create_backbone(name: str, **kwargs: Any) -> Backbone:
    """Builds the registered backbone ``name`` with keyword arguments (in_channels, num_classes, width, ...)."""
    return get_backbone_entry(name).fn(**kwargs)


#: What the data sets: a backbone's inputs are the record's leads, its outputs the task's classes.
_SET_BY_THE_DATA = ("in_channels", "num_classes")


def check_backbone_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse, as a ValueError naming each bad key and the keys the backbone takes, keyword arguments its
    constructor would reject with a TypeError (checked by building it once, a fraction of a second, so a
    typo fails before any data is read or any run is opened)."""
    import inspect
    import re

    entry = get_backbone_entry(name)
    clash = [k for k in _SET_BY_THE_DATA if k in kwargs]
    if clash:
        raise ValueError(f"--backbone-kwargs: {' and '.join(clash)} {'is' if len(clash) == 1 else 'are'} set by the "
                         "data (leads, classes), not by hand")
    try:
        entry.fn(**kwargs)
    except TypeError as exc:
        model = entry.fn()
        taken = [p for p in inspect.signature(type(model).__init__).parameters
                 if p not in ("self", "args", "kwargs", *_SET_BY_THE_DATA)]
        found = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        unknown = [found.group(1)] if found else [k for k in kwargs if k not in taken]
        if unknown:
            raise ValueError(f"--backbone-kwargs: backbone {name!r} takes no argument {', '.join(map(repr, unknown))} "
                             f"(it takes {', '.join(taken)})") from None
        raise ValueError(f"--backbone-kwargs: backbone {name!r} refused {dict(kwargs)}: {exc}") from None


def list_backbones(family: str | None = None) -> list[str]:
    """Registered names, sorted; only those of ``family`` if given (ValueError for an unknown family)."""
    if family is not None and family not in list_families():
        raise ValueError(f"unknown backbone family {family!r}; families: {', '.join(list_families())}")
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def list_families() -> list[str]:
    """Families that have at least one registered backbone."""
    return sorted({e.family for e in _REGISTRY.values()})


#: What a family's module name ends with that its comparison name leaves out (``xresnet1d`` -> ``xresnet``).
_FAMILY_SUFFIX = "1d"


def family_of(backbone: str) -> str:
    """The family runs of ``backbone`` are tagged and compared by: its entry's family without the ``1d`` of the
    module name (``xresnet1d50_small`` -> ``xresnet``, ``resnet1d_wang`` -> ``resnet``); a name that is not
    registered stands for itself, so a run of an unknown architecture is never put in another's family."""
    entry = _REGISTRY.get(backbone)
    if entry is None:
        return backbone
    return entry.family.removesuffix(_FAMILY_SUFFIX) or entry.family


def family_rank(family: str, order: tuple[str, ...]) -> tuple[int, str]:
    """Sort key of a family: its place among the families of the backbones ``order`` names (e.g. the standalone
    trio), families not among them after, by name."""
    ranked = list(dict.fromkeys(family_of(name) for name in order))
    return (ranked.index(family) if family in ranked else len(ranked), family)


def rebuild_backbone(spec: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None = None,
                     *, strict: bool = True) -> Backbone:
    """Rebuilds a model from ``model.constructor`` (e.g. read back from JSON), loading ``state_dict`` if given."""
    if not isinstance(spec, Mapping) or set(spec) != {"name", "kwargs"}:
        raise ValueError(f"a backbone spec is {{'name': str, 'kwargs': dict}}, got {spec!r}")
    model = create_backbone(spec["name"], **dict(spec["kwargs"]))
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=strict)
    return model
