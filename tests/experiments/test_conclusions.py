"""The report's verdicts and sentences on planted paired results: a clear gain, no gain, mixed seeds, a gain in
every seed that is significant in only some, a loss, and borderline intervals that must not be called significant."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ecgml.evaluate.paired import significance
from ecgml.experiments.analysis import SweepView, conclusions, verdict_of

FAMILIES = ("xresnet", "resnet", "inception")


def _setting(name: str) -> str:
    return json.dumps({"case": name})


#: per case: fine-tuned mean, standalone means per family, and per seed against each family (diff, low, high, p)
CASES: dict[str, dict[str, object]] = {
    "clear": {"ft": 0.90, "sa": (0.80, 0.78, 0.75),
              "pairs": [(0.10, 0.06, 0.14, 0.002)] * 3},
    "none": {"ft": 0.85, "sa": (0.85, 0.84, 0.83),
             "pairs": [(0.004, -0.02, 0.03, 0.70), (-0.003, -0.03, 0.02, 0.80), (0.001, -0.02, 0.02, 0.90)]},
    "mixed": {"ft": 0.86, "sa": (0.84, 0.80, 0.80),
              "pairs": [(0.05, 0.02, 0.08, 0.004), (-0.01, -0.04, 0.02, 0.50), (0.02, -0.01, 0.05, 0.20)]},
    "leaning": {"ft": 0.86, "sa": (0.80, 0.79, 0.79),
                "pairs": [(0.06, 0.03, 0.09, 0.002), (0.05, 0.01, 0.09, 0.010), (0.03, -0.005, 0.065, 0.09)]},
    # the row: [+0.000, +0.108], p = 0.052: a bound that prints as +0.000 is not above 0
    "borderline": {"ft": 0.70, "sa": (0.65, 0.60, 0.60),
                   "pairs": [(0.05, 0.0004, 0.108, 0.052), (0.05, 0.0003, 0.10, 0.048), (0.04, 0.002, 0.09, 0.060)]},
    "loss": {"ft": 0.70, "sa": (0.80, 0.70, 0.70),
             "pairs": [(-0.10, -0.14, -0.06, 0.002)] * 3},
}


def _planted() -> tuple[SweepView, pd.DataFrame, pd.DataFrame]:
    summary_rows, paired_rows = [], []
    for name, case in CASES.items():
        setting = _setting(name)
        summary_rows.append({"setting": setting, "arm": "finetune", "family": "xresnet", "mean": case["ft"]})
        best = FAMILIES[0]  # every case's best standalone family is the first; the others trail
        for family, mean in zip(FAMILIES, case["sa"], strict=True):  # type: ignore[arg-type]
            summary_rows.append({"setting": setting, "arm": "standalone", "family": family, "mean": mean})
        for seed, (diff, low, high, p) in enumerate(case["pairs"]):  # type: ignore[arg-type]
            for family in FAMILIES:
                # against the weaker families the gap is larger and always significant (except in the loss case)
                shift = 0.0 if family == best else (0.05 if name != "loss" else 0.0)
                lo, hi, pv = (low + shift, high + shift, p if family == best else 0.001)
                paired_rows.append({"setting": setting, "setting_label": f"case={name}", "seed": seed,
                                    "finetune_family": "xresnet", "standalone_family": family, "diff": diff + shift,
                                    "low": lo, "high": hi, "p_value": pv, "significance": significance(lo, hi, pv)})
    view = SweepView("fraction", "standard", pd.DataFrame(), [_setting(n) for n in CASES], "case", [])
    return view, pd.DataFrame(summary_rows), pd.DataFrame(paired_rows)


@pytest.fixture(scope="module")
def verdicts() -> pd.DataFrame:
    view, summary, paired = _planted()
    return conclusions(view, summary, paired).set_index("setting_label")


def test_significance_is_one_rule_with_rounding_and_p() -> None:
    assert significance(0.01, 0.1, 0.01) == "above"
    assert significance(0.0004, 0.108, 0.04) == "includes"  # prints as +0.000: not above 0
    assert significance(0.002, 0.09, 0.060) == "includes"  # interval and p disagree: neither is taken
    assert significance(-0.1, -0.01, 0.01) == "below"
    assert significance(-0.1, -0.0004, 0.01) == "includes"
    assert significance(-0.02, 0.03, 0.7) == "includes"
    assert significance(float("nan"), 0.1, 0.01) == "n/a"
    assert significance(0.004, 0.1, 0.02, level=0.99) == "includes"  # p must be below 1 - level


def test_clear_gain(verdicts: pd.DataFrame) -> None:
    v = verdicts.loc["case=clear"]
    assert v.verdict == "finetune" and (v.wins, v.above, v.pairs, v.pairs_above) == (3, 3, 9, 9)
    assert v.sentence == ("fine-tuning beats the best standalone (xresnet) at case=clear: 0.900 against 0.800, "
                          "gain +0.100; ahead in 3/3 seeds with every paired 95% CI above 0; against every "
                          "standalone family, 9/9 paired CIs above 0")


def test_no_gain(verdicts: pd.DataFrame) -> None:
    v = verdicts.loc["case=none"]
    assert v.verdict == "unclear"
    assert v.sentence.startswith("no consistent gap at case=none: 0.850 against 0.850, gain +0.000; fine-tuning "
                                 "ahead of the best standalone (xresnet) in 2/3 seeds, paired 95% CIs above 0 in "
                                 "0/3 and below 0 in 0/3")


def test_mixed_seeds(verdicts: pd.DataFrame) -> None:
    v = verdicts.loc["case=mixed"]
    assert v.verdict == "unclear" and (v.wins, v.above, v.below) == (2, 1, 0)
    assert "in 2/3 seeds, paired 95% CIs above 0 in 1/3 and below 0 in 0/3" in v.sentence


def test_ahead_in_every_seed_significant_in_some(verdicts: pd.DataFrame) -> None:
    v = verdicts.loc["case=leaning"]
    assert v.verdict == "leans finetune" and (v.wins, v.above) == (3, 2)
    assert v.sentence == ("fine-tuning is ahead of the best standalone (xresnet) at case=leaning in 3/3 seeds "
                          "(0.860 against 0.800, gain +0.060), but its paired 95% CI is above 0 in only 2/3: likely, "
                          "not shown in every seed; against every standalone family, 8/9 paired CIs above 0")


def test_borderline_intervals_are_not_called_above_zero(verdicts: pd.DataFrame) -> None:
    v = verdicts.loc["case=borderline"]
    # seed 1's interval [+0.0003, ...] with p 0.048 prints as +0.000; seed 2's p 0.060 disagrees with its interval
    assert v.verdict == "unclear" and (v.wins, v.above) == (3, 0)
    assert "CI above 0" not in v.sentence and "paired 95% CIs above 0 in 0/3" in v.sentence


def test_loss(verdicts: pd.DataFrame) -> None:
    v = verdicts.loc["case=loss"]
    assert v.verdict == "standalone"
    assert v.sentence.startswith("the best standalone (xresnet) beats fine-tuning at case=loss: 0.700 against 0.800, "
                                 "gain -0.100; ahead in 3/3 seeds with every paired 95% CI below 0")


def test_paired_table_reads_each_row_by_the_same_rule() -> None:
    from ecgml.experiments.report import _paired_table

    _, _, paired = _planted()
    paired = paired.assign(finetune_auc=0.7, standalone_auc=0.65, n_records=270, rounds=1000, level=0.95, note="")
    rows = [line for line in _paired_table(paired).splitlines() if "case=borderline" in line and "| xresnet" not in
            line and "standalone xresnet" in line]
    assert len(rows) == 3
    assert all("not significant: the bound rounds to 0 or p ≥ 0.05" in r for r in rows)
    assert "[+0.000, +0.108]" in rows[0]
    clear = [line for line in _paired_table(paired).splitlines() if "case=clear" in line]
    assert len(clear) == 9 and all("significant gain (CI above 0)" in r for r in clear)


def test_verdict_table() -> None:
    assert verdict_of(0, 0, 0, 0) == "untested"
    assert verdict_of(1, 1, 1, 0) == "finetune"
    assert verdict_of(3, 3, 0, 0) == "unclear"
    assert verdict_of(3, 0, 0, 2) == "leans standalone"
    assert verdict_of(3, 2, 2, 0) == "unclear"
    assert verdict_of(3, 3, 1, 0) == "unclear"  # ahead everywhere, one significant seed: chance does that
    assert verdict_of(3, 0, 0, 1) == "unclear"
