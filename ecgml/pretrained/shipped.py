"""The backbones that ship inside the package: find them, check them against their cards, load them.

Each lives in ``ecgml/pretrained/models/<name>/`` as an ecgml weights folder (``state_dict.pt``,
``metadata.json``, ``classes.json``, ``leads.json``) plus ``card.json`` and ``CARD.md``. The card holds the
SHA-256 of every file; loading refuses a file that does not match, names it, and says to reinstall.
Weights may be stored as float16 to stay small; :func:`load_shipped` restores them to float32.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ecgml.io import atomic_write_stream
from ecgml.pretrained.card import CARD_FILE, CARD_MARKDOWN, CardError, ModelCard
from ecgml.tracking.weights import (
    METADATA_FILE,
    STATE_FILE,
    WeightMetadata,
    WeightsError,
    load_state_dict,
    read_metadata,
)

#: Where the package keeps its shipped backbones.
SHIPPED_DIR = Path(__file__).with_name("models")


class PretrainedError(ValueError):
    """A shipped backbone that is unknown, damaged, or asked for something it was not trained for."""


@dataclass(frozen=True)
class ShippedModel:
    name: str
    folder: Path
    card: ModelCard


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_shipped(root: Path | None = None) -> list[ShippedModel]:
    """Every shipped backbone in ``root`` (default :data:`SHIPPED_DIR`), by name (cards are read, files are
    not hashed: see :func:`verify`)."""
    root = SHIPPED_DIR if root is None else root
    if not root.is_dir():
        return []
    found = []
    for card_path in sorted(root.glob(f"*/{CARD_FILE}")):
        try:
            card = ModelCard.read(card_path)
        except CardError as exc:
            raise PretrainedError(str(exc)) from None
        found.append(ShippedModel(card_path.parent.name, card_path.parent, card))
    return found


def find_shipped(name: str, root: Path | None = None, *, task: str | None = None) -> ShippedModel:
    """The shipped backbone ``name`` (not yet hashed: see :func:`verify`); ``task`` refuses one trained for
    another task."""
    root = SHIPPED_DIR if root is None else root
    models = {m.name: m for m in list_shipped(root)}
    if name not in models:
        known = ", ".join(models) or "none (this ecgml ships no pretrained backbone)"
        raise PretrainedError(f"no shipped backbone named {name!r} in {root}; shipped: {known}")
    model = models[name]
    if task is not None and task != model.card.task:
        others = [m.name for m in models.values() if m.card.task == task]
        hint = f"; for {task!r} use {', '.join(others)}" if others else f"; none is shipped for {task!r}"
        raise PretrainedError(f"{model.folder / CARD_FILE}: {name} was trained on task {model.card.task!r} "
                              f"({len(model.card.classes)} classes), not {task!r}{hint}")
    verify(model)
    return model


def verify(model: ShippedModel) -> WeightMetadata:
    """Every file the card vouches for has its SHA-256, and the metadata agrees with the card."""
    card_path = model.folder / CARD_FILE
    for required in (STATE_FILE, METADATA_FILE):
        if required not in model.card.files:
            raise PretrainedError(f"{card_path}: gives no SHA-256 for {required}")
    for file_name, expected in sorted(model.card.files.items()):
        path = model.folder / file_name
        if not path.is_file():
            raise PretrainedError(f"{path}: missing (listed in {card_path}); reinstall ecgml")
        got = sha256_of(path)
        if got != expected:
            raise PretrainedError(f"{path}: SHA-256 {got[:16]}... does not match {card_path} ({expected[:16]}...): "
                                  "the file was changed or damaged; reinstall ecgml")
    try:
        meta = read_metadata(model.folder)
    except WeightsError as exc:
        raise PretrainedError(str(exc)) from None
    card = model.card
    checks = {"task": (meta.task, card.task), "classes": (meta.classes, card.classes), "fs": (meta.fs, card.fs),
              "leads": (meta.leads, card.leads), "input_samples": (meta.input_samples, card.input_samples),
              "backbone": (meta.backbone, card.backbone)}
    wrong = [f"{key} {got!r} vs {want!r}" for key, (got, want) in checks.items() if got != want]
    if wrong:
        raise PretrainedError(f"{model.folder / METADATA_FILE} disagrees with {card_path}: {'; '.join(wrong)}")
    return meta


def float32_state(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's tensors (loaded with ``weights_only=True``) with floating ones restored to float32."""
    try:
        state = load_state_dict(folder)
    except WeightsError as exc:
        raise PretrainedError(str(exc)) from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_shipped(name: str, root: Path | None = None, *, task: str | None = None
                 ) -> tuple[nn.Module, WeightMetadata, ModelCard]:
    """The verified backbone in float32, in eval mode, with its metadata and card."""
    from ecgml.models import create_backbone

    model = find_shipped(name, root, task=task)
    meta = verify(model)
    net = create_backbone(meta.backbone, **meta.backbone_kwargs)
    missing, unexpected = net.load_state_dict(float32_state(model.folder), strict=False)
    if missing or unexpected:
        raise PretrainedError(f"{model.folder / STATE_FILE}: does not fit {meta.backbone}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    net.eval()
    return net, meta, model.card


def materialise(model: ShippedModel, dest: Path) -> Path:
    """A float32 ecgml weights folder at ``dest`` (what the registry logs), with the card beside it."""
    dest.mkdir(parents=True, exist_ok=True)
    state = float32_state(model.folder)
    atomic_write_stream(dest / STATE_FILE, lambda handle: torch.save(state, handle))
    for file_name in (METADATA_FILE, "classes.json", "leads.json", CARD_FILE, CARD_MARKDOWN):
        if (model.folder / file_name).is_file():
            shutil.copyfile(model.folder / file_name, dest / file_name)
    return dest
