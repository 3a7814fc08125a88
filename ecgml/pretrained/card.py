"""The model card of a shipped backbone: one JSON file for machines, the same facts rendered as Markdown.

A card says what a user needs before trusting the weights: which data release and folds trained and
selected it, its task and classes, what input it takes (rate, leads, window, units) and how that input is
prepared, its fold-9 figures, the exact command and commit that trained it, the SHA-256 of every file it
vouches for, and the data's licence and citations.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecgml.io import atomic_write_json, atomic_write_text

CARD_FILE = "card.json"
CARD_MARKDOWN = "CARD.md"
CARD_VERSION = 1

#: The data every shipped backbone was trained on is PTB-XL: its licence and the citations it asks for.
LICENCE = "CC BY 4.0 (the PTB-XL data the weights were trained on; https://creativecommons.org/licenses/by/4.0/)"
CITATIONS: tuple[str, ...] = (
    "Wagner, P., Strodthoff, N., Bousseljot, R.-D., Kreiseler, D., Lunze, F. I., Samek, W., Schaeffter, T. "
    "PTB-XL, a large publicly available electrocardiography dataset. Scientific Data 7, 154 (2020). "
    "https://doi.org/10.1038/s41597-020-0495-6",
    "Goldberger, A. L. et al. PhysioBank, PhysioToolkit, and PhysioNet: components of a new research resource "
    "for complex physiologic signals. Circulation 101(23), e215-e220 (2000).",
)


class CardError(ValueError):
    """A card that cannot be read or does not describe its files; the message names the file."""


@dataclass(frozen=True)
class ModelCard:
    """Everything the shipped files promise. ``files`` maps each file name to its SHA-256."""

    name: str
    task: str
    classes: tuple[str, ...]
    fs: int
    leads: tuple[str, ...]
    input_samples: int
    backbone: str
    backbone_kwargs: dict[str, Any]
    parameters: int
    metrics: dict[str, float]
    command: str
    commit: str
    files: dict[str, str]
    weights_dtype: str
    dataset: str = "PTB-XL"
    data_release: str = "1.0.3"
    train_folds: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    selection_folds: tuple[int, ...] = (9,)
    units: str = "mV"
    preprocessing: str = ("records read in millivolts at 100 Hz (PTB-XL's records100 files), no filter; "
                          "serving resamples any higher rate to the model's rate (polyphase, anti-aliased)")
    normalisation: str = "per-lead standardisation with the mean and std of the training folds (metadata.json)"
    #: How the model is served; the exporter writes the model's own stride and aggregation here.
    inference: str = "sliding windows of the input length every half window, window probabilities aggregated"
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    licence: str = LICENCE
    citations: tuple[str, ...] = CITATIONS
    card_version: int = CARD_VERSION

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("classes", "leads", "train_folds", "selection_folds", "citations"):
            d[key] = list(d[key])
        return d

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CardError(f"{path}: missing") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CardError(f"{path}: unreadable ({exc})") from None
        if not isinstance(d, dict):
            raise CardError(f"{path}: not a card (a JSON object is expected)")
        if d.get("card_version") != CARD_VERSION:
            raise CardError(f"{path}: card version {d.get('card_version')!r}, this ecgml reads {CARD_VERSION}")
        fields = cls.__dataclass_fields__
        unknown = sorted(set(d) - set(fields))
        missing = sorted(f for f, spec in fields.items()
                         if f not in d and spec.default is MISSING and spec.default_factory is MISSING)
        if unknown or missing:
            raise CardError(f"{path}: unknown field(s) {unknown}, missing field(s) {missing}")
        for key in ("classes", "leads", "train_folds", "selection_folds", "citations"):
            d[key] = tuple(d.get(key, getattr(cls, key, ())))
        return cls(**d)

    def write(self, folder: Path) -> None:
        """``card.json`` and ``CARD.md`` into ``folder``, each atomically."""
        atomic_write_json(folder / CARD_FILE, self.to_json())
        atomic_write_text(folder / CARD_MARKDOWN, render_markdown(self))


def _metric_rows(metrics: dict[str, float]) -> list[str]:
    return [f"| {key} | {value:.4f} |" for key, value in sorted(metrics.items())]


def render_markdown(card: ModelCard) -> str:
    """The card for people, generated from the same fields (never edited by hand)."""
    folds = ", ".join(map(str, card.train_folds))
    lines = [
        f"# {card.name}",
        "",
        card.description or f"{card.backbone} pretrained on {card.dataset} {card.data_release}, task `{card.task}`.",
        "",
        "## Data",
        f"- {card.dataset} release {card.data_release}; trained on folds {folds}, epoch/model selected on "
        f"fold(s) {', '.join(map(str, card.selection_folds))}; the test fold 10 was not used.",
        f"- Task `{card.task}`, {len(card.classes)} classes: {', '.join(card.classes)}.",
        "",
        "## Input",
        f"- {card.fs} Hz, {len(card.leads)} leads ({', '.join(card.leads)}), windows of {card.input_samples} "
        f"samples ({card.input_samples / card.fs:g} s), in {card.units}.",
        f"- Preprocessing: {card.preprocessing}.",
        f"- Normalisation: {card.normalisation}.",
        f"- Inference: {card.inference}.",
        "",
        "## Model",
        f"- `{card.backbone}` {json.dumps(card.backbone_kwargs, sort_keys=True)}, {card.parameters:,} parameters, "
        f"stored as {card.weights_dtype} (restored to float32 on load).",
        "",
        "## Fold-9 figures",
        "| metric | value |",
        "|---|---|",
        *_metric_rows(card.metrics),
        "",
        "## How it was trained",
        "```",
        card.command,
        "```",
        f"at commit `{card.commit}`."
        + (f" Details: {json.dumps(card.training, sort_keys=True)}." if card.training else ""),
        "",
        "## Files (SHA-256)",
        *[f"- `{name}` {digest}" for name, digest in sorted(card.files.items())],
        "",
        "## Licence and citation",
        f"{card.licence}. Cite:",
        "",
        *[f"- {citation}" for citation in card.citations],
        "",
    ]
    return "\n".join(lines)
