"""PNG figures of a run: learning curves, per-class ROC curves, per-class AUC bars with intervals.

Each function draws on a matplotlib Figure with an Agg canvas (made inside the function, not at import;
pyplot is not needed) and writes its PNG atomically, returning the path.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgml.io import atomic_path


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib Figure on an Agg canvas, without pyplot (whose import and figure bookkeeping a run's
    figures do not need); ``kwargs`` are ``Figure``'s (figsize, layout...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: Path, *, tight: bool = True) -> Path:
    """Write ``fig`` as a PNG atomically; ``tight`` crops it to what is drawn (one more layout pass: a figure
    laid out by hand skips it)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight" if tight else None)
    if "matplotlib.pyplot" in sys.modules:  # a pyplot figure is closed; a new_figure one is simply dropped
        sys.modules["matplotlib.pyplot"].close(fig)
    return Path(path)


def plot_learning_curves(history: Mapping[str, Sequence[float]], path: Path, title: str = "") -> Path:
    """One panel per metric (losses together, AUC apart), epochs on the x axis (numbered from 1)."""
    losses = {k: v for k, v in history.items() if k.endswith("loss")}
    others = {k: v for k, v in history.items() if not k.endswith("loss")}
    panels = [p for p in (losses, others) if p]
    fig = new_figure(figsize=(5 * len(panels), 3.5))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for name, values in panel.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)


def _roc(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-p, kind="stable")
    y = y[order].astype(float)
    tps = np.concatenate([[0.0], np.cumsum(y)])
    fps = np.concatenate([[0.0], np.cumsum(1 - y)])
    return fps / max(fps[-1], 1), tps / max(tps[-1], 1)


@dataclass(frozen=True)
class RocPanel:
    """One class's panel of :func:`plot_roc_curves`: its title and curve (None: the class lacks an outcome)."""

    title: str
    fpr: np.ndarray | None
    tpr: np.ndarray | None


def roc_panels(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str],
               aucs: Sequence[float | None] | None = None) -> list[RocPanel]:
    """What :func:`plot_roc_curves` draws, class by class: the title (with the AUC when given) and the curve."""
    panels = []
    for i, name in enumerate(classes):
        y, p = np.asarray(y_true)[:, i], np.asarray(y_prob)[:, i]
        if 0 < y.sum() < len(y):
            fpr, tpr = _roc(y, p)
            title = f"{name} ({aucs[i]:.3f})" if aucs is not None and aucs[i] is not None else name
            panels.append(RocPanel(title, fpr, tpr))
        else:
            panels.append(RocPanel(f"{name} (undefined)", None, None))
    return panels


#: Panel size and the gaps around it in the ROC grid, in panel widths (the grid is one axes: see below).
_PANEL, _GAP_X, _GAP_Y = 1.0, 0.22, 0.34


def plot_roc_curves(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str], path: Path,
                    aucs: Sequence[float | None] | None = None) -> Path:
    """Small multiples: one ROC curve per class against the chance diagonal, each panel titled with its class
    and AUC (classes without both outcomes say so), false positive rate 0-1 across, true positive rate 0-1 up.

    Every run draws two of these, so the grid is drawn in one axes (a frame, a diagonal and a curve per panel)
    instead of one matplotlib axes per class: 18 axes with their ticks took ~1 s per figure, this ~0.1 s.
    """
    from matplotlib.patches import Rectangle

    panels = roc_panels(y_true, y_prob, classes, aucs)
    cols = min(6, len(panels))
    rows = math.ceil(len(panels) / cols)
    step_x, step_y = _PANEL + _GAP_X, _PANEL + _GAP_Y
    fig = new_figure(figsize=(2.4 * cols, 2.4 * rows * step_y / step_x))
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.96))
    ax.set_axis_off()
    ax.set_xlim(-_GAP_X * 0.8, cols * step_x)
    ax.set_ylim(-_GAP_Y * 0.6, rows * step_y)
    for i, panel in enumerate(panels):
        row, col = divmod(i, cols)
        x0, y0 = col * step_x, (rows - 1 - row) * step_y
        ax.add_patch(Rectangle((x0, y0), _PANEL, _PANEL, fill=False, lw=0.6, color="black"))
        ax.plot([x0, x0 + _PANEL], [y0, y0 + _PANEL], color="grey", lw=0.5, ls="--")
        if panel.fpr is not None and panel.tpr is not None:
            ax.plot(x0 + _PANEL * panel.fpr, y0 + _PANEL * panel.tpr, lw=1.2, color="C0")
        ax.text(x0 + _PANEL / 2, y0 + _PANEL + 0.04, panel.title, ha="center", va="bottom", fontsize=8)
        if col == 0:
            ax.text(x0 - 0.03, y0, "0", ha="right", va="bottom", fontsize=6)
            ax.text(x0 - 0.03, y0 + _PANEL, "1", ha="right", va="top", fontsize=6)
        if row == rows - 1 or i + cols >= len(panels):
            ax.text(x0, y0 - 0.03, "0", ha="left", va="top", fontsize=6)
            ax.text(x0 + _PANEL, y0 - 0.03, "1", ha="right", va="top", fontsize=6)
    fig.text(0.5, 0.0, "false positive rate (0-1 across each panel)", ha="center", va="bottom", fontsize=8)
    fig.text(0.0, 0.5, "true positive rate (0-1 up)", rotation=90, ha="left", va="center", fontsize=8)
    return save_figure(fig, path, tight=False)


