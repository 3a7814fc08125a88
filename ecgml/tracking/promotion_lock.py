"""A lock per registered model that serialises its promotions, on the tracking store itself.

MLflow offers no compare-and-set on aliases or tags (both are overwritten blindly), so two promotions
that read the same production holder would both succeed and one demotion would be lost. The one step
every MLflow store makes atomic is creating a registered model: its name is a primary key, and of two
``create_registered_model`` calls with one name exactly one succeeds, on SQLite and behind an
``mlflow server`` alike. The lock is therefore a registered model named ``NAME`` + :data:`LOCK_SUFFIX`,
created to take the lock and deleted to release it; a promoter that finds it waits (backing off, up to
``ECGML_PROMOTION_WAIT_S``, default 60 s) and tries again. A lock older than :data:`STALE_AFTER_S` was
left by a promoter that died: it is deleted (only if its owner tag is still the one found stale) and
taken anew, with a warning. Readers never take it; only promotions (and archiving) do.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

#: Suffix of the lock's registered-model name (registry listings leave these out).
LOCK_SUFFIX = ".ecgml-promotion-lock"
OWNER_TAG = "ecgml.lock_owner"
SINCE_TAG = "ecgml.lock_since"
#: A promotion takes a few seconds even over a slow link: a lock this old (s) is a dead promoter's.
STALE_AFTER_S = 120.0
DEFAULT_WAIT_S = 60.0


class PromotionBusy(RuntimeError):
    """Another promotion of the same model held the lock for longer than the wait."""


def lock_name(name: str) -> str:
    return f"{name}{LOCK_SUFFIX}"


def is_lock_name(name: str) -> bool:
    return name.endswith(LOCK_SUFFIX)


def _wait_s() -> float:
    text = os.environ.get("ECGML_PROMOTION_WAIT_S", "")
    try:
        return float(text) if text else DEFAULT_WAIT_S
    except ValueError:
        return DEFAULT_WAIT_S


def _holder(client: Any, lock: str) -> tuple[str, float] | None:
    """The lock's owner and creation time (epoch s); None when it was released meanwhile."""
    import mlflow

    try:
        tags = client.get_registered_model(lock).tags or {}
    except mlflow.exceptions.MlflowException:
        return None
    try:
        since = float(tags.get(SINCE_TAG, "0"))
    except ValueError:
        since = 0.0
    return tags.get(OWNER_TAG, "?"), since


@contextlib.contextmanager
def promotion_lock(client: Any, name: str, *, warn: Callable[[str], None],
                   wait_s: float | None = None) -> Iterator[None]:
    """Hold the promotion lock of registered model ``name`` for the body (see the module docstring)."""
    import mlflow
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    lock = lock_name(name)
    owner = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + (_wait_s() if wait_s is None else wait_s)
    delay = 0.05
    while True:
        try:
            client.create_registered_model(lock, tags={OWNER_TAG: owner, SINCE_TAG: f"{time.time():.3f}"},
                                           description=f"ecgml: a promotion of {name} is in progress")
            break
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        held = _holder(client, lock)
        if held is not None and time.time() - held[1] > STALE_AFTER_S:
            if _holder(client, lock) == held:  # still the stale one, not a fresh lock taken meanwhile
                warn(f"removing the promotion lock of {name} left by {held[0]} "
                     f"{time.time() - held[1]:.0f} s ago (its promotion never finished)")
                with contextlib.suppress(mlflow.exceptions.MlflowException):
                    client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            who = f" (held by {held[0]})" if held else ""
            raise PromotionBusy(f"another promotion of {name} is in progress{who}; try again in a moment. "
                                f"If its promoter died, registered model {lock!r} is removed by itself "
                                f"after {STALE_AFTER_S:.0f} s")
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 1.0)
    try:
        yield
    finally:
        held = _holder(client, lock)
        if held is not None and held[0] == owner:  # not a lock another promoter took after breaking ours
            with contextlib.suppress(mlflow.exceptions.MlflowException):
                client.delete_registered_model(lock)
