"""Tracked jobs that are not training: calibrating and evaluating registered models, and the main job
that chains the study's steps as child runs of one parent run."""
