"""Registering the best pretraining run, promotion through stages as aliases, and resolving versions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ecgml.cli import main
from ecgml.models import create_backbone
from ecgml.tracking.pyfunc import log_pyfunc
from ecgml.tracking.registry import (
    MODEL_URI_TAG,
    TEST_SET_TAG,
    RegistryError,
    guard_metric,
    list_models,
    list_versions,
    promote,
    register_best,
    register_run,
    resolve,
    show,
)
from ecgml.tracking.weights import WeightMetadata, save_weights


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _pretrain_run(folder: Path, auc: float, *, status_ok: bool = True, test_ids: tuple[str, ...] | None = None) -> str:
    """A run shaped like `ecgml pretrain` leaves: tags, the selection metric, a logged pyfunc model."""
    import mlflow

    torch.manual_seed(0)
    model = create_backbone("xresnet1d18", in_channels=12, num_classes=5, width=0.25)
    weights = save_weights(folder, model, WeightMetadata(
        backbone="xresnet1d18", backbone_kwargs=model.constructor["kwargs"], num_classes=5, fs=100,
        input_samples=250, leads=("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
        classes=("CD", "HYP", "MI", "NORM", "STTC"), norm_mean=(0.0,) * 12, norm_std=(1.0,) * 12, source="ptbxl",
        dataset_version="synthetic", cache_digest="c0ffee", task="superdiagnostic", label_map="challenge"))
    mlflow.set_tracking_uri(f"sqlite:///{folder.parent}/mlflow.db")
    mlflow.set_experiment("pre")
    with mlflow.start_run(tags={"ecgml.kind": "pretrain", "dataset": "ptbxl", "task": "superdiagnostic",
                                "backbone": "xresnet1d18", "cache_digest": "c0ffee"}) as run:
        mlflow.log_metrics({"best_val_macro_auc": auc, "test_macro_auc": auc - 0.01})
        mlflow.set_tag(MODEL_URI_TAG, log_pyfunc(weights).model_uri)
        if test_ids is not None:  # the predictions every training run logs, which fingerprint its test set
            rows = "\n".join(f"{rid},1,0.5" for rid in test_ids)
            mlflow.log_text(f"record_id,true_NORM,prob_NORM\n{rows}\n", "eval/predictions_test.csv")
    if not status_ok:
        mlflow.MlflowClient().set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id


def test_register_promote_and_resolve(store: Path) -> None:
    _pretrain_run(store / "a", 0.80)
    best = _pretrain_run(store / "b", 0.90)
    _pretrain_run(store / "c", 0.99, status_ok=False)  # failed runs are never registered
    first = register_best("pre", "bb")
    assert first.version == "1" and first.run_id == best
    assert first.tags["metric.best_val_macro_auc"] == "0.900000" and first.tags["cache_digest"] == "c0ffee"
    register_best("pre", "bb")

    promote("bb", "1", stage="production", user="alice")
    promote("bb", "2", stage="staging", user="bob")
    promote("bb", "2", alias="champion", user="bob")
    assert resolve("models:/bb@production").version == "1"
    promote("bb", "2", stage="production", user="carol")  # the alias moves; v1 keeps its history
    assert resolve("models:/bb@production").version == "2"
    assert set(resolve("models:/bb/2").aliases) == {"staging", "champion", "production"}
    promote("bb", "1", stage="archived", user="dave")
    v1 = resolve("models:/bb/1")
    assert v1.aliases == () and v1.tags["ecgml.archived"] == "true"
    history = json.loads(v1.tags["ecgml.promotion_history"])
    assert [(h["to"], h["by"]) for h in history] == [("production", "alice"), ("demoted from production", "carol"),
                                                      ("archived", "dave")]
    assert history[1]["replaced_by"] == "2" and history[2]["removed_aliases"] == []
    assert v1.archived and "**" in v1.description  # a Markdown description from registration
    assert [v.version for v in list_versions("bb")] == ["1", "2"]


def test_registry_errors_are_clear(store: Path) -> None:
    with pytest.raises(RegistryError, match="no experiment named 'nothing'"):
        register_best("nothing")
    _pretrain_run(store / "a", 0.8)
    register_best("pre", "bb")
    with pytest.raises(RegistryError, match="has no version 7"):
        resolve("models:/bb/7")
    with pytest.raises(RegistryError, match="has no alias 'production'"):
        resolve("models:/bb@production")
    with pytest.raises(RegistryError, match="unknown stage"):
        promote("bb", "1", stage="gold")
    with pytest.raises(RegistryError, match="not a registry URI"):
        resolve("runs:/abc/model")


def test_registry_commands(store: Path) -> None:
    _pretrain_run(store / "a", 0.85)
    runner = CliRunner()
    out = runner.invoke(main, ["register", "--experiment", "pre", "--name", "bb"])
    assert out.exit_code == 0 and "registered bb version 1" in out.output
    out = runner.invoke(main, ["registry", "promote", "bb", "1", "--stage", "production"])
    assert out.exit_code == 0 and "aliases: production" in out.output and "last: production" in out.output
    out = runner.invoke(main, ["registry", "list", "bb"])
    assert "bb v1" in out.output and "best val AUC 0.850" in out.output and "test macro AUC 0.840" in out.output
    out = runner.invoke(main, ["registry", "show", "models:/bb@production", "--tags"])
    assert out.exit_code == 0 and '"ecgml.source_run_id"' in out.output and "Lineage: run" in out.output
    out = runner.invoke(main, ["registry", "show", "models:/bb/9"])
    assert out.exit_code == 1 and "has no version 9" in out.output


def test_registry_commands_list_everything_and_guard_production(store: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["registry", "list"])
    assert out.exit_code == 0 and "no registered models yet" in out.output
    same = ("E1", "E2")
    register_run(_pretrain_run(store / "a", 0.95, test_ids=same), "clf")
    register_run(_pretrain_run(store / "b", 0.80, test_ids=same), "clf")
    register_run(_pretrain_run(store / "c", 0.90), "bb")
    assert runner.invoke(main, ["registry", "promote", "clf", "1", "--stage", "production"]).exit_code == 0
    out = runner.invoke(main, ["registry", "promote", "clf", "2", "--stage", "production"])
    assert out.exit_code == 1 and "test macro AUC 0.790, production v1 0.940" in out.output and "--force" in out.output
    out = runner.invoke(main, ["registry", "promote", "clf", "2", "--stage", "staging", "--force"])
    assert out.exit_code == 1 and "--force only applies" in out.output
    out = runner.invoke(main, ["registry", "promote", "clf", "2", "--stage", "production", "--force"])
    assert out.exit_code == 0 and "FORCED" in out.output
    assert runner.invoke(main, ["registry", "promote", "clf", "1", "--stage", "archived"]).exit_code == 0
    out = runner.invoke(main, ["registry", "list"])
    assert out.exit_code == 0 and "bb: 1 version(s); no aliases" in out.output
    assert "clf: 2 version(s); production -> v2" in out.output
    assert "clf v1  ARCHIVED" in out.output
    out = runner.invoke(main, ["registry", "show", "models:/clf/1"])
    assert "demoted from production by v2" in out.output and "archived" in out.output
    out = runner.invoke(main, ["registry", "list", "clff"])
    assert out.exit_code == 1 and "did you mean clf" in out.output
    out = runner.invoke(main, ["registry", "promote", "clf", "1", "--stage", "gold"])
    assert out.exit_code == 2 and "gold" in out.output


def _snapshot(name: str) -> list[tuple[str, tuple[str, ...], dict[str, str]]]:
    return [(v.version, tuple(sorted(v.aliases)), v.tags) for v in list_versions(name)]


def test_production_is_guarded_by_test_auc_on_the_same_test_set(store: Path) -> None:
    same = ("E1", "E2", "E3")
    good = register_run(_pretrain_run(store / "a", 0.95, test_ids=same), "clf").version
    worse = register_run(_pretrain_run(store / "b", 0.80, test_ids=same), "clf").version
    other = register_run(_pretrain_run(store / "c", 0.70, test_ids=("E9",)), "clf").version
    assert show("clf", good).tags[TEST_SET_TAG] == show("clf", worse).tags[TEST_SET_TAG]
    assert show("clf", other).tags[TEST_SET_TAG] != show("clf", good).tags[TEST_SET_TAG]
    promote("clf", good, stage="production", user="alice")
    before = _snapshot("clf")
    with pytest.raises(RegistryError, match=r"v2 test macro AUC 0\.790, production v1 0\.940 on the same test set"):
        promote("clf", worse, stage="production", user="bob")
    assert _snapshot("clf") == before  # a refusal changes nothing
    warnings: list[str] = []
    promote("clf", other, stage="staging", user="bob", warn=warnings.append)  # only production is guarded
    assert warnings == []
    promote("clf", other, stage="production", user="bob", warn=warnings.append)  # another test set: a warning
    assert resolve("models:/clf@production").version == other
    assert len(warnings) == 1 and "different test sets" in warnings[0] and "0.690" in warnings[0]
    promote("clf", good, stage="production", user="carol", warn=warnings.append)
    promote("clf", worse, stage="production", user="dave", force=True, warn=warnings.append)
    assert resolve("models:/clf@production").version == worse
    assert "--force" in warnings[-1] and "0.790" in warnings[-1]
    history = json.loads(show("clf", worse).tags["ecgml.promotion_history"])
    assert history[-1]["forced"] is True and history[-1]["replaced"] == good
    demoted = json.loads(show("clf", good).tags["ecgml.promotion_history"])[-1]
    assert demoted["to"] == "demoted from production" and demoted["by"] == "dave" and demoted["replaced_by"] == worse


def test_a_calibrated_version_reports_its_source_auc(store: Path) -> None:
    source = register_run(_pretrain_run(store / "a", 0.91), "clf").version
    import mlflow

    calibrated = register_run(_pretrain_run(store / "b", 0.5), "clf",
                              extra_tags={"ecgml.calibrated_from": f"models:/clf/{source}"})
    mlflow.MlflowClient().delete_model_version_tag("clf", calibrated.version, "metric.test_macro_auc")
    assert guard_metric(show("clf", calibrated.version)) == pytest.approx(0.90)


def test_bad_names_get_close_matches_and_refusals_change_nothing(store: Path) -> None:
    register_run(_pretrain_run(store / "a", 0.9), "ecgml-g12ec-classifier")
    with pytest.raises(RegistryError, match="did you mean ecgml-g12ec-classifier"):
        list_versions("ecgml-g12ec-clasifier")
    with pytest.raises(RegistryError, match="did you mean ecgml-g12ec-classifier"):
        resolve("models:/ecgml-g12ec-clasifier@production")
    with pytest.raises(RegistryError, match=r"has no version 4 \(it has 1\)"):
        promote("ecgml-g12ec-classifier", "4", stage="production")
    with pytest.raises(RegistryError, match=r"no alias 'prod' \(its aliases: none\)"):
        resolve("models:/ecgml-g12ec-classifier@prod")
    before = _snapshot("ecgml-g12ec-classifier")
    for bad in ({"stage": "gold"}, {"alias": "7"}, {"alias": ""}, {}):
        with pytest.raises(RegistryError):
            promote("ecgml-g12ec-classifier", "1", **bad)
    assert _snapshot("ecgml-g12ec-classifier") == before
    assert list(list_models()) == ["ecgml-g12ec-classifier"]


def test_the_production_fallback_skips_archived_versions_and_refuses_when_none_is_left(store: Path) -> None:
    """Withdrawing production (archiving it) must stick: the default @production never falls back to it."""
    from ecgml.tracking.registry import resolve_with_fallback

    for folder in ("a", "b", "c"):
        register_run(_pretrain_run(store / folder, 0.8), "bb")
    promote("bb", "3", stage="production")
    promote("bb", "3", stage="archived")
    info, warning = resolve_with_fallback("models:/bb@production")
    assert info.version == "2" and warning is not None
    assert "using its latest version 2 that is not archived (skipped archived v3)" in warning
    promote("bb", "2", stage="archived")
    promote("bb", "1", stage="archived")
    with pytest.raises(RegistryError, match=r"no 'production' alias and every version is archived \(v3, v2, v1\)"):
        resolve_with_fallback("models:/bb@production")
    promote("bb", "1", stage="staging")  # promoting un-archives it
    assert resolve_with_fallback("models:/bb@production")[0].version == "1"


def test_aliases_are_checked_and_lower_case(store: Path) -> None:
    """Aliases MLflow would refuse with a traceback, and `Production` beside `production`, are refused first;
    `--alias production` is the guarded stage; a missing alias lists the real ones."""
    same = ("E1", "E2")
    register_run(_pretrain_run(store / "a", 0.95, test_ids=same), "clf")
    register_run(_pretrain_run(store / "b", 0.80, test_ids=same), "clf")
    promote("clf", "1", stage="production")
    before = _snapshot("clf")
    for bad, says in (("my alias", "lower case letters, digits"), ("team/prod", "lower case letters"),
                      ("a;b", "lower case letters"), ("x" * 300, "(300 characters)"), ("v12", "'v<number>'"),
                      ("latest", "not 'latest'"), ("Production", "aliases are lower case, so that 'production' is "
                                                              "never two aliases; use 'production'")):
        with pytest.raises(RegistryError, match=re.escape(says)):
            promote("clf", "2", alias=bad)
    with pytest.raises(RegistryError, match="scores lower than the current production version"):
        promote("clf", "2", alias="production")  # the stage under its alias name: guarded all the same
    assert _snapshot("clf") == before
    promote("clf", "2", alias="champion")
    with pytest.raises(RegistryError, match=r"has no alias 'nosuch' \(its aliases: champion, production\)"):
        resolve("models:/clf@nosuch")
    out = CliRunner().invoke(main, ["registry", "show", "models:/clf@nosuch"])
    assert out.exit_code == 1 and "its aliases: champion, production" in out.output
