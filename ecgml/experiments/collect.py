"""Read a study's sweep runs back from MLflow into tidy tables, with lazy loaders for their artifacts.

The tags of :mod:`ecgml.experiments.schema` are the only thing read to know what a run is; metrics come from
the run itself, per-record predictions and JSON documents are downloaded only when the report asks for them
(and once: they are cached in a local folder).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ecgml.experiments import schema
from ecgml.experiments.crossval import CV_FOLD_TAG, CV_TAG, OOF_FILE, cv_of
from ecgml.experiments.schema import FINETUNE, PRETRAIN, STANDALONE
from ecgml.io import process_scratch_dir

METRICS = ("test_macro_auc", "test_macro_auc_low", "test_macro_auc_high", "best_val_macro_auc", "test_macro_auprc",
           "test_fmax")
CALIBRATION_METRICS = ("test_macro_ece_before", "test_macro_ece_after", "test_macro_mce_before",
                       "test_macro_mce_after", "test_macro_brier_before", "test_macro_brier_after",
                       "test_macro_ece_after_single", "test_macro_ece_after_per_class", "test_macro_ece_after_platt",
                       "val_logit_sd", "calibration_warnings")
TRAINING_KINDS = (PRETRAIN, STANDALONE, FINETUNE)
RUN_COLUMNS = ("run_id", "run_name", "parent_run_id", "kind", "sweep", "protocol", "arm", "family", "backbone",
               "setting", "setting_label", "seed", "start_time", "backbone_run_id", "dataset")


class CollectError(RuntimeError):
    """The runs cannot be read as asked (no such experiment, parent run or sweep); the message says what exists."""


class ArtifactMissingError(FileNotFoundError):
    """A run lacks an artifact the report needs; the message names the run, what it is, and the artifact."""


def setting_label(setting: dict[str, Any]) -> str:
    """``{"target_fraction": 0.1, "ptbxl_fraction": 0.5}`` -> ``target_fraction=0.1, ptbxl_fraction=0.5``."""
    return ", ".join(f"{k}={v}" for k, v in sorted(setting.items())) or "(default)"


def _tag(row: pd.Series, name: str) -> Any:
    value = row.get(f"tags.{name}")
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow progress bar per downloaded file (hundreds of them would drown the report's own progress)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _say(message: str) -> None:
    sys.stderr.write(f"[ecgml report] {message}\n")


@dataclass
class Collected:
    """The runs of one or more sweeps, tidy, and the artifacts behind them on demand.

    ``runs``: one row per finished training child run (pretrain, standalone, finetune), with the setting's
    values also as columns of their own; a cross-validated one (``--cv K``) is its parent run, ``cv`` its K (its
    fold runs are parts of it, not runs of the sweep). ``calibrations``: one row per finished calibration run.
    ``sweeps``: the parent sweep runs. ``skipped``: child runs left out because they had not finished
    (status RUNNING, FAILED, KILLED, SCHEDULED). ``ignored``: runs left out for another reason, with it.
    """

    experiment: str
    experiment_id: str
    tracking_uri: str
    runs: pd.DataFrame
    calibrations: pd.DataFrame
    sweeps: pd.DataFrame
    skipped: pd.DataFrame
    ignored: list[tuple[str, str]] = field(default_factory=list)
    cache_dir: Path = field(default_factory=lambda: process_scratch_dir("ecgml-report-"))
    _memo: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    # ---- artifacts -------------------------------------------------------------------------------------------
    def describe(self, run_id: str) -> str:
        """A short human name of a run for messages: ``finetune xresnet target_fraction=0.1 seed 0 (abc123)``."""
        for frame in (self.runs, self.calibrations):
            hit = frame[frame["run_id"] == run_id] if len(frame) else frame
            if len(hit):
                r = hit.iloc[0]
                kind = "calibration of " if frame is self.calibrations else ""
                return f"{kind}{r['arm']} {r['family']} {r['setting_label']} seed {r['seed']} ({run_id[:8]})"
        return run_id

    def download(self, run_id: str, path: str) -> Path:
        """A local copy of one artifact of a run, downloaded once into ``cache_dir``."""
        key = (run_id, f"file:{path}")
        if key in self._memo:
            return self._memo[key]
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        dst = self.cache_dir / run_id
        dst.mkdir(parents=True, exist_ok=True)
        try:
            with _quiet_downloads():
                local = Path(MlflowClient(self.tracking_uri).download_artifacts(run_id, path, str(dst)))
        except (MlflowException, OSError) as exc:  # both mean the artifact cannot be had
            raise ArtifactMissingError(f"run {self.describe(run_id)} has no artifact {path!r} "
                                       f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                                       ) from None
        if not local.is_file():
            raise ArtifactMissingError(f"run {self.describe(run_id)}: artifact {path!r} is not a file")
        self._memo[key] = local
        return local

    def _json(self, run_id: str, path: str) -> Any:
        key = (run_id, f"json:{path}")
        if key not in self._memo:
            self._memo[key] = json.loads(self.download(run_id, path).read_text())
        return self._memo[key]

    def _csv(self, run_id: str, path: str) -> pd.DataFrame:
        key = (run_id, f"csv:{path}")
        if key not in self._memo:
            self._memo[key] = pd.read_csv(self.download(run_id, path), dtype={"record_id": str})
        return self._memo[key]

    def predictions(self, run_id: str, split: str = "test") -> pd.DataFrame:
        """``eval/predictions_<split>.csv`` of a training run: record_id, fold, true_<class>, prob_<class>. The test
        predictions of a cross-validation are its pooled out-of-fold ones (``oof_predictions.csv``, the same
        columns), every record tested once, in its fold."""
        if split == "test" and self.cross_validation_k(run_id):
            return self._csv(run_id, OOF_FILE)
        return self._csv(run_id, f"eval/predictions_{split}.csv")

    def cross_validation_k(self, run_id: str) -> int:
        """K of a collected cross-validation parent run, 0 for any other run."""
        if not len(self.runs) or "cv" not in self.runs:
            return 0
        hit = self.runs.loc[self.runs["run_id"] == run_id, "cv"]
        return cv_of(hit.iloc[0]) if len(hit) else 0

    def metrics_json(self, run_id: str) -> dict[str, Any]:
        """``metrics.json`` of a training run (per-class AUC among others)."""
        return self._json(run_id, "metrics.json")

    def classes(self, run_id: str) -> list[str]:
        """``classes.json`` of a training run."""
        return list(self._json(run_id, "classes.json"))

    def calibration_json(self, calibration_run_id: str) -> dict[str, Any]:
        """``calibration/calibration.json`` of a calibration run."""
        return self._json(calibration_run_id, "calibration/calibration.json")

    def calibrated_predictions(self, calibration_run_id: str) -> pd.DataFrame:
        """``calibration/predictions_test_calibrated.csv`` of a calibration run."""
        return self._csv(calibration_run_id, "calibration/predictions_test_calibrated.csv")

    def run_metric(self, run_id: str, key: str) -> float | None:
        """A metric of any run by id (e.g. the pretraining run a fine-tuned run names), None if absent."""
        memo = (run_id, f"metric:{key}")
        if memo not in self._memo:
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient

            try:
                self._memo[memo] = MlflowClient(self.tracking_uri).get_run(run_id).data.metrics.get(key)
            except MlflowException as exc:
                if not _missing(exc):
                    raise  # an outage is not an absent run: the report must not silently drop it
                self._memo[memo] = None
        return self._memo[memo]


def _search(experiment_id: str, filter_string: str) -> pd.DataFrame:
    import mlflow

    return mlflow.search_runs(experiment_ids=[experiment_id], filter_string=filter_string, output_format="pandas",
                              max_results=100_000)


def _missing(exc: Exception) -> bool:
    """An MLflow error that says the run or artifact does not exist (not that the store could not be reached)."""
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _listed_children(client: Any, run_id: str, log: Callable[[str], None]) -> set[str]:
    """Run ids a sweep run lists in ``children.json`` (reused runs stay children of the sweep that made them).

    A sweep run without the file (an older one, or one still running) lists none, and the log says what that leaves
    out; a file that cannot be read, or a store that cannot be reached, is an error, not an empty list.
    """
    if "children.json" not in {a.path for a in client.list_artifacts(run_id)}:
        log(f"sweep run {run_id[:8]} has no children.json (an older or unfinished sweep run): runs it reused from "
            "earlier sweep runs are not included")
        return set()
    try:
        with _quiet_downloads(), tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, "children.json", tmp)
            listed = json.loads(Path(local).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CollectError(f"children.json of sweep run {run_id} cannot be read ({type(exc).__name__}: {exc})"
                           ) from None
    if not isinstance(listed, list):
        raise CollectError(f"children.json of sweep run {run_id} is not a list of runs")
    return {str(c["run_id"]) for c in listed if isinstance(c, dict) and c.get("run_id")}


def _ancestors(run_id: str, parents: dict[str, str | None]) -> list[str]:
    chain, seen = [], {run_id}
    current = parents.get(run_id)
    while current and current not in seen:
        chain.append(current)
        seen.add(current)
        current = parents.get(current)
    return chain


#: Setting keys older stores wrote before the target became a role, and the names they read back as (the
#: inverse of :data:`ecgml.experiments.study.LEGACY_SETTING_KEYS`).
OLD_SETTING_KEYS: dict[str, str] = {"g12ec_fraction": "target_fraction"}


def _setting(text: Any) -> dict[str, Any] | None:
    """A run's swept setting, old key names (``g12ec_fraction``) read under today's (``target_fraction``)."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    return {OLD_SETTING_KEYS.get(k, k): v for k, v in value.items()}


