"""Parts of the study report that stand on their own: Markdown formatting, the context the sections share,
and the calibration, protocol, runs and fold-by-fold (cross-validation) sections. :mod:`ecgml.experiments.report`
puts the report together."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.experiments.analysis import Predictions, SweepView, family_key, fmt, model_label
from ecgml.experiments.collect import ArtifactMissingError, Collected, setting_label
from ecgml.experiments.schema import FINETUNE, STANDALONE, setting_tag


def p_value(p: float, rounds: float | None = None) -> str:
    """A p-value; at the bootstrap's floor (no round crossed 0) it says so rather than print a false precision."""
    if not np.isfinite(p):
        return "n/a"
    if rounds and p <= 2 / (rounds + 1) + 1e-12:
        return f"≤{p:.3f} (no round crossed 0)"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; a ``|`` or line break inside a cell cannot break its row."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_sd(values: np.ndarray) -> str:
    """Mean ± sample sd of the finite values (``n=1`` said, not hidden behind a zero sd)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f} (n=1)"
    return f"{values.mean():.3f} ± {float(np.std(values, ddof=1)):.3f}"


@dataclass
class ReportContext:
    """What every section reads (the collected runs, the predictions) and adds to (problems, tables)."""

    collected: Collected
    out_dir: Path
    preds: Predictions
    progress: bool
    problems: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def figures(self) -> Path:
        return self.out_dir / "figures"


def calibration_section(ctx: ReportContext) -> list[str]:
    """ECE, MCE and Brier before and after each sweep setting's calibrations, why some failed, and one
    reliability diagram per arm (the seed with the median ECE before, not the best one)."""
    from ecgml.evaluate.figures import plot_reliability
    from ecgml.evaluate.paired import AlignmentError, align_predictions

    cal = ctx.collected.calibrations
    lines = ["## Calibration", ""]
    if cal.empty:
        return [*lines, "No calibration runs in the selected sweeps.", ""]
    metrics = [("ECE", "test_macro_ece"), ("MCE", "test_macro_mce"), ("Brier", "test_macro_brier")]
    rows, records, failures = [], [], []
    for (sweep, protocol, setting, arm, family), g in cal.groupby(["sweep", "protocol", "setting", "arm", "family"]):
        methods: list[str] = []
        notes: list[tuple[int, str, str]] = []
        for rid, seed in zip(g["run_id"], g["seed"], strict=True):
            try:
                doc = ctx.collected.calibration_json(rid)
            except ArtifactMissingError as exc:
                ctx.problems.append(str(exc))
                continue
            methods.append(str(doc.get("method", "?")))
            notes += [(int(seed), rid, str(n)) for n in doc.get("diagnosis", [])]
        cells = []
        for _, key in metrics:
            before, after = g[f"{key}_before"].to_numpy(float), g[f"{key}_after"].to_numpy(float)
            cells.append(f"{mean_sd(before)} → {mean_sd(after)}")
        per_map = [mean_sd(g[f"test_macro_ece_after_{m}"].to_numpy(float)) if f"test_macro_ece_after_{m}" in g
                   else "n/a" for m in ("single", "per_class", "platt")]
        chosen = ", ".join(f"{m} ×{methods.count(m)}" for m in dict.fromkeys(methods)) or "?"
        label, model = setting_label(json.loads(setting)), model_label(arm, family)
        rows.append([sweep, protocol, label, model, len(g), *cells, *per_map, chosen,
                     f"{len({rid for _, rid, _ in notes})}/{len(g)}"])
        records.append({"sweep": sweep, "protocol": protocol, "setting": setting, "arm": arm, "family": family,
                        "n": len(g), "n_with_warnings": len({rid for _, rid, _ in notes}),
                        **{f"{k}_{w}_mean": float(g[f"{k}_{w}"].mean()) for _, k in metrics
                           for w in ("before", "after")}})
        kinds: dict[str, list[tuple[int, str, str]]] = {}
        for seed, rid, note in notes:
            kinds.setdefault(note.split(":")[0], []).append((seed, rid, note))
        for kind, found in kinds.items():
            seed, rid, note = sorted(found)[0]
            failures.append(f"- {model}, `{sweep}` {label}: {kind} in {len(found)} of {len(g)} run(s) "
                            f"(seeds {', '.join(str(f[0]) for f in sorted(found))}). Seed {seed} (`{rid}`): "
                            f"{note.split(':', 1)[-1].strip()}.")
    ctx.tables["calibration"] = pd.DataFrame(records)
    lines += ["Test split, mean ± sd over seeds, before → after the map chosen for each run. Three maps are fitted on "
              "validation only: one temperature, one per class, and Platt scaling (a slope and a bias per class); "
              "the one with the lowest cross-validated validation NLL is chosen, and test ECE is shown for each.", "",
              markdown_table(["sweep", "protocol", "setting", "model", "runs", "ECE", "MCE", "Brier",
                              "ECE after (one T)", "ECE after (T per class)", "ECE after (Platt)", "map chosen",
                              "runs with warnings"], rows), ""]
    if failures:
        lines += ["### Why some calibrations failed or cannot help", "", *failures, ""]
    for arm in (FINETUNE, STANDALONE):
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
                  f"ECE {fmt(r['test_macro_ece_before'])} → {fmt(r['test_macro_ece_after'])}; "
                  f"training run `{r['calibrated_run_id']}`, calibration run `{r['run_id']}`.", "",
                  f"![reliability {arm}]({path.relative_to(ctx.out_dir).as_posix()})", ""]
    return lines


def protocol_section(verdicts: pd.DataFrame) -> list[str]:
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
        rows.append([sweep, s.setting_label, f"{fmt(s.finetune_mean)} / {fmt(d.finetune_mean)}",
                     f"{fmt(s.best_standalone_mean)} ({s.best_standalone}) / {fmt(d.best_standalone_mean)} "
                     f"({d.best_standalone})", f"{fmt(s.gain, sign=True)} / {fmt(d.gain, sign=True)}",
                     f"{fmt(d.gain - s.gain, sign=True)}", f"{s.verdict} / {d.verdict}",
                     "same" if same else "CHANGES"])
    if not rows:
        return [*lines, "No setting was run under both protocols.", ""]
    lines += [f"The protocol alone changes the conclusion in {changed} of {total} setting(s) run under both.", "",
              markdown_table(["sweep", "setting", "fine-tuned (standard / seed)",
                              "best standalone (standard / seed)", "gain (standard / seed)", "gain change",
                              "verdict (standard / seed)", "conclusion"], rows), ""]
    return lines


def runs_section(collected: Collected) -> list[str]:
    """What the report was made from: the runs per sweep, arm and family, and the runs left out and why."""
    runs = collected.runs
    lines = ["## Runs", "", f"Experiment `{collected.experiment}` (id {collected.experiment_id}), tracking store "
             f"`{collected.tracking_uri}`: {len(runs)} finished training runs, {len(collected.calibrations)} "
             f"calibration runs, {len(collected.sweeps)} sweep run(s).", ""]
    rows = []
    for (sweep, protocol, arm, family), g in runs.groupby(["sweep", "protocol", "arm", "family"]):
        seeds = ",".join(map(str, sorted(g["seed"].unique())))
        rows.append([sweep, protocol, arm, family, g["setting"].nunique(), seeds, len(g)])
    lines += [markdown_table(["sweep", "protocol", "arm", "family", "settings", "seeds", "runs"], rows), ""]
    skipped = collected.skipped
    lines += [f"**Skipped unfinished runs: {len(skipped)}.**"
              + (" They are left out of every table below." if len(skipped) else ""), ""]
    if len(skipped):
        lines += [markdown_table(["run", "status", "kind", "sweep", "arm", "family", "setting", "seed"],
                                 skipped[["run_id", "status", "kind", "sweep", "arm", "family", "setting", "seed"]]
                                 .fillna("").itertuples(index=False)), ""]
    if collected.ignored:
        lines += [f"Ignored runs: {len(collected.ignored)}.", "",
                  markdown_table(["run", "reason"], collected.ignored), ""]
    return lines


def fold_by_fold_section(ctx: ReportContext, view: SweepView) -> list[str]:
    """A cross-validated sweep's arms fold by fold: at each setting and seed, the fine-tuned run against each
    standalone family on the same K folds (the pairs from :func:`ecgml.experiments.cv_sweep.cv_pairs`, the statistics
    from :func:`ecgml.experiments.cv_compare.compare_oof`); nothing for a sweep without cross-validation."""
    from ecgml.evaluate.paired import AlignmentError
    from ecgml.experiments.cv_compare import CvCompareError, compare_oof
    from ecgml.experiments.cv_sweep import comparison_frame, cv_pairs

    runs = view.runs
    if "cv" not in runs:
        return []
    rows = [{"run_id": r["run_id"], "arm": r["arm"], "model": r["family"], "setting": r["setting"], "seed": r["seed"],
             "cv": r["cv"]} for r in runs.to_dict("records")]

    def order(pair: Any) -> tuple[int, int, tuple[int, str]]:
        setting = setting_tag(pair.setting)
        at = view.settings.index(setting) if setting in view.settings else len(view.settings)
        return at, pair.seed, family_key(pair.standalone_model)

    pairs = sorted(cv_pairs(rows), key=order)
    if not pairs:
        return []
    target = view.datasets.target
    ks = "/".join(str(k) for k in sorted({p.k for p in pairs}))
    lines = [f"### Fold by fold: fine-tuned against standalone on the same folds of {target}", "",
             f"Each fine-tuned and standalone run is a {ks}-fold cross-validation on the stored folds of {target}, so "
             "both arms test every record once, in the same fold. Per fold: both macro AUCs on that fold's records "
             f"and their paired bootstrap difference ({ctx.preds.n_rounds} rounds, records resampled jointly) with "
             "its 95% interval; the pooled row pairs all out-of-fold predictions, as the paired test above does "
             "(from a bootstrap of its own).", ""]
    frames = []
    for pair in pairs:
        try:
            comparison = compare_oof(ctx.collected.predictions(pair.finetune_run_id),
                                     ctx.collected.predictions(pair.standalone_run_id), names=pair.names,
                                     n_rounds=ctx.preds.n_rounds, seed=ctx.preds.seed)
        except (ArtifactMissingError, CvCompareError, AlignmentError) as exc:
            ctx.problems.append(f"fold-by-fold comparison skipped, {pair.heading(target)}: {exc}")
            continue
        lines += [f"#### {pair.heading(target)}", "", comparison.markdown(), "", f"{comparison.summary()}.", ""]
        frames.append(comparison_frame(pair, comparison))
    if frames:
        ctx.tables[f"cv_folds_{view.key}"] = pd.concat(frames, ignore_index=True)
    return lines
