"""Settings read from the environment: one parser for the ``ECGML_*_S`` durations and one for counts (the
``ECGML_MAX_*`` limits), so every such variable accepts the same text and refuses bad text with the same
message (the variable's name and what is wrong).

Imports no other ecgml package (``runtime`` is a base layer).
"""

from __future__ import annotations

import math
import os


def env_seconds(name: str, default: float, *, allow_zero: bool = True) -> float:
    """``$name`` as a number of seconds, ``default`` when it is unset or empty.

    Raises ValueError naming the variable when it is not a finite number, is negative, or is zero where
    ``allow_zero`` is false (a collective timeout of 0 s would fail every collective).
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}={text!r} is not a finite number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}={text!r} must be {'>= 0' if allow_zero else '> 0'} seconds")
    return value


def env_count(name: str, default: int) -> int:
    """``$name`` as a positive whole number (``1_000_000`` and ``1e6`` are accepted), ``default`` when it is
    unset or empty. Raises ValueError naming the variable otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None
    if not (math.isfinite(value) and value.is_integer() and value >= 1):
        raise ValueError(f"{name}={text!r} must be a whole number of at least 1")
    return int(value)
