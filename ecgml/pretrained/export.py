"""Write a shipped backbone: weights (float16 by default, to stay a few MB), metadata and its model card.

The benchmark that trains the real models calls :func:`export_pretrained` with the run's weights and the
facts only it knows (fold-9 figures, the command, the commit); everything else on the card is read from
the weights' own metadata, so the card cannot contradict the weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ecgml.io import atomic_write_stream
from ecgml.pretrained.card import ModelCard
from ecgml.pretrained.shipped import SHIPPED_DIR, PretrainedError, ShippedModel, sha256_of, verify
from ecgml.tracking.weights import (
    METADATA_FILE,
    STATE_FILE,
    WeightMetadata,
    WeightsError,
    load_state_dict,
    read_metadata,
)

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")
#: Largest magnitude float16 holds; a tensor beyond it (or one that would underflow badly) stays float32.
_FLOAT16_MAX = 65504.0


def _weights_folder(source: str | Path, scratch: Path) -> Path:
    """A local weights folder for ``source``: a folder, ``runs:/RUN_ID``, a bare run id, or ``models:/...``."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.name == STATE_FILE and path.is_file():
        return path.parent
    text = str(source)
    from ecgml.tracking.registry import MODEL_URI_TAG, RegistryError, download_weights, resolve
    from ecgml.tracking.store import tracking_client, tracking_uri

    if text.startswith("models:/"):
        try:
            return download_weights(resolve(text))
        except RegistryError as exc:
            raise PretrainedError(str(exc)) from None
    run_id = text.removeprefix("runs:/").strip("/")
    if not (text.startswith("runs:/") or (len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id))):
        raise PretrainedError(f"{source}: not a weights folder (metadata.json + {STATE_FILE}), a run id, "
                              "runs:/RUN_ID or models:/NAME/VERSION")
    import mlflow

    try:
        run = tracking_client().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise PretrainedError(f"{source}: neither a weights folder nor a run in the tracking store") from None
    uri = run.data.tags.get(MODEL_URI_TAG)
    if not uri:
        raise PretrainedError(f"run {run_id} logged no ecgml model (tag {MODEL_URI_TAG} missing)")
    mlflow.set_tracking_uri(tracking_uri())
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(scratch)))
    for metadata in sorted(local.rglob(METADATA_FILE)):
        if (metadata.parent / STATE_FILE).is_file():
            return metadata.parent
    raise PretrainedError(f"run {run_id}: its model {uri} holds no ecgml weights folder")


def _compact(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    if dtype == "float32":
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if dtype != "float16":
        raise PretrainedError(f"weights dtype {dtype!r}: choose float16 or float32")
    out = {}
    for key, value in state.items():
        fits = value.is_floating_point() and bool((value.abs() <= _FLOAT16_MAX).all())
        out[key] = value.half() if fits else value
    return out


def export_pretrained(
    source: str | Path,
    name: str,
    *,
    metrics: Mapping[str, float],
    command: str,
    commit: str,
    out_dir: str | Path = SHIPPED_DIR,
    data_release: str = "1.0.3",
    train_folds: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8),
    selection_folds: tuple[int, ...] = (9,),
    description: str = "",
    training: Mapping[str, Any] | None = None,
    dtype: str = "float16",
    overwrite: bool = False,
) -> Path:
    """Write ``<out_dir>/<name>/`` from a trained model and return the folder.

    ``source``: a weights folder (``metadata.json`` + ``state_dict.pt``), ``runs:/RUN_ID`` or a bare run id
    of a finished ecgml training run, or a ``models:/NAME/VERSION`` URI. ``metrics``: the fold-9 figures
    (e.g. ``{"val_macro_auc": 0.93, "val_macro_auc_low": 0.92, "val_macro_auc_high": 0.94}``); ``command``
    and ``commit``: what trained it, verbatim. ``training``: anything else worth stating (epochs, minutes,
    ensembling). The folder is built beside its destination and renamed into place, so a failure leaves
    no half-written model; an existing one is replaced only with ``overwrite``.
    """
    if not name or set(name) - _NAME_CHARS or name[0] in "-_.":
        raise PretrainedError(f"shipped model name {name!r}: use lower-case letters, digits, '-', '_' and '.'")
    if not command.strip() or not commit.strip():
        raise PretrainedError("a shipped model needs the exact command and the commit that trained it")
    out = Path(out_dir) / name
    if out.exists() and not overwrite:
        raise PretrainedError(f"{out}: exists; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=out.parent) as scratch_name:
        scratch = Path(scratch_name)
        folder = _weights_folder(source, scratch / "download")
        try:
            meta = read_metadata(folder)
            state = load_state_dict(folder)
        except WeightsError as exc:
            raise PretrainedError(str(exc)) from None
        build = scratch / name
        build.mkdir()
        atomic_write_stream(build / STATE_FILE, lambda handle: torch.save(_compact(state, dtype), handle))
        for file_name in (METADATA_FILE, "classes.json", "leads.json"):
            if (folder / file_name).is_file():
                shutil.copyfile(folder / file_name, build / file_name)
        card = ModelCard(
            name=name, task=meta.task, classes=meta.classes, fs=meta.fs, leads=meta.leads,
            input_samples=meta.input_samples, backbone=meta.backbone, backbone_kwargs=meta.backbone_kwargs,
            parameters=sum(int(v.numel()) for k, v in state.items() if v.is_floating_point()),
            metrics={k: float(v) for k, v in metrics.items()}, command=command.strip(), commit=commit.strip(),
            files={f.name: sha256_of(f) for f in sorted(build.iterdir())}, weights_dtype=dtype,
            data_release=data_release, train_folds=tuple(train_folds), selection_folds=tuple(selection_folds),
            description=description,
            inference=inference_text(meta),
            training=json.loads(json.dumps(dict(training or {}))))
        card.write(build)
        verify(ShippedModel(name, build, card))  # what a user's load will check, checked before it ships
        if out.exists():
            shutil.rmtree(out)
        build.rename(out)
    return out


def inference_text(meta: WeightMetadata) -> str:
    """The card's sentence on how the model is served: its windows, their stride and their aggregation."""
    return (f"sliding windows of {meta.input_samples} samples every {meta.stride} ({meta.window_protocol}), "
            f"window probabilities aggregated by {meta.aggregate}")
