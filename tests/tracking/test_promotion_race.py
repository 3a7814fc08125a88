"""Promotions racing on one shared ``mlflow server``: they are serialised, so the production alias ends on
one version, every move is on record once, and the histories agree with the aliases."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ecgml.tracking.promotion_lock import LOCK_SUFFIX, OWNER_TAG, SINCE_TAG
from ecgml.tracking.registry import HISTORY_TAG, RegistryError, create_version, model_names, promote, show
from tests.faults.mlflow_server import MlflowServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = start_server(tmp_path_factory.mktemp("race-server"))
    yield started
    started.stop()


@pytest.fixture
def model(server: MlflowServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A registered model with five versions (one logged model, registered five times), none promoted."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    client = mlflow.MlflowClient(server.uri)
    experiment = client.create_experiment(f"race-{request.node.name}")
    logged = client.create_logged_model(experiment)
    name = f"race-{request.node.name}".replace("[", "-").replace("]", "")
    client.create_registered_model(name)
    for _ in range(5):
        create_version(client, name, f"models:/{logged.model_id}")
    return name


def _history(name: str, version: str) -> list[dict[str, Any]]:
    return json.loads(show(name, version).tags.get(HISTORY_TAG, "[]"))


def _race(name: str, versions: tuple[str, ...]) -> list[BaseException | None]:
    """Promote each version to production from its own thread, all released at once."""
    barrier = threading.Barrier(len(versions))
    outcomes: list[BaseException | None] = [None] * len(versions)

    def run(i: int) -> None:
        barrier.wait()
        try:
            promote(name, versions[i], stage="production", user=f"user{i}", warn=lambda _: None)
        except BaseException as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(versions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return outcomes


def test_concurrent_promotions_are_serialised_and_on_record(model: str) -> None:
    promote(model, "1", stage="production", user="first", warn=lambda _: None)
    for pair in (("2", "3"), ("4", "5")):
        assert _race(model, pair) == [None, None]
    holder = show(model, "5" if "production" in show(model, "5").aliases else "4")
    assert sum("production" in show(model, v).aliases for v in "12345") == 1
    # every version but the holder was demoted exactly once, by the version that was promoted after it
    chain: dict[str, str] = {}
    for version in "12345":
        history = _history(model, version)
        assert history[0]["to"] == "production"
        demotions = [h for h in history if h["to"] == "demoted from production"]
        if version == holder.version:
            assert demotions == []
        else:
            assert len(demotions) == 1, (version, history)
            chain[version] = demotions[0]["replaced_by"]
            assert _history(model, chain[version])[0]["replaced"] == version  # both sides of each move
    # one line of succession from v1 to the holder: 5 promotions, 4 demotions, none lost
    seen, at = ["1"], "1"
    while at in chain:
        at = chain[at]
        seen.append(at)
    assert sorted(seen) == list("12345") and at == holder.version
    assert model_names() == sorted(model_names()) and not any(n.endswith(LOCK_SUFFIX) for n in model_names())


def test_a_held_lock_makes_a_promotion_wait_then_refuse_and_a_stale_one_is_broken(
        model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import mlflow

    client = mlflow.MlflowClient()
    lock = f"{model}{LOCK_SUFFIX}"
    client.create_registered_model(lock, tags={OWNER_TAG: "bob@gpu1 pid 7", SINCE_TAG: f"{time.time():.3f}"})
    monkeypatch.setenv("ECGML_PROMOTION_WAIT_S", "1")
    with pytest.raises(RegistryError, match=r"another promotion of race-\S+ is in progress \(held by bob@gpu1 pid 7\)"):
        promote(model, "1", stage="production")
    assert show(model, "1").aliases == () and HISTORY_TAG not in show(model, "1").tags  # nothing written

    client.set_registered_model_tag(lock, SINCE_TAG, f"{time.time() - 3600:.3f}")  # its promoter died an hour ago
    warnings: list[str] = []
    promote(model, "1", stage="production", warn=warnings.append)
    assert show(model, "1").aliases == ("production",)
    assert any("removing the promotion lock" in w and "bob@gpu1 pid 7" in w for w in warnings), warnings
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_registered_model(lock)  # released
