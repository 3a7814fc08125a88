"""``env_seconds``: the one parser of the ``ECGML_*_S`` durations (collective timeouts, tracking wait)."""

from __future__ import annotations

import pytest

from ecgml.runtime.env import env_seconds
from ecgml.train.distributed import dist_timeout_s, dist_wait_s


def test_unset_or_empty_gives_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECGML_TEST_S", raising=False)
    assert env_seconds("ECGML_TEST_S", 7.5) == 7.5
    monkeypatch.setenv("ECGML_TEST_S", " ")
    assert env_seconds("ECGML_TEST_S", 7.5) == 7.5
    monkeypatch.setenv("ECGML_TEST_S", "12.5")
    assert env_seconds("ECGML_TEST_S", 7.5) == 12.5
    monkeypatch.setenv("ECGML_TEST_S", "0")
    assert env_seconds("ECGML_TEST_S", 7.5) == 0.0


@pytest.mark.parametrize(("text", "message"), [("ten", "is not a number of seconds"),
                                               ("-1", "must be >= 0 seconds"),
                                               ("inf", "is not a finite number"), ("nan", "is not a finite number")])
def test_bad_text_names_the_variable(monkeypatch: pytest.MonkeyPatch, text: str, message: str) -> None:
    monkeypatch.setenv("ECGML_TEST_S", text)
    with pytest.raises(ValueError, match=f"ECGML_TEST_S='{text}' {message}"):
        env_seconds("ECGML_TEST_S", 1.0)


def test_collective_timeouts_refuse_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECGML_DIST_TIMEOUT_S", "0")
    with pytest.raises(ValueError, match="ECGML_DIST_TIMEOUT_S='0' must be > 0 seconds"):
        dist_timeout_s()
    monkeypatch.setenv("ECGML_DIST_WAIT_S", "abc")
    with pytest.raises(ValueError, match="ECGML_DIST_WAIT_S='abc' is not a number"):
        dist_wait_s()
    monkeypatch.setenv("ECGML_DIST_TIMEOUT_S", "5")
    monkeypatch.delenv("ECGML_DIST_WAIT_S")
    assert dist_timeout_s() == 5.0 and dist_wait_s() == 86400.0
