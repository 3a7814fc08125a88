"""The study report: what each sweep found, with seeds, intervals and paired tests, as Markdown and PNGs.

Everything in it is computed from the runs a sweep logged (:mod:`ecgml.experiments.collect`): tables of mean
± sd over seeds with the runs' bootstrap intervals, AUC against each swept value, per-class heatmaps,
calibration before/after, a paired bootstrap of fine-tuned against each standalone family on the same test
records, and one sentence per setting derived from those tests (never written by hand). When a sweep was
run under both protocols, a table shows whether the protocol alone changes the conclusion.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.experiments import schema
from ecgml.experiments.collect import ArtifactMissingError, Collected, collect, setting_label
from ecgml.io import atomic_write_text

# the swept value drawn on the x axis of each sweep; other varying setting keys become panels
SWEEP_AXIS = {"fraction": "g12ec_fraction", "pretrain-fraction": "ptbxl_fraction", "sampling-rate": "fs",
              "input-domain": "domain", "leads": "leads", "strategy": "strategy", "calibration": "g12ec_fraction"}
LOG_AXES = ("g12ec_fraction", "ptbxl_fraction")
FAMILY_ORDER = ("xresnet", "resnet", "inception")
ARM_ORDER = ("standalone", "pretrain", "finetune")
MIN_SEEDS = 3
# named choices in the order a reader expects (least to most adapted; time before frequency)
KNOWN_ORDER: dict[str, tuple[str, ...]] = {"strategy": ("linear", "gradual", "full"),
                                           "domain": ("time", "fft_magnitude", "fft")}


def _say(message: str) -> None:
    sys.stderr.write(f"[ecgml report] {message}\n")


# ---- small helpers ---------------------------------------------------------------------------------------------
def model_label(arm: str, family: str) -> str:
    """How a model is named in tables and legends."""
    return {"finetune": f"fine-tuned {family}", "standalone": f"standalone {family}",
            "pretrain": f"PTB-XL pretraining {family}"}.get(arm, f"{arm} {family}")


def _value_key(value: Any, key: str | None = None) -> tuple[int, float, str]:
    """Sort key of a swept value: a known order for named choices, numbers by value, then text."""
    known = KNOWN_ORDER.get(key or "", ())
    if value in known:
        return (0, float(known.index(value)), "")
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _family_key(family: str) -> tuple[int, str]:
    return (FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER), family)


def _fmt(x: float, digits: int = 3, sign: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    if abs(x) < 0.5 * 10**-digits:
        x = 0.0  # no "-0.000"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _p(p: float, rounds: float | None = None) -> str:
    """A p-value; at the bootstrap's floor (no round crossed 0) it says so rather than print a false precision."""
    if not np.isfinite(p):
        return "n/a"
    if rounds and p <= 2 / (rounds + 1) + 1e-12:
        return f"≤{p:.3f} (no round crossed 0)"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _slug(*parts: str) -> str:
    return "-".join("".join(ch if ch.isalnum() else "_" for ch in p) for p in parts)


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _mean_sd(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if not len(values):
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f} (n=1)"
    return f"{values.mean():.3f} ± {_sd(values):.3f}"


# ---- the analysis ----------------------------------------------------------------------------------------------
@dataclass
class SweepView:
    """One sweep under one protocol: its runs (pretraining rows attached to each target setting) and axes."""

    sweep: str
    protocol: str
    runs: pd.DataFrame
    settings: list[str]
    x: str | None
    panels: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return _slug(self.sweep, self.protocol)

    def panel_of(self, setting: str) -> str | None:
        if not self.panels:
            return None
        d = json.loads(setting)
        return ", ".join(f"{k}={d.get(k)}" for k in self.panels)


def _subset(small: dict[str, Any], big: dict[str, Any]) -> bool:
    return all(k in big and big[k] == v for k, v in small.items())