def _tidy(raw: pd.DataFrame, metric_names: Sequence[str], extra_tags: dict[str, str]
          ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """One row per run with the schema tags decoded; runs whose tags cannot be read are returned apart."""
    rows: list[dict[str, Any]] = []
    ignored: list[tuple[str, str]] = []
    for _, r in raw.iterrows():
        setting = _setting(_tag(r, schema.SETTING))
        seed = _tag(r, schema.SEED)
        missing = [name for name in (schema.SWEEP, schema.ARM, schema.FAMILY, schema.SETTING, schema.SEED)
                   if _tag(r, name) is None]
        if missing:
            ignored.append((r["run_id"], f"no tag {', '.join(missing)}"))
            continue
        if setting is None:
            ignored.append((r["run_id"], f"tag {schema.SETTING} is not a JSON object: {_tag(r, schema.SETTING)!r}"))
            continue
        try:
            seed_int = int(seed)
        except ValueError:
            ignored.append((r["run_id"], f"tag {schema.SEED} is not an integer: {seed!r}"))
            continue
        row: dict[str, Any] = {
            "run_id": r["run_id"], "run_name": _tag(r, "mlflow.runName"),
            "parent_run_id": _tag(r, "mlflow.parentRunId"), "kind": _tag(r, schema.KIND),
            "sweep": _tag(r, schema.SWEEP), "protocol": _tag(r, schema.PROTOCOL) or "standard",
            "arm": _tag(r, schema.ARM), "family": _tag(r, schema.FAMILY), "backbone": _tag(r, "backbone"),
            "setting": schema.setting_tag(setting), "setting_label": setting_label(setting), "seed": seed_int,
            "start_time": r.get("start_time"), "backbone_run_id": _tag(r, "ecgml.backbone_run_id"),
            "dataset": _tag(r, schema.DATASET),
        }
        row.update({column: _tag(r, tag) for column, tag in extra_tags.items()})
        for key, value in setting.items():
            if key in row:
                raise CollectError(f"run {r['run_id']}: setting key {key!r} collides with a column of the runs table")
            row[key] = value
        for name in metric_names:
            value = r.get(f"metrics.{name}")
            row[name] = float(value) if value is not None and not pd.isna(value) else float("nan")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=[*RUN_COLUMNS, *extra_tags, *metric_names])
    return frame, ignored


