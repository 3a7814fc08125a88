"""Optuna studies over the training hyperparameters: a typed search space, storages that several processes
(journal file) or machines (PostgreSQL) share, workers that claim exactly the requested trials, and an
MLflow logger that makes the study one parent run and every trial one nested child run.
"""
