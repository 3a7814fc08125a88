"""A target's own label space: the codes its records carry often enough to learn and score.

For a Challenge collection or a user's folder no shared label map is needed: the classes are the target's own
SNOMED CT codes (or labels), every one with at least ``min_positives`` positive records, or an explicit list.
The classes kept and the ones dropped, each with its count, travel with the cache and every run, so which
classes a model knows is never a guess.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Positive records a class needs unless told otherwise.
DEFAULT_MIN_POSITIVES = 10


@dataclass(frozen=True)
class LabelSpace:
    """The classes kept (in order) with their positive counts, and those dropped with theirs."""

    classes: tuple[str, ...]
    counts: dict[str, int]
    dropped: dict[str, int]
    min_positives: int
    explicit: bool

    @property
    def name(self) -> str:
        """A short name that differs whenever the classes do (the cache stores one label matrix per name)."""
        digest = hashlib.sha256(json.dumps(list(self.classes)).encode()).hexdigest()[:10]
        return f"own-{digest}"

    def to_dict(self) -> dict[str, object]:
        return {"classes": list(self.classes), "counts": dict(self.counts), "dropped": dict(self.dropped),
                "min_positives": self.min_positives, "explicit": self.explicit}

    def dropped_text(self, describe: object = str) -> str:
        """``"164909002 (2), 427172004 (2)"``: what was left out and why, for messages."""
        return ", ".join(f"{describe(c)} ({n})" for c, n in sorted(self.dropped.items(), key=lambda kv: -kv[1]))  # type: ignore[operator]


def select_classes(codes: Iterable[Sequence[str]], *, min_positives: int = DEFAULT_MIN_POSITIVES,
                   classes: Sequence[str] = (), where: str = "the target") -> LabelSpace:
    """The label space of records carrying ``codes``: the explicit ``classes`` (each must occur), or every code
    with at least ``min_positives`` positive records, most frequent first (ties by code). It may be empty:
    ``ecgml data stats`` still shows the counts; training refuses it (:func:`empty_label_space_reason`)."""
    if min_positives < 1:
        raise ValueError(f"--min-positives must be at least 1, not {min_positives}")
    counts = Counter(code for record in codes for code in set(record))
    if classes:
        missing = [c for c in classes if counts.get(c, 0) == 0]
        if missing:
            raise ValueError(f"{where}: class(es) {', '.join(missing)} given with --classes have no positive record")
        kept = tuple(dict.fromkeys(classes))
        return LabelSpace(kept, {c: counts[c] for c in kept}, {c: n for c, n in counts.items() if c not in kept},
                          min_positives, True)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = tuple(c for c, n in ordered if n >= min_positives)
    dropped = {c: n for c, n in ordered if n < min_positives}
    return LabelSpace(kept, {c: counts[c] for c in kept}, dropped, min_positives, False)


def empty_label_space_reason(space: dict[str, object], where: str) -> str:
    """Why a label space (as :meth:`LabelSpace.to_dict` gives it) has no class: what to change."""
    dropped = dict(space.get("dropped") or {})  # type: ignore[call-overload]
    most = max(dropped.values()) if dropped else 0
    if not dropped:
        return f"{where}: no record carries a diagnosis; nothing to train on"
    return (f"{where}: no class has at least {space.get('min_positives')} positive records (--min-positives); the "
            f"most frequent has {most}; lower --min-positives or name classes with --classes")
