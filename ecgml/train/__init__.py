"""Training: crops and windows over a cache, the loop, checkpoints, devices and multi-process runs."""