def _latest(frame: pd.DataFrame, key: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latest run of each key, and the older ones it supersedes (a sweep run twice, a retried run)."""
    if frame.empty:
        return frame, frame
    ordered = frame.sort_values("start_time", ascending=False, kind="stable")
    dup = ordered.duplicated(subset=key, keep="first")
    return ordered[~dup].sort_index(), ordered[dup]


def _experiment(client: Any, uri: str, experiment: str, parent_run_id: str | None) -> Any:
    """The experiment by name, after checking that ``parent_run_id`` (if given) is one of its runs."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise CollectError(f"no experiment {experiment!r} in tracking store {uri} "
                           f"(it has: {', '.join(names) or 'none'})")
    if parent_run_id is not None:
        from mlflow.exceptions import MlflowException

        try:
            parent = client.get_run(parent_run_id)
        except MlflowException as exc:
            if not _missing(exc):
                raise
            raise CollectError(f"no run {parent_run_id!r} in tracking store {uri}") from None
        if parent.info.experiment_id != exp.experiment_id:
            raise CollectError(f"run {parent_run_id} belongs to experiment id {parent.info.experiment_id}, "
                               f"not to {experiment!r} ({exp.experiment_id})")
    return exp


def _sweep_runs(exp: Any, uri: str, sweeps: Sequence[str] | None, log: Callable[[str], None]) -> pd.DataFrame:
    """Every run tagged with a sweep kind in the experiment (of the named sweeps, when given), once each."""
    if sweeps:
        unknown = [s for s in sweeps if s not in schema.SWEEPS]
        if unknown:
            log(f"warning: sweep(s) {unknown} are not among the known sweeps {list(schema.SWEEPS)}")
        raw = pd.concat([_search(exp.experiment_id, f"tags.`{schema.SWEEP}` = '{s}'") for s in sweeps],
                        ignore_index=True)
    else:
        raw = _search(exp.experiment_id, "")
    if raw.empty or f"tags.{schema.KIND}" not in raw.columns:
        raise CollectError(f"experiment {exp.name!r} in {uri} has no sweep runs"
                           + (f" of sweep(s) {list(sweeps)}" if sweeps else ""))
    return raw.drop_duplicates(subset="run_id")


