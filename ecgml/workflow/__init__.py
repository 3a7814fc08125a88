"""The main job (``ecgml main``, ``mlflow run .``): the whole chain as one multistep workflow, from synthetic data
to a report.

It sits on top of the orchestration layer: it runs single steps (:mod:`ecgml.train`, :mod:`ecgml.posttrain`) and a
sweep and its report (:mod:`ecgml.experiments`), so it imports experiments and nothing below imports it.
"""
