-- A second database on the same server: Optuna's storage for studies run across machines.
CREATE DATABASE optuna OWNER ecgml;
