"""Atomic file writes for artifacts: a temporary name in the same folder, then a rename, so a
reader (or a crash) never sees half a file."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` on a temporary path next to `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex[:8]}-{path.name}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj))


def atomic_write_csv(frame: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def atomic_save_figure(fig: Figure, path: Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(
            path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        )
    finally:
        plt.close(fig)


def atomic_torch_save(obj: Any, path: Path) -> Path:
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
