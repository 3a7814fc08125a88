"""Under pytest-xdist (the suite's default) each worker runs with its share of the cores, so the workers split
the machine the way ecgml's launchers split it, instead of each starting a thread per core."""

from __future__ import annotations

import os

import pytest


def test_an_xdist_worker_runs_its_share_of_the_cores() -> None:
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count:
        pytest.skip("not run by a pytest-xdist worker (-n 0 or -p no:xdist)")
    import torch

    from ecgml.runtime.threads import ENV_SOURCE, ENV_THREADS, available_cores, process_budget, split_cores

    if os.environ[ENV_SOURCE].startswith(("--threads", "ECGML_THREADS=", "OMP_NUM_THREADS=")):
        pytest.skip(f"the user set the threads per process ({os.environ[ENV_SOURCE]})")
    index = int(worker.removeprefix("gw"))
    share = split_cores(available_cores(), int(count))[index]
    assert os.environ[ENV_SOURCE] == f"pytest-xdist workers {index} of {count} sharing {available_cores()} core(s)"
    assert os.environ[ENV_THREADS] == os.environ["OMP_NUM_THREADS"] == str(share)
    assert process_budget().threads == torch.get_num_threads() == share
