"""The one place that knows the 12-lead names and their order.

Every array ecgml hands downstream is ``float32[leads, samples]`` in this order (or a named subset of
it); readers map leads by name, never by position, because PTB-XL writes ``AVR`` and Georgia ``aVR``.
"""

from __future__ import annotations

from collections.abc import Sequence

STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)

#: Named subsets used by the lead-count experiments.
LEAD_SETS: dict[str, tuple[str, ...]] = {
    "12": STANDARD_LEADS,
    "6": ("I", "II", "III", "aVR", "aVL", "aVF"),
    "3": ("I", "II", "V2"),
    "2": ("I", "II"),
    "1": ("I",),
    "1-II": ("II",),
}

_CANONICAL = {name.upper(): name for name in STANDARD_LEADS}


class MissingLeadError(ValueError):
    """A record lacks a lead the caller asked for."""


class DuplicateLeadError(MissingLeadError):
    """A record names a lead it is asked for twice: which copy to read is a guess, so it is refused wherever
    a missing lead is (a subclass, so every caller that lists unreadable records lists these too)."""


def canonical_lead_name(name: str) -> str:
    """Return the standard spelling of a lead name (``AVR`` -> ``aVR``); unknown names pass unchanged."""
    return _CANONICAL.get(name.strip().upper(), name.strip())


def resolve_leads(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Turn ``"12"``, ``"3"``, ``"I,II,V2"`` or a list of names into validated standard lead names."""
    if isinstance(spec, str):
        if spec in LEAD_SETS:
            return LEAD_SETS[spec]
        names = [part for part in spec.split(",") if part.strip()]
    else:
        names = list(spec)
    resolved = tuple(canonical_lead_name(n) for n in names)
    unknown = [n for n in resolved if n not in STANDARD_LEADS]
    if unknown or not resolved:
        raise ValueError(
            f"unknown lead selection {spec!r}: leads must be among {', '.join(STANDARD_LEADS)} "
            f"or one of the named sets {', '.join(LEAD_SETS)}"
        )
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"lead selection {spec!r} names a lead twice")
    return resolved


def lead_index(available: Sequence[str], wanted: Sequence[str], where: str) -> list[int]:
    """Positions of ``wanted`` leads in a record's ``available`` leads, matched by name.

    ``where`` names the record in the error, so a user can find the file that lacks a lead. A wanted lead
    named twice is refused (:class:`DuplicateLeadError`): the answer would depend on which copy is read.
    """
    canonical = [canonical_lead_name(n) for n in available]
    position = {n: i for i, n in enumerate(canonical)}
    twice = [n for n in dict.fromkeys(wanted) if canonical.count(n) > 1]
    if twice:
        raise DuplicateLeadError(
            f"{where}: lead(s) {', '.join(twice)} appear more than once (the record has {', '.join(available)}); "
            "send each lead once"
        )
    missing = [n for n in wanted if n not in position]
    if missing:
        raise MissingLeadError(
            f"{where}: missing lead(s) {', '.join(missing)}; the record has {', '.join(available)}"
        )
    return [position[n] for n in wanted]
