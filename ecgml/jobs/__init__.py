"""The old import paths of the CLI's job commands (``ecgml calibrate``, ``evaluate``, ``main``), as re-exports.

Calibration and evaluation live in :mod:`ecgml.posttrain` (below the sweeps), the main job in
:mod:`ecgml.workflow` (above them); this package imports only those two, so it never ties them together."""