def _under_parent(raw: pd.DataFrame, client: Any, exp: Any, parent_run_id: str,
                  log: Callable[[str], None]) -> pd.DataFrame:
    """The runs below ``parent_run_id``, plus those it reused from an earlier sweep run and their calibrations."""
    all_runs = _search(exp.experiment_id, "")
    parents = dict(zip(all_runs["run_id"], all_runs.get("tags.mlflow.parentRunId",
                                                          pd.Series([None] * len(all_runs))), strict=True))
    parents = {k: (v if isinstance(v, str) else None) for k, v in parents.items()}
    members = {rid for rid in raw["run_id"] if rid == parent_run_id or parent_run_id in _ancestors(rid, parents)}
    reused = _listed_children(client, parent_run_id, log) - members
    if reused:
        log(f"{len(reused)} run(s) reused by sweep run {parent_run_id[:8]} live under an earlier sweep run; "
            "included from its children.json")
    members |= reused
    calibrated = raw.get(f"tags.{schema.CALIBRATED_RUN}", pd.Series(index=raw.index, dtype=object))
    raw = raw[raw["run_id"].isin(members) | calibrated.isin(reused)]
    if raw.empty:
        raise CollectError(f"run {parent_run_id} has no child runs in experiment {exp.name!r}")
    return raw


