"""What a person sees in the MLflow UI, in a real browser: a study's runs told apart by name, the settings
that distinguish them in the compare view, and the registry's versions with aliases and descriptions.

The study is the fraction sweep's real plan (two fractions, two seeds) logged the way the sweep logs it
(names from :func:`config_run_name`, params from :func:`training_params`, sweep tags, a test AUC), without
the training, so the test takes seconds; the registry versions go through the real registration and
promotion. ``mlflow server`` serves it on 127.0.0.1; headless Debian chromium, driven by Playwright, looks.
Screenshots are kept under ``$ECGML_UI_SHOTS`` (default: the test's tmp folder) and their paths printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.needs import missing
from tests.servers import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.slow  # a server and a browser start for the module
#: Flags for a sandbox with no network but loopback (background networking only fails there).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module", autouse=True)
def _chromium() -> None:
    """Skip without Debian's chromium (fail under CI, which installs it), before any server starts."""
    if CHROMIUM is None:
        missing("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")


def _log_study(uri: str, artifacts: Path) -> dict[str, Any]:
    """The fraction sweep's plan, logged as the sweep logs it, and two registered classifier versions."""
    import mlflow

    from ecgml.experiments import schema
    from ecgml.experiments.study import StudyConfig, plan_sweep
    from ecgml.models import family_of
    from ecgml.tracking.pyfunc import log_pyfunc
    from ecgml.tracking.registry import promote, register_run_model
    from ecgml.tracking.run_names import config_run_name, sweep_extras, training_params, unique_names
    from ecgml.tracking.runs import describe_experiment, set_description
    from tests.pretrained.conftest import tiny_weights

    os.environ["MLFLOW_TRACKING_URI"] = uri  # ecgml's registry helpers read it
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("ecgml-study", artifact_location=artifacts.as_uri())
    set_description("The study: one parent run per sweep; compare its children by arm, fraction and seed.",
                    experiment="ecgml-study")
    describe_experiment(experiment)  # its kind, as every experiment ecgml logs into gets it
    jobs = [j for j in plan_sweep("fraction", StudyConfig(seeds=(0, 1), standalone_backbones=("inception1d_small",)),
                                  (0.25, 0.025)) if j.arm != "pretrain"]
    names = unique_names(config_run_name(j.config, sweep_extras(j.public_setting)) for j in jobs)
    sweep = client.create_run(experiment, run_name="sweep fraction standard",
                              tags={schema.KIND: "sweep", schema.SWEEP: "fraction"})
    ids: dict[str, str] = {}
    for n, (job, name) in enumerate(zip(jobs, names, strict=True)):
        run = client.create_run(experiment, run_name=name, tags={**job.tags, schema.KIND: job.arm,
                                                                 "mlflow.parentRunId": sweep.info.run_id})
        params = training_params(job.config, family=family_of(job.config.model.backbone),
                                 lineage={"ecgml.backbone_version": "models:/ecgml-study-backbone/1"}
                                 if job.arm == "finetune" else {})
        for key, value in params.items():
            client.log_param(run.info.run_id, key, str(value))
        client.log_metric(run.info.run_id, "test_macro_auc", 0.7 + 0.01 * n)
        client.log_text(run.info.run_id, "record_id,true_NORM,prob_NORM\nE1,1,0.5\nE2,0,0.4\n",
                        "eval/predictions_test.csv")
        client.set_terminated(run.info.run_id)
        ids[name] = run.info.run_id
    client.set_terminated(sweep.info.run_id)
    finetuned = [name for name in names if name.startswith("finetune")]
    weights = tiny_weights(artifacts.parent / "weights")
    for name in finetuned[:2]:
        client.set_tag(ids[name], "dataset", "g12ec")
        with mlflow.start_run(run_id=ids[name]):  # the served model, with its signature and input example
            model_uri = log_pyfunc(weights).model_uri
        register_run_model("ecgml-g12ec-classifier", ids[name], model_uri,
                           {"metric.test_macro_auc": "0.800000", "dataset": "g12ec", "task": "shared18",
                            "backbone": "xresnet1d50_small",
                            "ecgml.backbone_version": "models:/ecgml-study-backbone/1"})
    promote("ecgml-g12ec-classifier", "1", stage="production", user="alice")
    promote("ecgml-g12ec-classifier", "2", stage="staging", user="bob")
    return {"experiment": experiment, "ids": ids, "names": names}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    work = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    study = _log_study(uri, work / "artifacts")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                             "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--default-artifact-root", str(work / "artifacts")],
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {proc.stderr.read()[-2000:]}") from None
                time.sleep(0.5)
        yield url, study
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]' brings it)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        try:
            yield context.new_page()
        finally:
            browser.close()


