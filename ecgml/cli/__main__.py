"""``python -m ecgml.cli ...``: the same as the ``ecgml`` console script.

Every MLproject command runs this way; inside ``mlflow run`` it first brings the environment's MLflow in
step with the launcher's (:mod:`ecgml.tracking.project_env`), before anything imports mlflow.
"""

import sys

from ecgml.tracking.project_env import ProjectEnvError, align_with_launcher

try:
    align_with_launcher(["-m", "ecgml.cli", *sys.argv[1:]])
except ProjectEnvError as exc:
    sys.stderr.write(f"Error: {exc}\n")
    sys.exit(1)

from ecgml.cli import main  # after the environment is in step

sys.exit(main())
