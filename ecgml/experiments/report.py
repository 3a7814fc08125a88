"""The study report: what each sweep found, with seeds, intervals and paired tests, as Markdown and PNGs.

This module renders; :mod:`ecgml.experiments.analysis` computes. Everything comes from the runs a sweep logged
(:mod:`ecgml.experiments.collect`): tables of mean ± sd over seeds with the runs' bootstrap intervals, AUC against
each swept value, per-class heatmaps, calibration before/after with the reason a calibration failed, a paired
bootstrap of fine-tuned against each standalone family on the same test records, and one sentence per setting
derived from those tests (never written by hand). When a sweep was run under both protocols, a table shows
whether the protocol alone changes the conclusion.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ecgml.experiments import schema
from ecgml.experiments.analysis import (
    ARM_ORDER,
    LOG_AXES,
    MIN_SEEDS,
    Predictions,
    SweepView,
    best_standalone,
    conclusions,
    datasets_of,
    family_key,
    fmt,
    model_label,
    paired_tests,
    run_counts,
    summarise,
    sweep_views,
    value_key,
)
from ecgml.experiments.collect import ArtifactMissingError, Collected, collect, setting_label
from ecgml.experiments.report_sections import (
    ReportContext,
    calibration_section,
    fold_by_fold_section,
    markdown_table,
    mean_sd,
    p_value,
    protocol_section,
    runs_section,
)
from ecgml.experiments.schema import FINETUNE, PRETRAIN, STANDALONE
from ecgml.io import atomic_write_text


def _say(message: str) -> None:
    sys.stderr.write(f"[ecgml report] {message}\n")


# ---- sections --------------------------------------------------------------------------------------------------
def _results_table(view: SweepView, summary: pd.DataFrame) -> str:
    """Rows as in the original's tables (standalone per family, pretraining on the source, fine-tuned, gain);
    settings as columns."""
    labels = [setting_label(json.loads(s)) for s in view.settings]
    rows: list[list[str]] = []
    models = summary[["arm", "family"]].drop_duplicates()
    models = sorted(models.itertuples(index=False), key=lambda m: (ARM_ORDER.index(m.arm) if m.arm in ARM_ORDER
                                                                   else 9, family_key(m.family)))
    for arm, family in models:
        names = view.datasets
        name = {STANDALONE: f"standalone {family} ({names.target})",
                PRETRAIN: f"{names.source} pretraining {family} ({names.source} test)",
                FINETUNE: f"{names.target} fine-tuned {family}"}.get(arm, model_label(arm, family))
        cells = []
        for setting in view.settings:
            runs = view.runs
            g = runs[(runs["setting"] == setting) & (runs["arm"] == arm) & (runs["family"] == family)]
            if g.empty:
                cells.append("—")
                continue
            auc = g["test_macro_auc"].to_numpy(dtype=float)
            ci = f" [{fmt(g['test_macro_auc_low'].min())}, {fmt(g['test_macro_auc_high'].max())}]"
            shared = g["shared_from"].dropna().unique() if "shared_from" in g else []
            source = (" (from backbone run)" if "backbone run" in shared
                      else f" (shared: {shared[0]})" if len(shared) and arm != PRETRAIN else "")
            cells.append(mean_sd(auc) + ci + source)
        rows.append([name, *cells])
    for family in sorted(summary.loc[summary["arm"] == FINETUNE, "family"].unique(), key=family_key):
        cells = []
        for setting in view.settings:
            best, best_mean = best_standalone(summary, setting)
            ft = summary[(summary["setting"] == setting) & (summary["arm"] == FINETUNE)
                         & (summary["family"] == family)]
            gain = fmt(ft["mean"].iloc[0] - best_mean, sign=True) if len(ft) else ""
            cells.append("—" if best is None or ft.empty else f"{gain} (vs {best})")
        rows.append([f"gain: fine-tuned {family} − best standalone", *cells])
    return markdown_table(["model", *labels], rows)


def _plot_sweep(ctx: ReportContext, view: SweepView, summary: pd.DataFrame) -> str | None:
    from ecgml.experiments.report_figures import plot_auc_bars_grouped, plot_auc_lines

    if view.x is None or summary.empty:
        return None
    x = view.x
    plot = summary[summary[x].notna()].copy() if x in summary else summary.iloc[0:0]
    if plot.empty:
        return None
    runs = view.runs[view.runs["arm"] != PRETRAIN]
    seeds = runs.assign(model=[model_label(a, f, source=view.datasets.source)
                               for a, f in zip(runs["arm"], runs["family"], strict=True)])
    # pretraining is tested on the source: drawn apart, never on the target's axis
    reference = plot[plot["arm"] == PRETRAIN].copy()
    plot = plot[plot["arm"] != PRETRAIN]
    if plot.empty:
        return None
    path = ctx.figures / f"auc_{view.key}.png"
    title = f"{view.sweep} ({view.protocol}): test macro AUC vs {x}"
    numeric = all(value_key(v)[0] == 0 for v in plot[x]) and not isinstance(plot[x].iloc[0], str)
    if numeric:
        panel = None
        if view.panels:
            plot["panel"] = plot["setting"].map(view.panel_of)
            seeds["panel"] = seeds["setting"].map(view.panel_of)
            panel = "panel"
        plot_auc_lines(plot, seeds, x, path, title=title, panel=panel, log_x=x in LOG_AXES, reference=reference,
                       datasets=view.datasets)
    else:
        if view.panels:
            plot["model"] = plot["model"] + " (" + plot["setting"].map(view.panel_of) + ")"
        order = sorted(dict.fromkeys(plot[x]), key=lambda v: value_key(v, x))
        plot_auc_bars_grouped(plot, x, path, title=title, order=order, reference=reference, datasets=view.datasets)
    return path.relative_to(ctx.out_dir).as_posix()


def _per_class(ctx: ReportContext, run_id: str) -> dict[str, float]:
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


def _heatmap(ctx: ReportContext, view: SweepView, summary: pd.DataFrame) -> str | None:
    from ecgml.experiments.report_figures import plot_class_heatmaps

    runs = view.runs[view.runs["arm"].isin([FINETUNE, STANDALONE])]
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
                    key=lambda m: (0 if m.arm == FINETUNE else 1, family_key(m.family)))
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
            if best is not None and model_label(STANDALONE, best) in matrices:
                diff[label] = matrices[ft_names[0]][label] - matrices[model_label(STANDALONE, best)][label]
        name = f"{ft_names[0]} − best standalone"
        matrices[name] = diff
        diverging.append(name)
    table = pd.concat(matrices, names=["model", "class"])
    ctx.tables[f"per_class_auc_{view.key}"] = table.reset_index()
    path = ctx.figures / f"per_class_auc_{view.key}.png"
    plot_class_heatmaps(matrices, path, title=f"{view.sweep} ({view.protocol}): mean test AUC per class over seeds",
                        diverging=diverging)
    return path.relative_to(ctx.out_dir).as_posix()


def _reading(r: pd.Series) -> str:
    """The paired table's reading, from the one significance rule (the conclusions count the same column)."""
    level = f"{float(r.get('level', 0.95)):.0%}"
    reading = r.get("significance")
    if reading == "above":
        return "significant gain (CI above 0)"
    if reading == "below":
        return "significant loss (CI below 0)"
    if reading == "includes" and (r["low"] > 0 or r["high"] < 0):
        return f"not significant: the bound rounds to 0 or p ≥ {1 - float(r.get('level', 0.95)):.2f} ({level} level)"
    return "not significant (CI includes 0)" if reading == "includes" else "n/a"


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
                     f"{fmt(r['finetune_auc'])} vs {fmt(r['standalone_auc'])}", fmt(r["diff"], sign=True),
                     f"[{fmt(r['low'], sign=True)}, {fmt(r['high'], sign=True)}]",
                     p_value(r["p_value"], r.get("rounds")), _reading(r)])
    return markdown_table(["setting", "seed", "model A", "model B", "records", "AUC A vs B", "A − B", "95% CI", "p",
                           "reading"], rows)


