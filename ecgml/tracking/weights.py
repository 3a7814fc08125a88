"""Weights with the metadata that must travel with them, saved as a folder and rebuilt exactly.

A folder holds ``state_dict.pt`` (tensors only, loaded with ``weights_only=True``), ``metadata.json``
(backbone name and arguments, sampling rate, input length, lead order, class list, per-lead
normalisation statistics, source dataset and version, cache digest, task, label map), and the
explicit vocabularies ``classes.json`` and ``leads.json``. Fine-tuning reads the metadata and checks it
against the target data instead of assuming.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecgml.io import atomic_write_json, atomic_write_stream

STATE_FILE = "state_dict.pt"
METADATA_FILE = "metadata.json"


class WeightsError(RuntimeError):
    """Weights that cannot be used as asked: missing, tampered, or not matching the target data."""


@dataclass(frozen=True)
class WeightMetadata:
    backbone: str
    backbone_kwargs: dict[str, Any]
    num_classes: int
    fs: int
    input_samples: int
    leads: tuple[str, ...]
    classes: tuple[str, ...]
    norm_mean: tuple[float, ...]
    norm_std: tuple[float, ...]
    source: str
    dataset_version: str
    cache_digest: str
    task: str
    label_map: str
    aggregate: str = "max"
    input_domain: str = "time"
    #: Samples between the windows the model is evaluated and served on (None: half a window, as weights
    #: saved before the stride was stored were evaluated).
    window_stride: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stride(self) -> int:
        """Samples between serving windows: the stored stride, else half a window (``default_stride``)."""
        from ecgml.data.windows import default_stride

        return self.window_stride if self.window_stride is not None else default_stride(self.input_samples)

    @property
    def window_protocol(self) -> str:
        """``max-half``, ``mean-disjoint`` or ``custom`` (see ``ecgml.data.windows.WINDOW_PROTOCOLS``)."""
        from ecgml.data.windows import protocol_of

        return protocol_of(self.aggregate, self.stride, self.input_samples)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["leads"], d["classes"] = list(self.leads), list(self.classes)
        d["norm_mean"], d["norm_std"] = list(self.norm_mean), list(self.norm_std)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WeightMetadata:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise WeightsError(f"metadata has unknown field(s) {unknown}: written by a newer ecgml?")
        d = dict(d)
        for key in ("leads", "classes", "norm_mean", "norm_std"):
            d[key] = tuple(d[key])
        return cls(**d)


def save_weights(folder: str | os.PathLike[str], model: nn.Module, metadata: WeightMetadata) -> Path:
    """Write the weights folder (each file atomically; a full disk leaves the previous files and names
    the one that failed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write_stream(folder / STATE_FILE, lambda handle: torch.save(state, handle))
    atomic_write_json(folder / "classes.json", list(metadata.classes))
    atomic_write_json(folder / "leads.json", list(metadata.leads))
    atomic_write_json(folder / METADATA_FILE, metadata.to_json())
    return folder


def read_metadata(folder: str | os.PathLike[str]) -> WeightMetadata:
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        raise WeightsError(f"{path}: missing; {folder} is not an ecgml weights folder")
    return WeightMetadata.from_json(json.loads(path.read_text(encoding="utf-8")))


def load_state_dict(folder: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a weights folder; anything but tensors in the file is refused."""
    path = Path(folder) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: missing") from None
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"{path}: refused, holds objects other than tensors (tampered?): {exc}") from None
    except (RuntimeError, EOFError) as exc:
        raise WeightsError(f"{path}: unreadable ({exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state_dict of tensors")
    return state


def load_model(folder: str | os.PathLike[str]) -> tuple[nn.Module, WeightMetadata]:
    """Rebuild the model from its constructor name and arguments, then load its weights."""
    metadata = read_metadata(folder)
    return build_model(metadata, load_state_dict(folder), where=str(folder)), metadata


def build_model(metadata: WeightMetadata, state: Mapping[str, torch.Tensor], *, where: str) -> nn.Module:
    """The model ``metadata`` describes, holding ``state`` (read from a weights folder, or handed over by
    another rank); ``where`` names the weights in the error when they do not fit."""
    from ecgml.models import create_backbone

    model = create_backbone(metadata.backbone, **metadata.backbone_kwargs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{where}: weights do not fit {metadata.backbone}({metadata.backbone_kwargs}): "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    return model

