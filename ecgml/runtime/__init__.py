"""Process-level runtime settings: the share of the cores each process uses, and what the console shows."""
