"""Where runs are tracked and whether that store can be used: the tracking URI, a client on it, the HTTP
retry defaults, the end-of-training wait, and the checks that a server answers and accepts our credentials,
made before any training starts. Opening runs and logging into them is :mod:`ecgml.tracking.runs`."""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ecgml.runtime.env import env_seconds

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: MLflow's own HTTP retries default to 7 with doubling backoff (about 4 minutes per failed call, for
#: rate-limited hosted servers). ecgml handles outages itself (:class:`MetricLog`), so a training run
#: uses these unless the user set the variables: a stopped server costs seconds per call, not minutes.
HTTP_DEFAULTS: dict[str, str] = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
#: How long a finished training waits for a stopped tracking server before failing (seconds).
DEFAULT_TRACKING_WAIT_S = 600.0


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which URI and how to fix it."""


class TrackingUnavailable(TrackingError):
    """The tracking server stopped answering during a run; the message says what was not logged."""


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def tracking_client() -> Any:
    """An ``MlflowClient`` on :func:`tracking_uri`: how modules outside ``tracking`` get one."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri())


def apply_http_defaults() -> dict[str, str]:
    """Set :data:`HTTP_DEFAULTS` where the environment does not say otherwise; return what was set.

    Called when a training run starts (never at import): MLflow reads these variables per request.
    """
    applied = {k: v for k, v in HTTP_DEFAULTS.items() if k not in os.environ}
    os.environ.update(applied)
    return applied


def tracking_wait_s() -> float:
    """``$ECGML_TRACKING_WAIT_S``: how long to wait for a stopped tracking server at the end of training."""
    try:
        return env_seconds("ECGML_TRACKING_WAIT_S", DEFAULT_TRACKING_WAIT_S)
    except ValueError as exc:
        raise TrackingError(str(exc)) from None


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's client would send (basic auth or a bearer token), as HTTP headers."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def tracking_unreachable(uri: str | None = None, timeout: float = 2.0) -> str | None:
    """Why an HTTP tracking server does not answer its ``/health`` probe, or None when it does.

    Local stores (SQLite, files) are never "unreachable": their errors are real errors.
    """
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status} at /health"
    except urllib.error.HTTPError as exc:
        return None if exc.code in (401, 403) else f"HTTP {exc.code} at /health"
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def check_tracking_uri(uri: str | None = None, timeout: float = 5.0) -> str:
    """Fail fast, before any training, when the tracking store cannot be reached, written or logged into."""
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        reason = tracking_unreachable(uri, timeout)
        if reason is not None:
            raise TrackingError(f"tracking server {uri} is unreachable ({reason}); start it or set "
                                "MLFLOW_TRACKING_URI to a reachable store (default: sqlite:///mlflow.db)")
        _check_credentials(uri, timeout)
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking store {uri}: folder {folder} does not exist or is not writable")
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:"))
        if folder.exists() and not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking store {uri} is not writable")
    return uri


def _refused(uri: str, status: int, detail: str = "") -> str:
    """The one line for a server that refused our credentials (401) or our account (403)."""
    if status == 401:
        sent = ("the credentials in MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
                "were refused" if _auth_headers() else "no credentials were given")
        return (f"tracking server {uri} refused the request: authentication required (HTTP 401), and {sent}. "
                "Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account on that server")
    return (f"tracking server {uri} refused the request: the account in MLFLOW_TRACKING_USERNAME lacks "
            f"permission (HTTP 403){f': {detail}' if detail else ''}")


def _check_credentials(uri: str, timeout: float) -> None:
    """One authenticated read (``/health`` is open even behind basic auth): 401/403 become clear errors."""
    probe = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(probe, headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise TrackingError(_refused(uri, exc.code)) from None
        # other answers (an old server without this endpoint, a proxy) are left to the first real call
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        raise TrackingError(f"tracking server {uri} stopped answering ({getattr(exc, 'reason', exc)})") from None


#: MLflow's error codes for a refused identity, and the HTTP status each stands for.
_AUTH_CODES = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}


def store_refusal(exc: BaseException) -> str | None:
    """The one line to print for an error the tracking store raised (a :class:`TrackingError`, or any
    ``MlflowException``: 401 and 403 worded as :func:`check_tracking_uri` words them, anything else as
    ``tracking store URI refused the request: <MLflow's first line>``); None for any other error.

    The command line's edge calls this for every command, so no store refusal reaches the user as a
    traceback. MLflow is never imported here: an error of MLflow's can only exist once it is loaded.
    """
    import sys

    if isinstance(exc, TrackingError):
        return str(exc)
    exceptions = sys.modules.get("mlflow.exceptions")
    if exceptions is None or not isinstance(exc, exceptions.MlflowException):
        return None
    uri = tracking_uri()
    text = str(getattr(exc, "message", exc))
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    status = _AUTH_CODES.get(str(exc.error_code))
    if status is None:
        status = next((code for code in (401, 403) if f"error code {code} " in first), None)
    if status is not None:
        return _refused(uri, status, first[:200] if status == 403 else "")
    return f"tracking store {uri} refused the request: {first[:500]}"