def _shot(page: Any, name: str) -> Path:
    folder = Path(os.environ.get("ECGML_UI_SHOTS") or Path(os.environ.get("TMPDIR", "/tmp")) / "ecgml-ui-shots")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


#: The run-name cells of MLflow 3's runs table, and a parent row's expander while its children are hidden
#: (the "+" square icon; expanded, it shows "-").
NAME_CELLS = "[role=gridcell][col-id='attributes.`Run Name`']"
COLLAPSED = f"{NAME_CELLS} button:has(path[d^='M7.25 7.25V4.5'])"


def _expand_all_parents(page: Any) -> int:
    """Open every collapsed parent row (a study nests main -> sweep -> children), as a person clicks "+"."""
    clicks = 0
    while page.locator(COLLAPSED).count() and clicks < 20:
        page.locator(COLLAPSED).first.click()
        clicks += 1
        page.wait_for_timeout(300)
    return clicks


def _widen_name_column(page: Any, by: int = 260) -> None:
    """Drag the Run Name column's right edge, as a person does, so whole names show, not `finetune xres...`."""
    header = page.locator("[role=columnheader][col-id='attributes.`Run Name`']").first
    box = header.bounding_box()
    x, y = box["x"] + box["width"] - 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 20, y)  # hovering the header shows its resize handle
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + by, y, steps=10)
    page.mouse.up()
    page.wait_for_timeout(300)


def test_the_printed_link_opens_the_experiments_runs_table(server: tuple[str, dict[str, Any]], page: Any) -> None:
    """The link every job prints last opens the runs table in the "Model training" view, not MLflow 3's
    GenAI overview (traces, a "Detect Issues" pop-up), which opening the experiment from the list shows."""
    from ecgml.tracking.runs import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, experiment_runs_link

    url, study = server
    page.goto(experiment_runs_link(study["experiment"], url))
    page.get_by_text("sweep fraction standard").first.wait_for(timeout=60_000)  # the runs table's sweep row
    page.get_by_role("heading", name="Runs").first.wait_for(timeout=30_000)
    assert "/runs" in page.url and "workflowType=machine_learning" in page.url, page.url
    assert not page.get_by_text("Detect Issues").count()  # the GenAI overview's pop-up
    _close_assistant(page)
    _shot(page, "experiment_landing")
    import mlflow

    tags = mlflow.MlflowClient(url).get_experiment(study["experiment"]).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def _close_assistant(page: Any) -> None:
    close = page.get_by_role("button", name="Close")  # MLflow 3.x opens an assistant panel beside the table
    if close.count():
        close.first.click()


def test_runs_table_shows_distinct_descriptive_names(server: tuple[str, dict[str, Any]], page: Any) -> None:
    from ecgml.tracking.runs import experiment_runs_link

    url, study = server
    page.goto(experiment_runs_link(study["experiment"], url))  # the link every job prints last
    page.get_by_text("sweep fraction standard").first.wait_for(timeout=60_000)  # the sweep's parent row
    page.get_by_text("The study: one parent run per sweep").first.wait_for(timeout=30_000)  # its description
    _close_assistant(page)
    _shot(page, "runs_table_collapsed")
    assert page.locator(COLLAPSED).count() == 1  # opens collapsed: only the sweep's row, children hidden
    assert _expand_all_parents(page) >= 1 and page.locator(COLLAPSED).count() == 0
    _widen_name_column(page)
    _shot(page, "runs_table")
    for name in study["names"]:  # each child in its own row of the table, its whole name shown
        cell = page.locator(f"{NAME_CELLS} a span").get_by_text(name, exact=True)
        cell.wait_for(timeout=30_000)
        assert cell.count() == 1 and cell.is_visible(), name
        assert cell.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), f"{name} is cut off in the runs table"
    # every child of the sweep side by side, each under its own name
    children = json.dumps(list(study["ids"].values()))
    page.goto(f"{url}/#/compare-runs?runs={children}&experiments={json.dumps([study['experiment']])}")
    for name in study["names"]:
        page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
    _shot(page, "sweep_children_by_name")
    assert len(set(study["names"])) == len(study["names"]) == 8
    assert "finetune g12ec xresnet1d50_small f=0.025 s=1" in study["names"]
    assert "standalone g12ec inception1d_small f=0.25 s=0" in study["names"]


