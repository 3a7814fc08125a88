"""Tracked runs that follow training and train nothing: calibrating a trained classifier and evaluating a
registered model as it is served.

This layer sits above :mod:`ecgml.train` and below everything that orchestrates several runs (the sweeps of
:mod:`ecgml.experiments`, the main job of :mod:`ecgml.workflow`), so both can calibrate and evaluate without
importing each other. It imports only config, data, evaluate, tracking and train.
"""
