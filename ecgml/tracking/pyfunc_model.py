"""Executed by MLflow ("models from code") when a logged ecgml classifier is loaded or served.

ecgml never imports this file; it is the script MLflow runs instead of unpickling a Python object, so
loading a model runs this reviewed code and nothing else.
"""

import mlflow

from ecgml.tracking.pyfunc import make_python_model

mlflow.models.set_model(make_python_model())
