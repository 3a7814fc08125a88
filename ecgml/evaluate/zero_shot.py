"""Zero-shot: a model's own classes scored on a target's classes where their SNOMED CT codes meet, with no training.

Every class of a label space stands for a set of SNOMED CT codes: a target's own codes (``cinc``, ``folder``)
stand for themselves, the shared classes for their label map's codes, and a PTB-XL statement for the code the
Challenge converted it to (:func:`ecgml.data.labels.scp_snomed_codes`). A target class is scored by the model's
classes whose codes meet its codes, or a code the Challenge scores as the same diagnosis
(:func:`ecgml.data.dx_mapping.scored_as_same`: RBBB 59118001 = complete RBBB 713427006, ...); several such
classes are combined by their highest probability (the record has the target's diagnosis if it has any of
them). Target classes no model class meets are listed, not scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecgml.data.dx_mapping import describe, scored_as_same
from ecgml.data.labels import OWN_TASK, SHARED_TASK, STATEMENT_TASKS, load_label_map, scp_snomed_codes

#: How several model classes that meet one target class are combined.
COMBINE = "max"


class ZeroShotError(ValueError):
    """A model's classes cannot be mapped onto a target's; the message says why."""


def class_codes(task: str, label_map: str, classes: Sequence[str]) -> dict[str, frozenset[str]]:
    """The SNOMED CT codes each class of a label space stands for (empty: a statement with no equivalent).

    A task whose classes group PTB-XL statements (``superdiagnostic``, ``subdiagnostic``) is refused: a group of
    statements has no one SNOMED CT equivalent.
    """
    if task == OWN_TASK:
        return {c: frozenset({c}) for c in classes}
    if task == SHARED_TASK:
        lmap = load_label_map(label_map)
        return {c: frozenset(lmap.snomed_codes.get(c, ())) for c in classes}
    if task in STATEMENT_TASKS:
        statements = scp_snomed_codes()
        return {c: frozenset(statements.get(c, ())) for c in classes}
    raise ZeroShotError(f"task {task!r} groups PTB-XL statements into classes ({', '.join(classes[:4])}...), which "
                        f"have no SNOMED CT equivalent: zero-shot needs a model of statements (task "
                        f"{', '.join(STATEMENT_TASKS)}) or of the shared classes ({SHARED_TASK})")


@dataclass(frozen=True)
class ZeroShotMap:
    """Which model classes score each target class."""

    model_classes: tuple[str, ...]
    #: The target classes scored, in the target's order.
    classes: tuple[str, ...]
    #: Target class -> the model classes combined for it (by :data:`COMBINE`).
    sources: Mapping[str, tuple[str, ...]]
    #: Target classes no model class has an equivalent of.
    unmatched: tuple[str, ...]

    def probabilities(self, model_probs: np.ndarray) -> np.ndarray:
        """``[records, model classes]`` -> ``[records, classes]``: each target class the highest probability of
        its model classes."""
        index = {c: i for i, c in enumerate(self.model_classes)}
        columns = [model_probs[:, [index[m] for m in self.sources[c]]].max(axis=1) for c in self.classes]
        return np.stack(columns, axis=1) if columns else np.zeros((len(model_probs), 0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, logged with a zero-shot run: what was scored from what, and what could not be."""
        return {"combined_by": COMBINE, "classes": list(self.classes),
                "from": {c: list(self.sources[c]) for c in self.classes},
                "no_equivalent": [{"class": c, "description": describe(c)} for c in self.unmatched]}


def zero_shot_map(model_codes: Mapping[str, frozenset[str]], target_codes: Mapping[str, frozenset[str]]
                  ) -> ZeroShotMap:
    """Each target class against the model classes whose codes meet its codes or their scored equivalents."""
    same = scored_as_same()
    sources: dict[str, tuple[str, ...]] = {}
    unmatched: list[str] = []
    for target, codes in target_codes.items():
        wanted = frozenset().union(*(same.get(code, frozenset({code})) for code in codes)) if codes else frozenset()
        found = tuple(m for m, mine in model_codes.items() if mine & wanted)
        if found:
            sources[target] = found
        else:
            unmatched.append(target)
    return ZeroShotMap(tuple(model_codes), tuple(sources), sources, tuple(unmatched))
