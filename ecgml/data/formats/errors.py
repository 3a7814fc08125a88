"""The one error every on-disk reader raises: which file, and what is wrong with it."""

from __future__ import annotations

import os


class DataFormatError(ValueError):
    """A file does not hold what its format or header promises. The message names the file."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
