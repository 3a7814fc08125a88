"""The study's analysis: runs per sweep and setting, summaries over seeds, paired tests and the verdicts they give.

Plain tables in, plain tables out (no Markdown, no figures): :mod:`ecgml.experiments.report` renders what is
computed here, so every sentence of the report comes from the same numbers its tables show. What counts as a
significant paired difference is decided in one place, :func:`ecgml.evaluate.paired.significance`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ecgml.data.sources import get_dataset_source
from ecgml.defaults import DEFAULT_SOURCE, DEFAULT_TARGET, STANDALONE_BACKBONES
from ecgml.evaluate.paired import significance
from ecgml.experiments import schema
from ecgml.experiments.collect import ArtifactMissingError, Collected, setting_label
from ecgml.experiments.schema import FINETUNE, PRETRAIN, STANDALONE

# the swept value drawn on the x axis of each sweep; other varying setting keys become panels
SWEEP_AXIS = {"fraction": "target_fraction", "pretrain-fraction": "ptbxl_fraction", "sampling-rate": "fs",
              "input-domain": "domain", "leads": "leads", "strategy": "strategy", "calibration": "target_fraction"}
LOG_AXES = ("target_fraction", "ptbxl_fraction")
ARM_ORDER = (STANDALONE, PRETRAIN, FINETUNE)
MIN_SEEDS = 3
# named choices in the order a reader expects (least to most adapted; time before frequency)
KNOWN_ORDER: dict[str, tuple[str, ...]] = {"strategy": ("linear", "gradual", "full"),
                                           "domain": ("time", "fft_magnitude", "fft")}


@dataclass(frozen=True)
class Datasets:
    """What the report calls the two roles: the titles of the source and target entries of the dataset registry
    (:mod:`ecgml.data.sources`), never typed here."""

    source: str
    target: str

    @classmethod
    def of(cls, source: str = DEFAULT_SOURCE, target: str = DEFAULT_TARGET) -> Datasets:
        """The titles of datasets ``source`` and ``target`` (registry names, as runs tag them)."""
        return cls(_title(source), _title(target))


def _title(name: str) -> str:
    try:
        return get_dataset_source(name).title
    except ValueError:  # a dataset this checkout does not know (a store written by a newer one): its name
        return name


def datasets_of(runs: pd.DataFrame) -> Datasets:
    """The source and target of a set of runs, from the ``dataset`` each training run is tagged with: the
    pretraining runs' dataset is the source, the fine-tuned and standalone runs' the target (several targets are
    named together, most runs first). Runs logged before the tag existed count as the defaults."""
    def names(arms: tuple[str, ...], default: str) -> list[str]:
        if not len(runs) or "dataset" not in runs:
            return [default]
        found = runs.loc[runs["arm"].isin(arms), "dataset"].dropna().astype(str)
        return list(found.value_counts().index) or [default]

    source = names((PRETRAIN,), DEFAULT_SOURCE)
    target = names((FINETUNE, STANDALONE), DEFAULT_TARGET)
    return Datasets(" / ".join(map(_title, source)), " / ".join(map(_title, target)))


def model_label(arm: str, family: str, *, source: str | None = None) -> str:
    """How a model is named in tables and legends (``source``: the pretraining dataset's title)."""
    source = source or _title(DEFAULT_SOURCE)
    return {FINETUNE: f"fine-tuned {family}", STANDALONE: f"standalone {family}",
            PRETRAIN: f"{source} pretraining {family}"}.get(arm, f"{arm} {family}")


def value_key(value: Any, key: str | None = None) -> tuple[int, float, str]:
    """Sort key of a swept value: a known order for named choices, numbers by value, then text."""
    known = KNOWN_ORDER.get(key or "", ())
    if value in known:
        return (0, float(known.index(value)), "")
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def family_key(family: str) -> tuple[int, str]:
    """Families in the order of the standalone baselines (one per family), others after by name."""
    from ecgml.models.registry import family_rank

    return family_rank(family, STANDALONE_BACKBONES)


def fmt(x: float, digits: int = 3, sign: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    if abs(x) < 0.5 * 10**-digits:
        x = 0.0  # no "-0.000"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"



def slug(*parts: str) -> str:
    """A file-name-safe key: ``slug("sampling-rate", "standard")`` -> ``sampling_rate-standard``."""
    return "-".join("".join(ch if ch.isalnum() else "_" for ch in p) for p in parts)


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")



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
    #: The titles of the sweep's source and target.
    datasets: Datasets = field(default_factory=Datasets.of)

    @property
    def key(self) -> str:
        return slug(self.sweep, self.protocol)

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
    of the fraction sweep, ``{}``; the standalone ``{"target_fraction": 0.1}`` of the strategy sweep, whose
    fine-tuned settings also name a strategy) is the baseline of each of them: it is attached to each, marked
    ``shared_from``. A sweep that reused an existing backbone has no pretraining children: the runs named by
    the fine-tuned runs' ``ecgml.backbone_run_id`` tag stand in, read from the tracking store.
    """
    runs = runs.assign(shared_from=None)
    finetune = runs[runs["arm"] == FINETUNE]
    targets = list(finetune["setting"].unique())
    if not targets:
        return runs
    kept: list[pd.DataFrame] = [runs[(runs["arm"] == FINETUNE) | runs["setting"].isin(targets)]]
    attached: list[dict[str, Any]] = []
    for setting, group in runs[(runs["arm"] != FINETUNE) & ~runs["setting"].isin(targets)].groupby("setting"):
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
    has_pretrain = {a["setting"] for a in attached if a["arm"] == PRETRAIN}
    has_pretrain |= set(runs.loc[(runs["arm"] == PRETRAIN) & runs["setting"].isin(targets), "setting"])
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
            attached.append({"run_id": rid, "arm": PRETRAIN, "family": family, "kind": PRETRAIN,
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
            return tuple(value_key(d.get(k), k) for k in dict.fromkeys(order))

        settings = sorted(runs["setting"].unique(), key=sort_key)
        views.append(SweepView(str(sweep), str(protocol), runs, settings, x, panels, notes, datasets_of(runs)))
    return views


def summarise(view: SweepView) -> pd.DataFrame:
    """Per setting and model: seeds, mean and sd of test macro AUC, the envelope of the runs' bootstrap CIs."""
    rows = []
    for (setting, arm, family), g in view.runs.groupby(["setting", "arm", "family"], sort=False):
        auc = g["test_macro_auc"].to_numpy(dtype=float)
        rows.append({
            "sweep": view.sweep, "protocol": view.protocol, "setting": setting,
            "setting_label": g["setting_label"].iloc[0],
            "arm": arm, "family": family, "model": model_label(str(arm), str(family), source=view.datasets.source),
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
    out["_f"] = out["family"].map(family_key)
    return out.sort_values(["_s", "_a", "_f"]).drop(columns=["_s", "_a", "_f"]).reset_index(drop=True)


def best_standalone(summary: pd.DataFrame, setting: str) -> tuple[str | None, float]:
    """The standalone family with the highest mean test macro AUC at a setting (the original's 'best standalone')."""
    sa = summary[(summary["setting"] == setting) & (summary["arm"] == STANDALONE)]
    if sa.empty or not np.isfinite(sa["mean"]).any():
        return None, float("nan")
    best = sa.loc[sa["mean"].idxmax()]
    return str(best["family"]), float(best["mean"])


class Predictions:
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


def paired_tests(view: SweepView, preds: Predictions, problems: list[str], progress: bool = True) -> pd.DataFrame:
    """Per setting and seed: every fine-tuned run against the standalone run of each family with the same seed."""
    from tqdm.auto import tqdm

    from ecgml.evaluate.paired import AlignmentError

    runs = view.runs[view.runs["arm"].isin([FINETUNE, STANDALONE])]
    pairs = []
    for setting in view.settings:
        at = runs[runs["setting"] == setting]
        for _, ft in at[at["arm"] == FINETUNE].iterrows():
            for _, sa in at[(at["arm"] == STANDALONE) & (at["seed"] == ft["seed"])].iterrows():
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
                     "p_value": out["p_value"], "rounds": out["rounds"], "level": out["level"],
                     "significance": significance(out["low"], out["high"], out["p_value"], level=out["level"]),
                     "note": ""})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["_s"] = frame["setting"].map(view.settings.index)
    frame["_f"] = frame["standalone_family"].map(family_key)
    return frame.sort_values(["_s", "seed", "_f"], kind="stable").drop(columns=["_s", "_f"]).reset_index(drop=True)



def run_counts(runs: pd.DataFrame) -> dict[str, int]:
    """Distinct runs by what they trained: on the target (fine-tuned and standalone) and pretraining on the source.

    A pretraining run shown beside a sweep (a backbone the sweep fine-tuned from) is counted apart: it is not one of
    the sweep's training runs on the target.
    """
    arm = runs["arm"] if len(runs) else pd.Series(dtype=object)
    return {"target": int(runs.loc[arm.isin([FINETUNE, STANDALONE]), "run_id"].nunique()) if len(runs) else 0,
            "pretrain": int(runs.loc[arm == PRETRAIN, "run_id"].nunique()) if len(runs) else 0}


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def verdict_of(n: int, wins: int, above: int, below: int) -> str:
    """The verdict at one setting from the paired tests against the best standalone family, one per seed.

    ``finetune`` / ``standalone``: significant (:func:`ecgml.evaluate.paired.significance`) in every seed;
    ``leans finetune`` / ``leans standalone``: ahead in every seed, significant in most (a strict majority) and never
    the other way (with no gap, all seeds fall on one side by chance a quarter of the time at 3 seeds, and one of
    them is significant now and then: one significant seed is not enough);
    ``unclear``: anything else; ``untested``: no pair could be compared.
    """
    if n == 0:
        return "untested"
    if above == n:
        return "finetune"
    if below == n:
        return "standalone"
    if wins == n and 2 * above > n and below == 0:
        return "leans finetune"
    if wins == 0 and 2 * below > n and above == 0:
        return "leans standalone"
    return "unclear"


def conclusions(view: SweepView, summary: pd.DataFrame, paired: pd.DataFrame) -> pd.DataFrame:
    """One verdict and sentence per setting, from the paired tests against the best standalone family.

    The sentence quotes the means and the gain exactly as the results table prints them, and counts the seeds whose
    paired interval is significant by :func:`ecgml.evaluate.paired.significance` (the paired table's reading).
    """
    rows = []
    for setting in view.settings:
        label = setting_label(json.loads(setting))
        best, best_mean = best_standalone(summary, setting)
        ft = summary[(summary["setting"] == setting) & (summary["arm"] == FINETUNE)]
        if ft.empty or best is None:
            continue
        ft_best = ft.loc[ft["mean"].idxmax()]
        ft_family, ft_mean = str(ft_best["family"]), float(ft_best["mean"])
        at = paired[(paired["setting"] == setting) & (paired["finetune_family"] == ft_family)] if len(paired) \
            else paired
        attempted = at[at["standalone_family"] == best] if len(at) else at
        compared = at[np.isfinite(at["diff"].astype(float))] if "diff" in at else at.iloc[0:0]
        tests = compared[compared["standalone_family"] == best] if len(compared) else compared
        n = len(tests)
        gain = ft_mean - best_mean
        figures = f"{fmt(ft_mean)} against {fmt(best_mean)}, gain {fmt(gain, sign=True)}"
        base = {"sweep": view.sweep, "protocol": view.protocol, "setting": setting, "setting_label": label,
                "finetune_family": ft_family, "best_standalone": best, "finetune_mean": ft_mean,
                "best_standalone_mean": best_mean, "gain": gain, "n_seeds": n}
        if n == 0:
            why = (f"{len(attempted)} pair(s) could not be compared, see the paired tests" if len(attempted)
                   else f"no fine-tuned and standalone {best} runs with the same seed")
            rows.append({**base, "verdict": "untested", "wins": 0, "above": 0, "below": 0, "mean_diff": np.nan,
                         "pairs": 0, "pairs_above": 0,
                         "sentence": f"{label}: no paired comparison was possible ({why})"})
            continue
        d = tests["diff"].to_numpy(dtype=float)
        wins = int((d > 0).sum())
        above = int((tests["significance"] == "above").sum())
        below = int((tests["significance"] == "below").sum())
        pairs, pairs_above = len(compared), int((compared["significance"] == "above").sum())
        pairs_below = int((compared["significance"] == "below").sum())
        verdict = verdict_of(n, wins, above, below)
        every = "every" if n > 1 else "its"
        few = f" (only {_seeds(n)}; the study asks for {MIN_SEEDS})" if n < MIN_SEEDS else ""
        families = (f"; against every standalone family, {pairs_above}/{pairs} paired CIs above 0"
                    + (f" and {pairs_below} below" if pairs_below else "")) if pairs > n else ""
        if verdict == "finetune":
            sentence = (f"fine-tuning beats the best standalone ({best}) at {label}: {figures}; ahead in {wins}/{n} "
                        f"seeds with {every} paired 95% CI above 0{families}{few}")
        elif verdict == "standalone":
            sentence = (f"the best standalone ({best}) beats fine-tuning at {label}: {figures}; ahead in "
                        f"{n - wins}/{n} seeds with {every} paired 95% CI below 0{families}{few}")
        elif verdict == "leans finetune":
            sentence = (f"fine-tuning is ahead of the best standalone ({best}) at {label} in {wins}/{n} seeds "
                        f"({figures}), but its paired 95% CI is above 0 in only {above}/{n}: likely, not shown in "
                        f"every seed{families}{few}")
        elif verdict == "leans standalone":
            sentence = (f"the best standalone ({best}) is ahead of fine-tuning at {label} in {n - wins}/{n} seeds "
                        f"({figures}), but its paired 95% CI is below 0 in only {below}/{n}: likely, not shown in "
                        f"every seed{families}{few}")
        else:
            sentence = (f"no consistent gap at {label}: {figures}; fine-tuning ahead of the best standalone "
                        f"({best}) in {wins}/{n} seeds, paired 95% CIs above 0 in {above}/{n} and below 0 in "
                        f"{below}/{n}{families}{few}")
        rows.append({**base, "verdict": verdict, "wins": wins, "above": above, "below": below,
                     "mean_diff": float(d.mean()), "pairs": pairs, "pairs_above": pairs_above, "sentence": sentence})
    return pd.DataFrame(rows)
