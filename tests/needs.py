"""What a test does when a tool it needs is absent: skip with the reason on a developer's machine, fail
under CI (``CI=true``), where ``.ci/run`` installs every tool and a skip would quietly test less."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    """True where the environment says this is CI (``CI=true``, as CI services and ``.ci/run``'s caller set)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str) -> NoReturn:
    """Skip the test with ``reason``; under CI fail with it instead."""
    if under_ci():
        pytest.fail(f"{reason}; CI=true, where .ci/run installs it, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)