def plot_auc_bars(classes: Sequence[str], aucs: Sequence[float | None], path: Path,
                  low: Sequence[float] | None = None, high: Sequence[float] | None = None, title: str = "") -> Path:
    """Per-class AUC as bars, with bootstrap intervals when given; undefined classes are marked."""
    values = np.array([np.nan if a is None else a for a in aucs], dtype=float)
    fig = new_figure(figsize=(max(6, 0.45 * len(classes)), 3.5))
    ax = fig.subplots()
    x = np.arange(len(classes))
    ax.bar(x, np.nan_to_num(values, nan=0.0), color=["C0" if np.isfinite(v) else "lightgrey" for v in values])
    if low is not None and high is not None:
        lo, hi = np.asarray(low, float), np.asarray(high, float)
        ok = np.isfinite(values) & np.isfinite(lo) & np.isfinite(hi)
        ax.errorbar(x[ok], values[ok], yerr=[values[ok] - lo[ok], hi[ok] - values[ok]], fmt="none", ecolor="black",
                    capsize=2, lw=0.8)
    for i in np.flatnonzero(~np.isfinite(values)):
        ax.text(i, 0.02, "n/a", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(x, classes, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.axhline(0.5, color="grey", lw=0.5, ls="--")
    ax.set_ylabel("ROC AUC")
    ax.set_title(title)
    return save_figure(fig, path)


def _bars(left: np.ndarray, counts: np.ndarray, width: float, colour: str) -> Any:
    """Bars from the count axis' floor (0.8, on its log scale) up to each non-zero count, as one collection."""
    from matplotlib.collections import PolyCollection

    verts = [[(x, 0.8), (x, c), (x + width, c), (x + width, 0.8)] for x, c in zip(left, counts, strict=True) if c > 0]
    return PolyCollection(verts, facecolors=colour, edgecolors="none", alpha=0.25, zorder=1)


def plot_reliability(y_true: np.ndarray, before: np.ndarray, after: np.ndarray | None, classes: Sequence[str],
                     path: Path, n_bins: int = 10, labels: tuple[str, str] = ("before", "after")) -> Path:
    """Reliability diagrams, one panel per class: observed frequency against mean predicted probability per bin.

    Bars on a log axis (right) give the records in each bin, so a point resting on three records is seen as such;
    each panel's title gives the class's ECE. Axes are labelled once for the whole figure. The grid is laid out by
    hand, in inches, and the count axes carry fixed decade ticks: a constrained layout and log tick searches over
    36 axes cost seconds per figure, and a training run draws this figure at every calibration. The bars of a
    panel are one collection, not ``Axes.bar``'s artist per bar (720 rectangles: 40% of the figure's time).
    """
    from matplotlib.ticker import FixedLocator, NullLocator

    from ecgml.evaluate.calibration import calibration_errors, reliability

    y = np.asarray(y_true)
    series = [(np.asarray(p), label, f"C{k}") for k, (p, label) in enumerate(zip((before, after), labels,
                                                                                 strict=True)) if p is not None]
    eces = [calibration_errors(y, p, n_bins)[0] for p, _, _ in series]
    n = len(classes)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    panel_w, panel_h, left, right, bottom, top_margin = 2.9, 2.8, 0.6, 0.55, 0.55, 0.25  # inches
    width_in, height_in = panel_w * cols + left + right, panel_h * rows + bottom + top_margin
    fig = new_figure(figsize=(width_in, height_in))
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={
        "left": left / width_in, "right": 1 - right / width_in, "bottom": bottom / height_in,
        "top": 1 - top_margin / height_in, "wspace": 0.3, "hspace": 0.35})
    width = 0.9 / n_bins / max(1, len(series))
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        counts_ax = ax.twinx()
        top = 1
        for k, (probs, label, colour) in enumerate(series):
            r = reliability(y[:, i], probs[:, i], n_bins)
            used = r["count"] > 0
            ax.plot(r["confidence"][used], r["frequency"][used], marker="o", ms=3, lw=1.2, color=colour, label=label,
                    zorder=3)
            left = np.arange(n_bins) / n_bins + 0.05 / n_bins + k * width
            counts_ax.add_collection(_bars(left, r["count"], width, colour))
            top = max(top, int(r["count"].max()))
        counts_ax.set_yscale("log")
        ceiling = 0.8 * (top / 0.8) ** 3  # bars fill the lower third: points stay readable
        counts_ax.set_ylim(0.8, ceiling)
        counts_ax.yaxis.set_major_locator(FixedLocator([10.0 ** d for d in range(int(math.log10(ceiling)) + 1)]))
        counts_ax.yaxis.set_minor_locator(NullLocator())
        counts_ax.tick_params(labelsize=6)
        if (i + 1) % cols and i != n - 1:
            counts_ax.set_yticklabels([])
        else:
            counts_ax.set_ylabel("records per bin (bars, log)", fontsize=7)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls="--", zorder=2)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks((0, 0.25, 0.5, 0.75, 1), ("0", "", "0.5", "", "1"))
        ax.set_yticks((0, 0.25, 0.5, 0.75, 1), ("0", "", "0.5", "", "1"))
        ax.set_zorder(counts_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.tick_params(labelsize=7)
        ece = " → ".join(f"{e[i]:.3f}" for e in eces)
        ax.set_title(f"{classes[i]}  (ECE {ece})", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    fig.supxlabel("mean predicted probability in the bin", fontsize=9, y=0.08 / height_in, va="bottom")
    fig.supylabel("observed frequency of the class in the bin", fontsize=9, x=0.08 / width_in, ha="left")
    return save_figure(fig, path, tight=False)