def _attach_shared(collected: Collected, runs: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Baselines re-keyed to every fine-tuned setting they serve.

    A pretraining or standalone run whose setting is a strict subset of fine-tuned settings (the pretraining
    of the fraction sweep, ``{}``; the standalone ``{"g12ec_fraction": 0.1}`` of the strategy sweep, whose
    fine-tuned settings also name a strategy) is the baseline of each of them: it is attached to each, marked
    ``shared_from``. A sweep that reused an existing backbone has no pretraining children: the runs named by
    the fine-tuned runs' ``ecgml.backbone_run_id`` tag stand in, read from the tracking store.
    """
    runs = runs.assign(shared_from=None)
    finetune = runs[runs["arm"] == "finetune"]
    targets = list(finetune["setting"].unique())
    if not targets:
        return runs
    kept: list[pd.DataFrame] = [runs[(runs["arm"] == "finetune") | runs["setting"].isin(targets)]]
    attached: list[dict[str, Any]] = []
    for setting, group in runs[(runs["arm"] != "finetune") & ~runs["setting"].isin(targets)].groupby("setting"):
        served = [t for t in targets if _subset(json.loads(setting), json.loads(t))]
        if not served:
            kept.append(group)
            continue
        for target in served:
            values = json.loads(target)
            for _, r in group.iterrows():
                attached.append({**r.to_dict(), **values, "setting": target, "setting_label": setting_label(values),
                                 "shared_from": r["setting_label"]})
        arms = ", ".join(sorted(group["arm"].unique()))
        notes.append(f"{arms} runs at {group['setting_label'].iloc[0]} are the baseline of "
                     f"{len(served)} fine-tuned setting(s)")
    has_pretrain = {a["setting"] for a in attached if a["arm"] == "pretrain"}
    has_pretrain |= set(runs.loc[(runs["arm"] == "pretrain") & runs["setting"].isin(targets), "setting"])
    for target in targets:
        if target in has_pretrain:
            continue
        values = json.loads(target)
        ft = finetune[finetune["setting"] == target]
        for rid, family in ft[["backbone_run_id", "family"]].drop_duplicates().itertuples(index=False):
            if not isinstance(rid, str):
                continue
            auc = collected.run_metric(rid, "test_macro_auc")
            if auc is None:
                notes.append(f"pretraining run {rid} named by fine-tuned runs has no test_macro_auc")
                continue
            low, high = (collected.run_metric(rid, f"test_macro_auc_{b}") for b in ("low", "high"))
            attached.append({"run_id": rid, "arm": "pretrain", "family": family, "kind": "pretrain",
                             "sweep": ft["sweep"].iloc[0], "protocol": ft["protocol"].iloc[0], **values,
                             "setting": target, "setting_label": setting_label(values), "seed": -1,
                             "test_macro_auc": auc, "test_macro_auc_low": np.nan if low is None else low,
                             "test_macro_auc_high": np.nan if high is None else high,
                             "shared_from": "backbone run"})
    out = pd.concat([*kept, pd.DataFrame(attached)], ignore_index=True) if attached else pd.concat(kept)
    return out.drop_duplicates(subset=["run_id", "setting"]).reset_index(drop=True)


def sweep_views(collected: Collected) -> list[SweepView]:
    """One view per sweep and protocol present, settings ordered along the swept value."""
    views = []
    groups = sorted(collected.runs.groupby(["sweep", "protocol"]), key=lambda item: (
        str(item[0][0]), schema.PROTOCOLS.index(item[0][1]) if item[0][1] in schema.PROTOCOLS else 9, str(item[0][1])))
    for (sweep, protocol), runs in groups:
        notes: list[str] = []
        runs = _attach_shared(collected, runs, notes)
        dicts = [json.loads(s) for s in runs["setting"].unique()]
        keys = list(dict.fromkeys(k for d in dicts for k in d))
        varying = [k for k in keys if len({json.dumps(d.get(k)) for d in dicts}) > 1]
        preferred = SWEEP_AXIS.get(str(sweep))
        x = preferred if preferred in varying else (varying[0] if varying else (keys[0] if keys else None))
        panels = [k for k in varying if k != x]
        order = [k for k in [x, *panels, *keys] if k is not None]

        def sort_key(s: str, order: list[str] = order) -> tuple[Any, ...]:
            d = json.loads(s)
            return tuple(_value_key(d.get(k), k) for k in dict.fromkeys(order))

        settings = sorted(runs["setting"].unique(), key=sort_key)
        views.append(SweepView(str(sweep), str(protocol), runs, settings, x, panels, notes))
    return views


def summarise(view: SweepView) -> pd.DataFrame:
    """Per setting and model: seeds, mean and sd of test macro AUC, the envelope of the runs' bootstrap CIs."""
    rows = []
    for (setting, arm, family), g in view.runs.groupby(["setting", "arm", "family"], sort=False):
        auc = g["test_macro_auc"].to_numpy(dtype=float)
        rows.append({
            "sweep": view.sweep, "protocol": view.protocol, "setting": setting,
            "setting_label": g["setting_label"].iloc[0],
            "arm": arm, "family": family, "model": model_label(str(arm), str(family)),
            "n_seeds": int(np.isfinite(auc).sum()), "seeds": ",".join(str(s) for s in sorted(g["seed"])),
            "mean": float(np.nanmean(auc)) if np.isfinite(auc).any() else np.nan, "sd": _sd(auc[np.isfinite(auc)]),
            "ci_low": float(g["test_macro_auc_low"].min()), "ci_high": float(g["test_macro_auc_high"].max()),
            "best_val_mean": float(g["best_val_macro_auc"].mean()) if "best_val_macro_auc" in g else np.nan,
            "auprc_mean": float(g["test_macro_auprc"].mean()) if "test_macro_auprc" in g else np.nan,
            "fmax_mean": float(g["test_fmax"].mean()) if "test_fmax" in g else np.nan,
            **json.loads(setting),
        })
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["_s"] = out["setting"].map(view.settings.index)
    out["_a"] = out["arm"].map(lambda a: ARM_ORDER.index(a) if a in ARM_ORDER else len(ARM_ORDER))
    out["_f"] = out["family"].map(_family_key)
    return out.sort_values(["_s", "_a", "_f"]).drop(columns=["_s", "_a", "_f"]).reset_index(drop=True)


def best_standalone(summary: pd.DataFrame, setting: str) -> tuple[str | None, float]:
    """The standalone family with the highest mean test macro AUC at a setting (the original's 'best standalone')."""
    sa = summary[(summary["setting"] == setting) & (summary["arm"] == "standalone")]
    if sa.empty or not np.isfinite(sa["mean"]).any():
        return None, float("nan")
    best = sa.loc[sa["mean"].idxmax()]
    return str(best["family"]), float(best["mean"])


class _Predictions:
    """Each run's test predictions in one canonical order (records by id, classes by name) and its bootstrap rounds.

    Every run tested on the same records shares one matrix of bootstrap multiplicities, so each run's per-class
    AUC rounds are computed once and any pair of runs is compared by a subtraction.
    """

    def __init__(self, collected: Collected, n_rounds: int, seed: int) -> None:
        self.collected, self.n_rounds, self.seed = collected, n_rounds, seed
        self._frames: dict[str, pd.DataFrame] = {}
        self._rounds: dict[str, np.ndarray] = {}
        self._counts: dict[tuple[str, ...], np.ndarray] = {}

    def frame(self, run_id: str) -> pd.DataFrame:
        if run_id not in self._frames:
            raw = self.collected.predictions(run_id)
            classes = sorted(c.removeprefix("prob_") for c in raw.columns if c.startswith("prob_"))
            cols = ["record_id", *[f"true_{c}" for c in classes], *[f"prob_{c}" for c in classes]]
            missing = [c for c in cols if c not in raw.columns]
            if missing:
                raise ArtifactMissingError(f"predictions of run {self.collected.describe(run_id)} lack "
                                           f"columns {missing}")
            self._frames[run_id] = raw[cols].sort_values("record_id", kind="stable").reset_index(drop=True)
        return self._frames[run_id]

    def rounds(self, run_id: str) -> np.ndarray:
        from ecgml.evaluate.paired import auc_rounds, bootstrap_counts

        if run_id not in self._rounds:
            f = self.frame(run_id)
            ids = tuple(f["record_id"])
            if ids not in self._counts:
                self._counts[ids] = bootstrap_counts(len(ids), n_rounds=self.n_rounds, seed=self.seed)
            y = f[[c for c in f.columns if c.startswith("true_")]].to_numpy(dtype=bool)
            p = f[[c for c in f.columns if c.startswith("prob_")]].to_numpy(dtype=np.float64)
            self._rounds[run_id] = auc_rounds(y, p, self._counts[ids])
        return self._rounds[run_id]

    def compare(self, a: str, b: str) -> dict[str, Any]:
        """Paired bootstrap of macro AUC(a) - macro AUC(b); raises AlignmentError if the records differ."""
        from ecgml.evaluate.auc import macro_auc
        from ecgml.evaluate.paired import align_predictions, paired_difference

        fa, fb = self.frame(a), self.frame(b)
        pair = align_predictions(fa, fb, names=(self.collected.describe(a), self.collected.describe(b)))
        estimate = macro_auc(pair.y_true, pair.prob_a) - macro_auc(pair.y_true, pair.prob_b)
        out = paired_difference(self.rounds(a), self.rounds(b), estimate)
        out["n_records"] = len(pair.record_ids)
        out["auc_a"] = macro_auc(pair.y_true, pair.prob_a)
        out["auc_b"] = macro_auc(pair.y_true, pair.prob_b)
        return out


def paired_tests(view: SweepView, preds: _Predictions, problems: list[str], progress: bool = True) -> pd.DataFrame:
    """Per setting and seed: every fine-tuned run against the standalone run of each family with the same seed."""
    from tqdm.auto import tqdm

    from ecgml.evaluate.paired import AlignmentError

    runs = view.runs[view.runs["arm"].isin(["finetune", "standalone"])]
    pairs = []
    for setting in view.settings:
        at = runs[runs["setting"] == setting]
        for _, ft in at[at["arm"] == "finetune"].iterrows():
            for _, sa in at[(at["arm"] == "standalone") & (at["seed"] == ft["seed"])].iterrows():
                pairs.append((setting, ft, sa))
    rows = []
    for setting, ft, sa in tqdm(pairs, desc=f"paired tests {view.sweep}/{view.protocol}", disable=not progress or None,
                                leave=False):
        row = {"sweep": view.sweep, "protocol": view.protocol, "setting": setting,
               "setting_label": ft["setting_label"], "seed": int(ft["seed"]), "finetune_family": ft["family"],
               "standalone_family": sa["family"], "finetune_run_id": ft["run_id"], "standalone_run_id": sa["run_id"]}
        try:
            out = preds.compare(ft["run_id"], sa["run_id"])
        except (AlignmentError, ArtifactMissingError) as exc:
            problems.append(f"paired test skipped: {exc}")
            rows.append({**row, "note": str(exc)})
            continue
        rows.append({**row, "n_records": out["n_records"], "finetune_auc": out["auc_a"], "standalone_auc": out["auc_b"],
                     "diff": out["estimate"], "diff_boot_mean": out["mean"], "low": out["low"], "high": out["high"],
                     "p_value": out["p_value"], "rounds": out["rounds"], "note": ""})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["_s"] = frame["setting"].map(view.settings.index)
    frame["_f"] = frame["standalone_family"].map(_family_key)
    return frame.sort_values(["_s", "seed", "_f"], kind="stable").drop(columns=["_s", "_f"]).reset_index(drop=True)


def conclusions(view: SweepView, summary: pd.DataFrame, paired: pd.DataFrame) -> pd.DataFrame:
    """One verdict and sentence per setting, from the paired tests against the best standalone family."""
    rows = []
    for setting in view.settings:
        label = setting_label(json.loads(setting))
        best, best_mean = best_standalone(summary, setting)
        ft = summary[(summary["setting"] == setting) & (summary["arm"] == "finetune")]
        if ft.empty or best is None:
            continue
        ft_best = ft.loc[ft["mean"].idxmax()]
        ft_family, ft_mean = str(ft_best["family"]), float(ft_best["mean"])
        tests = paired[(paired["setting"] == setting) & (paired["standalone_family"] == best)
                       & (paired["finetune_family"] == ft_family)] if len(paired) else paired
        tests = tests[np.isfinite(tests["diff"].astype(float))] if "diff" in tests else tests.iloc[0:0]
        attempted = paired[(paired["setting"] == setting) & (paired["standalone_family"] == best)
                           & (paired["finetune_family"] == ft_family)] if len(paired) else paired
        n = len(tests)
        base = {"sweep": view.sweep, "protocol": view.protocol, "setting": setting, "setting_label": label,
                "finetune_family": ft_family, "best_standalone": best, "finetune_mean": ft_mean,
                "best_standalone_mean": best_mean, "gain": ft_mean - best_mean, "n_seeds": n}
        if n == 0:
            why = (f"{len(attempted)} pair(s) could not be compared, see the paired tests" if len(attempted)
                   else f"no fine-tuned and standalone {best} runs with the same seed")
            rows.append({**base, "verdict": "untested", "wins": 0, "above": 0, "below": 0, "mean_diff": np.nan,
                         "sentence": f"{label}: no paired comparison was possible ({why})"})
            continue
        d = tests["diff"].to_numpy(dtype=float)
        wins = int((d > 0).sum())
        above = int((tests["low"] > 0).sum())
        below = int((tests["high"] < 0).sum())
        few = f" (only {n} seed{'s' if n > 1 else ''}; the study asks for {MIN_SEEDS})" if n < MIN_SEEDS else ""
        if above == n:
            verdict = "finetune"
            sentence = (f"fine-tuning beats the best standalone ({best}) at {label} in {wins}/{n} seeds "
                        f"(mean {_fmt(d.mean(), sign=True)}, {'all ' if n > 1 else ''}paired CIs above 0){few}")
        elif below == n:
            verdict = "standalone"
            sentence = (f"the best standalone ({best}) beats fine-tuning at {label} in {n - wins}/{n} seeds "
                        f"(mean {_fmt(d.mean(), sign=True)}, {'all ' if n > 1 else ''}paired CIs below 0){few}")
        else:
            verdict = "unclear"
            sentence = (f"no consistent gap at {label}: fine-tuning ahead of the best standalone ({best}) in "
                        f"{wins}/{n} seeds (mean {_fmt(d.mean(), sign=True)}); paired CIs above 0 in {above}/{n}, "
                        f"below 0 in {below}/{n}{few}")
        rows.append({**base, "verdict": verdict, "wins": wins, "above": above, "below": below,
                     "mean_diff": float(d.mean()), "sentence": sentence})
    return pd.DataFrame(rows)


# ---- sections --------------------------------------------------------------------------------------------------
@dataclass
class _Context:
    collected: Collected
    out_dir: Path
    preds: _Predictions
    progress: bool
    problems: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def figures(self) -> Path:
        return self.out_dir / "figures"


def _results_table(view: SweepView, summary: pd.DataFrame) -> str:
    """Rows as in the original's tables (standalone per family, PTB-XL pretraining, fine-tuned, gain); settings as
    columns."""
    labels = [setting_label(json.loads(s)) for s in view.settings]
    rows: list[list[str]] = []
    models = summary[["arm", "family"]].drop_duplicates()
    models = sorted(models.itertuples(index=False), key=lambda m: (ARM_ORDER.index(m.arm) if m.arm in ARM_ORDER
                                                                   else 9, _family_key(m.family)))
    for arm, family in models:
        name = {"standalone": f"standalone {family} (G12EC)", "pretrain": f"PTB-XL pretraining {family} (PTB-XL test)",
                "finetune": f"G12EC fine-tuned {family}"}.get(arm, model_label(arm, family))
        cells = []
        for setting in view.settings:
            runs = view.runs
            g = runs[(runs["setting"] == setting) & (runs["arm"] == arm) & (runs["family"] == family)]
            if g.empty:
                cells.append("—")
                continue
            auc = g["test_macro_auc"].to_numpy(dtype=float)
            ci = f" [{_fmt(g['test_macro_auc_low'].min())}, {_fmt(g['test_macro_auc_high'].max())}]"
            shared = g["shared_from"].dropna().unique() if "shared_from" in g else []
            source = (" (from backbone run)" if "backbone run" in shared
                      else f" (shared: {shared[0]})" if len(shared) and arm != "pretrain" else "")
            cells.append(_mean_sd(auc) + ci + source)
        rows.append([name, *cells])
    for family in sorted(summary.loc[summary["arm"] == "finetune", "family"].unique(), key=_family_key):
        cells = []
        for setting in view.settings:
            best, best_mean = best_standalone(summary, setting)
            ft = summary[(summary["setting"] == setting) & (summary["arm"] == "finetune")
                         & (summary["family"] == family)]
            gain = _fmt(ft["mean"].iloc[0] - best_mean, sign=True) if len(ft) else ""
            cells.append("—" if best is None or ft.empty else f"{gain} (vs {best})")
        rows.append([f"gain: fine-tuned {family} − best standalone", *cells])
    return _table(["model", *labels], rows)


def _plot_sweep(ctx: _Context, view: SweepView, summary: pd.DataFrame) -> str | None:
    from ecgml.experiments.report_figures import plot_auc_bars_grouped, plot_auc_lines

    if view.x is None or summary.empty:
        return None
    x = view.x
    plot = summary[summary[x].notna()].copy() if x in summary else summary.iloc[0:0]
    if plot.empty:
        return None
    seeds = view.runs.assign(model=[model_label(a, f) for a, f in zip(view.runs["arm"], view.runs["family"],
                                                                       strict=True)])
    path = ctx.figures / f"auc_{view.key}.png"
    title = f"{view.sweep} ({view.protocol}): test macro AUC vs {x}"
    numeric = all(_value_key(v)[0] == 0 for v in plot[x]) and not isinstance(plot[x].iloc[0], str)
    if numeric:
        panel = None
        if view.panels:
            plot["panel"] = plot["setting"].map(view.panel_of)
            seeds["panel"] = seeds["setting"].map(view.panel_of)
            panel = "panel"
        plot_auc_lines(plot, seeds, x, path, title=title, panel=panel, log_x=x in LOG_AXES)
    else:
        if view.panels:
            plot["model"] = plot["model"] + " (" + plot["setting"].map(view.panel_of) + ")"
        order = sorted(dict.fromkeys(plot[x]), key=lambda v: _value_key(v, x))
        plot_auc_bars_grouped(plot, x, path, title=title, order=order)
    return path.relative_to(ctx.out_dir).as_posix()


def _per_class(ctx: _Context, run_id: str) -> dict[str, float]:
    """Test AUC per class of a run: from metrics.json, else recomputed from its predictions."""
    from ecgml.evaluate.auc import per_class_report

    try:
        doc = ctx.collected.metrics_json(run_id).get("test_per_class_auc")
        if isinstance(doc, dict) and doc:
            return {c: (np.nan if v is None else float(v)) for c, v in doc.items()}
    except ArtifactMissingError as exc:
        ctx.problems.append(f"{exc}; per-class AUC recomputed from predictions")
    frame = ctx.preds.frame(run_id)
    classes = [c.removeprefix("prob_") for c in frame.columns if c.startswith("prob_")]
    report = per_class_report(frame[[f"true_{c}" for c in classes]].to_numpy(),
                              frame[[f"prob_{c}" for c in classes]].to_numpy(), classes)
    return {c: (np.nan if v is None else v) for c, v in report["auc"].items()}


def _heatmap(ctx: _Context, view: SweepView, summary: pd.DataFrame) -> str | None:
    from ecgml.experiments.report_figures import plot_class_heatmaps

    runs = view.runs[view.runs["arm"].isin(["finetune", "standalone"])]
    if runs.empty:
        return None
    per_run: dict[str, dict[str, float]] = {}
    for rid in runs["run_id"]:
        try:
            per_run[rid] = _per_class(ctx, rid)
        except ArtifactMissingError as exc:
            ctx.problems.append(f"per-class AUC unavailable: {exc}")
    if not per_run:
        return None
    classes = list(dict.fromkeys(c for d in per_run.values() for c in d))
    labels = [setting_label(json.loads(s)) for s in view.settings]
    matrices: dict[str, pd.DataFrame] = {}
    groups = sorted(runs[["arm", "family"]].drop_duplicates().itertuples(index=False),
                    key=lambda m: (0 if m.arm == "finetune" else 1, _family_key(m.family)))
    for arm, family in groups:
        m = pd.DataFrame(np.nan, index=classes, columns=labels)
        for setting, label in zip(view.settings, labels, strict=True):
            ids = runs[(runs["setting"] == setting) & (runs["arm"] == arm) & (runs["family"] == family)]["run_id"]
            values = [[per_run[r].get(c, np.nan) for c in classes] for r in ids if r in per_run]
            if values:
                with warnings.catch_warnings():  # a class without positives in every run is n/a, not a warning
                    warnings.simplefilter("ignore", RuntimeWarning)
                    m[label] = np.nanmean(np.array(values, dtype=float), axis=0)
        matrices[model_label(arm, family)] = m
    ft_names = [n for n in matrices if n.startswith("fine-tuned")]
    diverging = []
    if ft_names:
        diff = pd.DataFrame(np.nan, index=classes, columns=labels)
        for setting, label in zip(view.settings, labels, strict=True):
            best, _ = best_standalone(summary, setting)
            if best is not None and model_label("standalone", best) in matrices:
                diff[label] = matrices[ft_names[0]][label] - matrices[model_label("standalone", best)][label]
        name = f"{ft_names[0]} − best standalone"
        matrices[name] = diff
        diverging.append(name)
    table = pd.concat(matrices, names=["model", "class"])
    ctx.tables[f"per_class_auc_{view.key}"] = table.reset_index()
    path = ctx.figures / f"per_class_auc_{view.key}.png"
    plot_class_heatmaps(matrices, path, title=f"{view.sweep} ({view.protocol}): mean test AUC per class over seeds",
                        diverging=diverging)
    return path.relative_to(ctx.out_dir).as_posix()


def _paired_table(paired: pd.DataFrame) -> str:
    rows = []
    for _, r in paired.iterrows():
        if r.get("note"):
            rows.append([r["setting_label"], r["seed"], f"fine-tuned {r['finetune_family']}",
                         f"standalone {r['standalone_family']}", "—", "—", "—", "—", "—",
                         f"not comparable: {r['note']}"])
            continue
        rows.append([r["setting_label"], r["seed"], f"fine-tuned {r['finetune_family']}",
                     f"standalone {r['standalone_family']}", int(r["n_records"]),
                     f"{_fmt(r['finetune_auc'])} vs {_fmt(r['standalone_auc'])}", _fmt(r["diff"], sign=True),
                     f"[{_fmt(r['low'], sign=True)}, {_fmt(r['high'], sign=True)}]", _p(r["p_value"], r.get("rounds")),
                     "CI above 0" if r["low"] > 0 else ("CI below 0" if r["high"] < 0 else "CI includes 0")])
    return _table(["setting", "seed", "model A", "model B", "records", "AUC A vs B", "A − B", "95% CI", "p", "reading"],
                  rows)


def _sweep_section(ctx: _Context, view: SweepView) -> tuple[list[str], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    summary = summarise(view)
    paired = paired_tests(view, ctx.preds, ctx.problems, ctx.progress)
    verdicts = conclusions(view, summary, paired)
    lines = [f"## Sweep `{view.sweep}`, protocol `{view.protocol}`", ""]
    trained = summary[summary["arm"].isin(["finetune", "standalone"])] if len(summary) else summary
    seeds = trained.groupby("setting")["n_seeds"].min() if len(trained) else pd.Series(dtype=int)
    if len(seeds) and seeds.min() < MIN_SEEDS:
        lines += [f"> Warning: some settings have fewer than {MIN_SEEDS} seeds per model "
                  f"(minimum {int(seeds.min())}); their conclusions are weaker.", ""]
    lines += [f"Swept value: `{view.x}`" + (f"; panels by {', '.join(f'`{p}`' for p in view.panels)}" if view.panels
                                            else "") + f". {view.runs['run_id'].nunique()} runs.", ""]
    lines += [*(f"- note: {n}" for n in view.notes), ""] if view.notes else []
    lines += ["### Results (test macro AUC, mean ± sd over seeds [lowest, highest bound of the runs' 95% CIs])", "",
              _results_table(view, summary), ""]
    figure = _plot_sweep(ctx, view, summary)
    if figure:
        lines += [f"### AUC versus `{view.x}`", "", f"![AUC versus {view.x}]({figure})", "",
                  "Lines or bars: mean over seeds; error bars: from the lowest lower bound to the highest upper bound "
                  "of the runs' bootstrap 95% CIs; dots: single runs.", ""]
    lines += ["### Paired tests: fine-tuned against standalone on the same test records", ""]
    if paired.empty:
        lines += ["No fine-tuned and standalone runs with the same seed to pair.", ""]
    else:
        lines += [_paired_table(paired), ""]
    lines += ["### Conclusions", ""]
    lines += [f"- {s}" for s in verdicts["sentence"]] if len(verdicts) else ["- no setting has both arms."]
    lines += [""]
    heat = _heatmap(ctx, view, summary)
    if heat:
        lines += ["### Per-class AUC", "", f"![per-class AUC]({heat})", "",
                  "Mean test AUC per class over seeds for each model and setting; the last panel is fine-tuned minus "
                  "the best standalone family of that setting (n/a: class without positives in the test split).", ""]
    return lines, summary, paired, verdicts


def _calibration_section(ctx: _Context) -> list[str]:
    from ecgml.evaluate.figures import plot_reliability
    from ecgml.evaluate.paired import AlignmentError, align_predictions

    cal = ctx.collected.calibrations
    lines = ["## Calibration", ""]
    if cal.empty:
        return [*lines, "No calibration runs in the selected sweeps.", ""]
    metrics = [("ECE", "test_macro_ece"), ("MCE", "test_macro_mce"), ("Brier", "test_macro_brier")]
    rows, records = [], []
    for (sweep, protocol, setting, arm, family), g in cal.groupby(["sweep", "protocol", "setting", "arm", "family"]):
        methods = []
        for rid in g["run_id"]:
            try:
                methods.append(str(ctx.collected.calibration_json(rid).get("method", "?")))
            except ArtifactMissingError as exc:
                ctx.problems.append(str(exc))
        cells = []
        for _, key in metrics:
            before, after = g[f"{key}_before"].to_numpy(float), g[f"{key}_after"].to_numpy(float)
            cells.append(f"{_mean_sd(before)} → {_mean_sd(after)}")
        single, per_class = g["test_macro_ece_after_single"].to_numpy(float), g["test_macro_ece_after_per_class"]
        chosen = ", ".join(f"{m} ×{methods.count(m)}" for m in dict.fromkeys(methods)) or "?"
        rows.append([sweep, protocol, setting_label(json.loads(setting)), model_label(arm, family), len(g), *cells,
                     _mean_sd(single), _mean_sd(per_class.to_numpy(float)), chosen])
        records.append({"sweep": sweep, "protocol": protocol, "setting": setting, "arm": arm, "family": family,
                        "n": len(g), **{f"{k}_{w}_mean": float(g[f"{k}_{w}"].mean()) for _, k in metrics
                                        for w in ("before", "after")}})
    ctx.tables["calibration"] = pd.DataFrame(records)
    lines += ["Test split, mean ± sd over seeds, before → after temperature scaling (fitted on validation).", "",
              _table(["sweep", "protocol", "setting", "model", "runs", "ECE", "MCE", "Brier", "ECE after (one T)",
                      "ECE after (T per class)", "method chosen"], rows), ""]
    for arm in ("finetune", "standalone"):
        mine = cal[cal["arm"] == arm]
        if mine.empty:
            continue
        preferred = mine[mine["sweep"] == "calibration"]
        mine = preferred if len(preferred) else mine
        setting = mine["setting"].value_counts().index[0]
        g = mine[mine["setting"] == setting].sort_values("test_macro_ece_before")
        r = g.iloc[(len(g) - 1) // 2]  # the seed with the median ECE before: representative, not the best
        try:
            before = ctx.collected.predictions(r["calibrated_run_id"])
            after = ctx.collected.calibrated_predictions(r["run_id"])
            pair = align_predictions(before, after, names=(ctx.collected.describe(r["calibrated_run_id"]),
                                                           ctx.collected.describe(r["run_id"])))
        except (ArtifactMissingError, AlignmentError) as exc:
            ctx.problems.append(f"reliability diagram of {arm} skipped: {exc}")
            continue
        path = ctx.figures / f"reliability_{arm}.png"
        plot_reliability(pair.y_true, pair.prob_a, pair.prob_b, list(pair.classes), path)
        lines += [f"### Reliability, {model_label(arm, r['family'])}, {r['sweep']} {r['setting_label']} seed "
                  f"{r['seed']} (median ECE before among its seeds)", "",
                  f"ECE {_fmt(r['test_macro_ece_before'])} → {_fmt(r['test_macro_ece_after'])}; "
                  f"training run `{r['calibrated_run_id']}`, calibration run `{r['run_id']}`.", "",
                  f"![reliability {arm}]({path.relative_to(ctx.out_dir).as_posix()})", ""]
    return lines


def _protocol_section(verdicts: pd.DataFrame) -> list[str]:
    """Standard against seed protocol, per sweep and setting run under both: does the conclusion change?"""
    lines = ["## Protocol: standard versus seed", ""]
    if verdicts.empty or verdicts["protocol"].nunique() < 2:
        return [*lines, "Only one protocol was run for the selected sweeps; nothing to compare.", ""]
    rows, changed, total = [], 0, 0
    for (sweep, _setting), g in verdicts.groupby(["sweep", "setting"], sort=False):
        by = {p: r for p, r in zip(g["protocol"], g.itertuples(index=False), strict=True)}
        if "standard" not in by or "seed" not in by:
            continue
        s, d = by["standard"], by["seed"]
        same = s.verdict == d.verdict
        total += 1
        changed += not same
        rows.append([sweep, s.setting_label, f"{_fmt(s.finetune_mean)} / {_fmt(d.finetune_mean)}",
                     f"{_fmt(s.best_standalone_mean)} ({s.best_standalone}) / {_fmt(d.best_standalone_mean)} "
                     f"({d.best_standalone})", f"{_fmt(s.gain, sign=True)} / {_fmt(d.gain, sign=True)}",
                     f"{_fmt(d.gain - s.gain, sign=True)}", f"{s.verdict} / {d.verdict}",
                     "same" if same else "CHANGES"])
    if not rows:
        return [*lines, "No setting was run under both protocols.", ""]
    lines += [f"The protocol alone changes the conclusion in {changed} of {total} setting(s) run under both.", "",
              _table(["sweep", "setting", "fine-tuned (standard / seed)", "best standalone (standard / seed)",
                      "gain (standard / seed)", "gain change", "verdict (standard / seed)", "conclusion"], rows), ""]
    return lines


def _runs_section(collected: Collected) -> list[str]:
    runs = collected.runs
    lines = ["## Runs", "", f"Experiment `{collected.experiment}` (id {collected.experiment_id}), tracking store "
             f"`{collected.tracking_uri}`: {len(runs)} finished training runs, {len(collected.calibrations)} "
             f"calibration runs, {len(collected.sweeps)} sweep run(s).", ""]
    rows = []
    for (sweep, protocol, arm, family), g in runs.groupby(["sweep", "protocol", "arm", "family"]):
        seeds = ",".join(map(str, sorted(g["seed"].unique())))
        rows.append([sweep, protocol, arm, family, g["setting"].nunique(), seeds, len(g)])
    lines += [_table(["sweep", "protocol", "arm", "family", "settings", "seeds", "runs"], rows), ""]
    skipped = collected.skipped
    lines += [f"**Skipped unfinished runs: {len(skipped)}.**"
              + (" They are left out of every table below." if len(skipped) else ""), ""]
    if len(skipped):
        lines += [_table(["run", "status", "kind", "sweep", "arm", "family", "setting", "seed"],
                         skipped[["run_id", "status", "kind", "sweep", "arm", "family", "setting", "seed"]]
                         .fillna("").itertuples(index=False)), ""]
    if collected.ignored:
        lines += [f"Ignored runs: {len(collected.ignored)}.", "",
                  _table(["run", "reason"], collected.ignored), ""]
    return lines


_HOW_TO_READ = """## How to read this report

- **Per run**: test macro AUC with the run's own bootstrap 95% interval over test records (logged by the
  training run as `test_macro_auc_low/high`).
- **Across seeds**: tables give mean ± sd over seeds (sample sd); the bracket is the lowest lower bound and the
  highest upper bound of the runs' 95% intervals (an envelope, deliberately conservative: with {min_seeds} seeds a
  bootstrap of the mean over seeds would be meaningless). Plots draw the same mean and envelope.
- **Paired tests**: a fine-tuned run and a standalone run with the same seed are scored on the same test records;
  records are resampled *jointly* ({rounds} rounds), so the interval is that of the difference in macro AUC itself.
  p is the two-sided bootstrap p-value (twice the smaller share of rounds on either side of 0). A gap is called
  real at a setting only when the paired interval excludes 0 in every seed.
- **PTB-XL pretraining** AUCs are on the PTB-XL test split, not on G12EC: they show what the backbone learned,
  not a comparison with the G12EC rows.
- **Gain**: mean fine-tuned AUC minus the mean AUC of the best standalone family at that setting.
"""


def write_report(collected: Collected, out_dir: Path, *, title: str = "ecgml study report", n_rounds: int = 1000,
                 seed: int = 0, progress: bool = True, log: Callable[[str], None] = _say) -> Path:
    """Write ``out_dir/report.md``, its PNGs under ``figures/`` and its tables as CSV under ``tables/``."""
    out_dir = Path(out_dir)
    ctx = _Context(collected, out_dir, _Predictions(collected, n_rounds, seed), progress)
    ctx.figures.mkdir(parents=True, exist_ok=True)
    selection = sorted(collected.runs["sweep"].unique())
    body: list[str] = []
    summaries, paired_all, verdicts_all = [], [], []
    for view in sweep_views(collected):
        log(f"sweep {view.sweep} ({view.protocol}): {view.runs['run_id'].nunique()} runs, "
            f"{len(view.settings)} settings")
        lines, summary, paired, verdicts = _sweep_section(ctx, view)
        body += lines
        summaries.append(summary)
        paired_all.append(paired)
        verdicts_all.append(verdicts)
    log("calibration")
    calibration = _calibration_section(ctx)
    verdicts = pd.concat(verdicts_all, ignore_index=True) if verdicts_all else pd.DataFrame()
    protocol = _protocol_section(verdicts)
    head = [f"# {title}", "", f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from sweep(s) "
            f"{', '.join(f'`{s}`' for s in selection)}.", ""]
    summary_lines = ["## Summary", ""]
    summary_lines += [f"- `{r.sweep}` ({r.protocol}): {r.sentence}" for r in verdicts.itertuples()] if len(verdicts) \
        else ["- no setting has both a fine-tuned and a standalone arm."]
    summary_lines += [""]
    problems = ["## Problems met while writing the report", ""]
    problems += [f"- {p}" for p in dict.fromkeys(ctx.problems)] if ctx.problems else ["None."]
    appendix = ["## Appendix: all runs", "", _table(
        ["run", "sweep", "protocol", "arm", "family", "setting", "seed", "test macro AUC [95% CI]", "best val AUC"],
        [[r.run_id, r.sweep, r.protocol, r.arm, r.family, r.setting_label, r.seed,
          f"{_fmt(r.test_macro_auc)} [{_fmt(r.test_macro_auc_low)}, {_fmt(r.test_macro_auc_high)}]",
          _fmt(r.best_val_macro_auc)] for r in collected.runs.itertuples()]), ""]
    text = "\n".join([*head, *_runs_section(collected), _HOW_TO_READ.format(min_seeds=MIN_SEEDS, rounds=n_rounds),
                      *summary_lines, *body, *calibration, *protocol, *problems, "", *appendix])
    tables = {"runs": collected.runs, "summary": pd.concat(summaries, ignore_index=True) if summaries else None,
              "paired_tests": pd.concat(paired_all, ignore_index=True) if paired_all else None,
              "conclusions": verdicts, **ctx.tables}
    for name, frame in tables.items():
        if frame is not None and len(frame):
            atomic_write_text(out_dir / "tables" / f"{name}.csv", frame.to_csv(index=False))
    path = out_dir / "report.md"
    atomic_write_text(path, text)
    log(f"wrote {path} ({len(list(ctx.figures.glob('*.png')))} figures)")
    return path


def run_report(experiment: str = schema.DEFAULT_STUDY_EXPERIMENT, out_dir: Path | str = Path("report"),
               sweeps: Sequence[str] | None = None, parent_run_id: str | None = None, *, title: str | None = None,
               n_rounds: int = 1000, progress: bool = True) -> Path:
    """Collect the sweeps' runs, write the report into ``out_dir`` and log that folder to a new report run.

    The report run (tag ``ecgml.kind = report``) is created in the same experiment after the report is
    written, so a failed collection leaves no empty run behind. Returns the path of ``report.md``.
    """
    import mlflow

    from ecgml.tracking.runs import open_run

    collected = collect(experiment, sweeps=sweeps, parent_run_id=parent_run_id)
    what = ", ".join(sweeps) if sweeps else "all sweeps"
    path = write_report(collected, Path(out_dir), title=title or f"ecgml study report: {what}", n_rounds=n_rounds,
                        progress=progress)
    tags = {schema.KIND: "report", "ecgml.report_sweeps": ",".join(sorted(collected.runs["sweep"].unique())),
            **({"ecgml.report_parent_run_id": parent_run_id} if parent_run_id else {})}
    with open_run(experiment, run_name="report", tags=tags, system_metrics=False) as run:
        mlflow.log_params({"sweeps": what, "n_rounds": n_rounds, "parent_run_id": parent_run_id or ""})
        mlflow.log_metrics({"n_runs": len(collected.runs), "n_calibration_runs": len(collected.calibrations),
                            "n_skipped_unfinished": len(collected.skipped)})
        mlflow.log_artifacts(str(Path(out_dir)), artifact_path="report")
        _say(f"logged the report to run {run.info.run_id} (artifacts under report/)")
    return path


__all__ = ["best_standalone", "conclusions", "model_label", "paired_tests", "run_report", "summarise", "sweep_views",
           "write_report"]
