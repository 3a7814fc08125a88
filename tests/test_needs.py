"""A missing tool skips a test on a developer's machine and fails it under CI."""

from __future__ import annotations

import pytest

from tests.needs import missing


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_missing_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        missing("chromium is not installed")


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_missing_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"chromium is not installed.*CI=true"):
        missing("chromium is not installed")