def _sweeps_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep parent run: its sweep, protocol, status and start."""
    sweep_rows = raw[raw[f"tags.{schema.KIND}"] == "sweep"]
    return pd.DataFrame({
        "run_id": sweep_rows["run_id"], "sweep": sweep_rows.get(f"tags.{schema.SWEEP}"),
        "protocol": sweep_rows.get(f"tags.{schema.PROTOCOL}"), "status": sweep_rows["status"],
        "start_time": sweep_rows["start_time"]}).reset_index(drop=True)


def _skipped(unfinished: pd.DataFrame, log: Callable[[str], None]) -> pd.DataFrame:
    """The child runs that have not finished, said once in the log, so a report never hides them."""
    skipped = pd.DataFrame({
        "run_id": unfinished["run_id"], "status": unfinished["status"],
        "kind": unfinished[f"tags.{schema.KIND}"], "sweep": unfinished.get(f"tags.{schema.SWEEP}"),
        "arm": unfinished.get(f"tags.{schema.ARM}"), "family": unfinished.get(f"tags.{schema.FAMILY}"),
        "setting": unfinished.get(f"tags.{schema.SETTING}"), "seed": unfinished.get(f"tags.{schema.SEED}"),
    }).reset_index(drop=True)
    if len(skipped):
        log(f"skipped {len(skipped)} unfinished run(s): " + ", ".join(
            f"{n} {s}" for s, n in skipped["status"].value_counts().items()))
    return skipped


def _latest_tables(finished: pd.DataFrame,
                   log: Callable[[str], None]) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[str, str]]]:
    """Training and calibration tables, the latest run of each key kept, and the runs ignored with why."""
    training_kind = finished[f"tags.{schema.KIND}"]
    runs, ignored = _tidy(finished[training_kind.isin(TRAINING_KINDS)], METRICS, {"cv": CV_TAG})
    calibrations, ignored_cal = _tidy(finished[training_kind == "calibrate"], CALIBRATION_METRICS,
                                      {"calibrated_run_id": schema.CALIBRATED_RUN})
    ignored += ignored_cal
    runs, older = _latest(runs, ["sweep", "protocol", "arm", "family", "setting", "seed"])
    ignored += [(rid, "superseded by a later run of the same sweep/protocol/arm/family/setting/seed")
                for rid in older["run_id"]]
    if len(calibrations):
        no_target = calibrations["calibrated_run_id"].isna()
        ignored += [(rid, f"calibration run without tag {schema.CALIBRATED_RUN}")
                    for rid in calibrations.loc[no_target, "run_id"]]
        calibrations, older_cal = _latest(calibrations[~no_target], ["calibrated_run_id"])
        ignored += [(rid, "superseded by a later calibration of the same run") for rid in older_cal["run_id"]]
    if ignored:
        log(f"ignored {len(ignored)} run(s): " + "; ".join(f"{rid[:8]} {why}" for rid, why in ignored[:5])
            + (" ..." if len(ignored) > 5 else ""))
    return runs, calibrations, ignored


def collect(experiment: str = schema.DEFAULT_STUDY_EXPERIMENT, *, sweeps: Sequence[str] | None = None,
            parent_run_id: str | None = None, cache_dir: Path | None = None,
            log: Callable[[str], None] = _say) -> Collected:
    """Runs of the named sweeps (default: every sweep) of ``experiment``, optionally only under one parent run.

    Child runs that have not finished are skipped and counted; when a setting x arm x family x seed was run
    more than once (a sweep re-run), the latest finished run is kept and the others are listed as ignored.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from ecgml.tracking.store import tracking_uri

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = _experiment(client, uri, experiment, parent_run_id)
    raw = _sweep_runs(exp, uri, sweeps, log)
    if parent_run_id is not None:
        raw = _under_parent(raw, client, exp, parent_run_id, log)
    kind = raw[f"tags.{schema.KIND}"]
    # a cross-validation's fold runs are parts of its parent (the sweep's child), not runs of the sweep
    fold = raw.get(f"tags.{CV_FOLD_TAG}", pd.Series(index=raw.index, dtype=object)).notna()
    children = raw[kind.isin([*TRAINING_KINDS, "calibrate"]) & ~fold]
    skipped = _skipped(children[children["status"] != "FINISHED"], log)
    runs, calibrations, ignored = _latest_tables(children[children["status"] == "FINISHED"], log)
    if runs.empty:
        raise CollectError(f"experiment {experiment!r} has no finished training runs tagged as sweep children"
                           + (f" of sweep(s) {list(sweeps)}" if sweeps else "")
                           + (f" under run {parent_run_id}" if parent_run_id else "")
                           + (f" ({len(skipped)} unfinished run(s) skipped)" if len(skipped) else ""))
    order = ["sweep", "protocol", "arm", "family", "setting", "seed"]
    runs = runs.sort_values(order, kind="stable")
    if len(calibrations):
        calibrations = calibrations.sort_values(order, kind="stable")
    log(f"collected {len(runs)} training run(s) and {len(calibrations)} calibration run(s) of "
        f"sweep(s) {', '.join(sorted(runs['sweep'].unique()))} from {experiment!r}")
    return Collected(experiment=experiment, experiment_id=exp.experiment_id, tracking_uri=uri,
                     runs=runs.reset_index(drop=True), calibrations=calibrations.reset_index(drop=True),
                     sweeps=_sweeps_frame(raw), skipped=skipped, ignored=ignored,
                     cache_dir=cache_dir or process_scratch_dir("ecgml-report-"))
