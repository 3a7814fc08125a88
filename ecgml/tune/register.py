"""Register the best trial's model: like ``ecgml register``, but for the run the study chose rather than the
best run of a whole experiment (trials of other studies live there too).
"""

from __future__ import annotations

from typing import Any

LINEAGE_TAGS = ("dataset", "dataset_version", "cache_digest", "task", "label_map", "backbone", "git_commit",
                "ecgml.config_digest", "ecgml.backbone_version")
METRICS = ("best_val_macro_auc", "test_macro_auc", "test_macro_auprc", "test_fmax")


def register_trial_run(name: str, run_id: str, study_name: str, experiment: str, *,
                       best_number: int | None = None) -> Any:
    """Register the model logged by ``run_id`` as a new version of ``name``; returns its VersionInfo."""
    from ecgml.tracking.registry import MODEL_URI_TAG, RegistryError, register_run_model, show
    from ecgml.tracking.store import tracking_client

    run = tracking_client().get_run(run_id)
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise RegistryError(f"run {run_id} (the best trial of study {study_name!r}) logged no model")
    tags = {
        "ecgml.source_experiment": experiment,
        "ecgml.selected_by": f"optuna study {study_name} (best val_macro_auc)",
        "optuna.study_name": study_name,
        **({"optuna.trial_number": str(best_number)} if best_number is not None else {}),
        **{f"metric.{k}": f"{v:.6f}" for k, v in run.data.metrics.items() if k in METRICS},
        **{k: v for k, v in run.data.tags.items() if k in LINEAGE_TAGS},
    }
    return show(name, register_run_model(name, run_id, model_uri, tags))