def _sweep_section(ctx: ReportContext, view: SweepView) -> tuple[list[str], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    summary = summarise(view)
    paired = paired_tests(view, ctx.preds, ctx.problems, ctx.progress)
    verdicts = conclusions(view, summary, paired)
    lines = [f"## Sweep `{view.sweep}`, protocol `{view.protocol}`", ""]
    trained = summary[summary["arm"].isin([FINETUNE, STANDALONE])] if len(summary) else summary
    seeds = trained.groupby("setting")["n_seeds"].min() if len(trained) else pd.Series(dtype=int)
    if len(seeds) and seeds.min() < MIN_SEEDS:
        lines += [f"> Warning: some settings have fewer than {MIN_SEEDS} seeds per model "
                  f"(minimum {int(seeds.min())}); their conclusions are weaker.", ""]
    counts, names = run_counts(view.runs), view.datasets
    pretrained = (f", and {counts['pretrain']} {names.source} pretraining run{'s' if counts['pretrain'] != 1 else ''} "
                  "shown for reference" if counts["pretrain"] else "")
    lines += [f"Swept value: `{view.x}`" + (f"; panels by {', '.join(f'`{p}`' for p in view.panels)}" if view.panels
                                            else "") + f". {counts['target']} {names.target} training runs (fine-tuned "
              f"and standalone){pretrained}.", ""]
    lines += [*(f"- note: {n}" for n in view.notes), ""] if view.notes else []
    lines += ["### Results (test macro AUC, mean ± sd over seeds [lowest, highest bound of the runs' 95% CIs])", "",
              _results_table(view, summary), ""]
    figure = _plot_sweep(ctx, view, summary)
    if figure:
        lines += [f"### AUC versus `{view.x}`", "", f"![AUC versus {view.x}]({figure})", "",
                  "Lines or bars: mean over seeds; error bars: from the lowest lower bound to the highest upper bound "
                  f"of the runs' bootstrap 95% CIs; dots: single runs. {names.source} pretraining, tested on "
                  f"{names.source}'s own "
                  "test split, has a panel of its own.", ""]
    lines += ["### Paired tests: fine-tuned against standalone on the same test records", ""]
    if paired.empty:
        lines += ["No fine-tuned and standalone runs with the same seed to pair.", ""]
    else:
        lines += [_paired_table(paired), ""]
    lines += fold_by_fold_section(ctx, view)
    lines += ["### Conclusions", ""]
    lines += [f"- {s}" for s in verdicts["sentence"]] if len(verdicts) else ["- no setting has both arms."]
    lines += [""]
    heat = _heatmap(ctx, view, summary)
    if heat:
        lines += ["### Per-class AUC", "", f"![per-class AUC]({heat})", "",
                  "Mean test AUC per class over seeds for each model and setting; the last panel is fine-tuned minus "
                  "the best standalone family of that setting (n/a: class without positives in the test split).", ""]
    return lines, summary, paired, verdicts


_HOW_TO_READ = """## How to read this report

- **Per run**: test macro AUC with the run's own bootstrap 95% interval over test records (logged by the
  training run as `test_macro_auc_low/high`).
- **Across seeds**: tables give mean ± sd over seeds (sample sd); the bracket is the lowest lower bound and the
  highest upper bound of the runs' 95% intervals (an envelope, deliberately conservative: with {min_seeds} seeds a
  bootstrap of the mean over seeds would be meaningless). Plots draw the same mean and envelope.
- **Paired tests**: a fine-tuned run and a standalone run with the same seed are scored on the same test records;
  records are resampled *jointly* ({rounds} rounds), so the interval is that of the difference in macro AUC itself.
  p is the two-sided bootstrap p-value (twice the smaller share of rounds on either side of 0).
- **Significant** (one rule for every table and sentence): the paired 95% interval's lower bound is above 0, still
  above 0 at the three decimals printed (a bound shown as +0.000 is not), and p < 0.05; a significant loss is the
  mirror image. At a setting, fine-tuning **beats** the best standalone family when the difference is significant
  in every seed; it **is ahead ... but** when it is ahead in every seed and significant in most (likely, not shown);
  otherwise there is **no consistent gap**. Each conclusion also counts the pairs against every family.
- **{source} pretraining** AUCs are on the {source} test split, not on {target}: they show what the backbone learned,
  not a comparison with the {target} rows; plots draw them in a panel of their own.
- **Gain**: mean fine-tuned AUC minus the mean AUC of the best standalone family at that setting.
"""


def write_report(collected: Collected, out_dir: Path, *, title: str = "ecgml study report", n_rounds: int = 1000,
                 seed: int = 0, progress: bool = True, log: Callable[[str], None] = _say) -> Path:
    """Write ``out_dir/report.md``, its PNGs under ``figures/`` and its tables as CSV under ``tables/``."""
    out_dir = Path(out_dir)
    ctx = ReportContext(collected, out_dir, Predictions(collected, n_rounds, seed), progress)
    ctx.figures.mkdir(parents=True, exist_ok=True)
    selection = sorted(collected.runs["sweep"].unique())
    body: list[str] = []
    summaries, paired_all, verdicts_all = [], [], []
    for view in sweep_views(collected):
        counts = run_counts(view.runs)
        log(f"sweep {view.sweep} ({view.protocol}): {counts['target']} {view.datasets.target} training runs "
            f"(+{counts['pretrain']} {view.datasets.source} pretraining for reference), {len(view.settings)} settings")
        lines, summary, paired, verdicts = _sweep_section(ctx, view)
        body += lines
        summaries.append(summary)
        paired_all.append(paired)
        verdicts_all.append(verdicts)
    log("calibration")
    calibration = calibration_section(ctx)
    verdicts = pd.concat(verdicts_all, ignore_index=True) if verdicts_all else pd.DataFrame()
    protocol = protocol_section(verdicts)
    head = [f"# {title}", "", f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from sweep(s) "
            f"{', '.join(f'`{s}`' for s in selection)}.", ""]
    summary_lines = ["## Summary", ""]
    summary_lines += [f"- `{r.sweep}` ({r.protocol}): {r.sentence}" for r in verdicts.itertuples()] if len(verdicts) \
        else ["- no setting has both a fine-tuned and a standalone arm."]
    summary_lines += [""]
    problems = ["## Problems met while writing the report", ""]
    problems += [f"- {p}" for p in dict.fromkeys(ctx.problems)] if ctx.problems else ["None."]
    appendix = ["## Appendix: all runs", "", markdown_table(
        ["run", "sweep", "protocol", "arm", "family", "setting", "seed", "test macro AUC [95% CI]", "best val AUC"],
        [[r.run_id, r.sweep, r.protocol, r.arm, r.family, r.setting_label, r.seed,
          f"{fmt(r.test_macro_auc)} [{fmt(r.test_macro_auc_low)}, {fmt(r.test_macro_auc_high)}]",
          fmt(r.best_val_macro_auc)] for r in collected.runs.itertuples()]), ""]
    names = datasets_of(collected.runs)
    how_to_read = _HOW_TO_READ.format(min_seeds=MIN_SEEDS, rounds=n_rounds, source=names.source, target=names.target)
    text = "\n".join([*head, *runs_section(collected), how_to_read,
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
