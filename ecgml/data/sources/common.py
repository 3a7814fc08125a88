"""What several readers share: the release a tree names."""

from __future__ import annotations

import json
from pathlib import Path

from ecgml.data.download.catalogue import RECEIPT_NAME


def read_version(root: Path) -> str:
    """The release named in the tree (a ``RELEASE``/``VERSION`` file or the download receipt)."""
    for name in ("VERSION", "RELEASE"):
        path = root / name
        if path.is_file():
            return path.read_text(encoding="utf-8").strip() or "unknown"
    receipt = root / RECEIPT_NAME
    if receipt.is_file():
        return str(json.loads(receipt.read_text(encoding="utf-8")).get("version", "unknown"))
    return "unknown"