def test_compare_view_shows_the_distinguishing_params(server: tuple[str, dict[str, Any]], page: Any) -> None:
    url, study = server
    chosen = [study["ids"]["finetune g12ec xresnet1d50_small f=0.25 s=0"],
              study["ids"]["standalone g12ec inception1d_small f=0.025 s=1"]]
    page.goto(f"{url}/#/compare-runs?runs={json.dumps(chosen)}&experiments={json.dumps([study['experiment']])}")
    page.get_by_text("finetune g12ec xresnet1d50_small f=0.25 s=0").first.wait_for(timeout=60_000)
    for param in ("arm", "strategy", "fraction", "weight_decay", "backbone_version", "family", "seed"):
        page.get_by_text(param, exact=True).first.wait_for(timeout=30_000)
    for value in ("gradual", "inception", "models:/ecgml-study-backbone/1"):
        page.get_by_text(value, exact=True).first.wait_for(timeout=30_000)
    _shot(page, "compare_view")


def test_registry_page_shows_versions_aliases_and_descriptions(server: tuple[str, dict[str, Any]],
                                                               page: Any) -> None:
    url, _ = server
    page.goto(f"{url}/#/models/ecgml-g12ec-classifier")
    page.get_by_text("Version 1").first.wait_for(timeout=60_000)
    for alias in ("production", "staging"):
        page.get_by_text(alias).first.wait_for(timeout=30_000)
    _shot(page, "registry_model")
    page.goto(f"{url}/#/models/ecgml-g12ec-classifier/versions/1")
    page.get_by_text("Classifier fine-tuned on g12ec").first.wait_for(timeout=60_000)
    page.get_by_text("finetune g12ec xresnet1d50_small f=0.25 s=0").first.wait_for(timeout=30_000)
    # The schema section counts the signature's columns (it read "Inputs (0)" before models had one).
    import mlflow

    from ecgml.tracking.pyfunc import REQUEST_COLUMNS

    mlflow.set_tracking_uri(url)
    outputs = mlflow.models.get_model_info("models:/ecgml-g12ec-classifier/1").signature.outputs.input_names()
    assert len(outputs) > 1
    page.get_by_text(f"Inputs ({len(REQUEST_COLUMNS)})", exact=True).first.wait_for(timeout=30_000)
    page.get_by_text(f"Outputs ({len(outputs)})", exact=True).first.wait_for(timeout=30_000)
    _shot(page, "registry_version")


def test_the_docs_filter_strings_find_what_they_say(server: tuple[str, dict[str, Any]]) -> None:
    """The filter table of the docs' "Comparing runs in the MLflow UI" page, run against the served study."""
    import re

    import mlflow

    url, study = server
    page_text = (Path(__file__).resolve().parents[2] / "docs" / "ui.md").read_text()
    section = page_text.split("## Filter strings", 1)[1].split("\n## ", 1)[0]
    filters = {row[0]: row[1] for row in re.findall(r"^\| ([^|]+?) \| `+ ?(.+?) ?`+ \|$", section, re.M)}
    client = mlflow.MlflowClient(url)

    def names(text: str) -> set[str]:
        return {r.info.run_name for r in client.search_runs([study["experiment"]], filter_string=text)}

    assert names(filters["every fine-tuned run at 2.5 % of G12EC"]) == {
        "finetune g12ec xresnet1d50_small f=0.025 s=0", "finetune g12ec xresnet1d50_small f=0.025 s=1"}
    assert names(filters["the Inception baselines"]) == {n for n in study["names"] if "inception" in n}
    assert names(filters["one seed across arms and families"]) == {n for n in study["names"] if n.endswith("s=0")}
    assert names(filters["by name"].replace("f=0.1 ", "f=0.25 ")) == {
        "finetune g12ec xresnet1d50_small f=0.25 s=0", "finetune g12ec xresnet1d50_small f=0.25 s=1"}
    for label in ("one sweep's training runs", "calibrations", "runs from one backbone version", "the good ones"):
        names(filters[label])  # each parses as MLflow search syntax
