"""What ``ecgml data stats`` reports: label counts per split and per label map, records dropped and
why, NaN and flat-lead counts, sampling rates; as a JSON-ready dict and as text tables."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pandas as pd

from ecgml.data.labels import LABEL_MAPS, SHARED_TASK, load_label_map
from ecgml.data.prepare import Prepared
from ecgml.data.records import Dataset


def dataset_stats(prepared: Prepared) -> dict[str, Any]:
    """Label counts per split, per-map class counts, dropped records and why, NaN and flat leads."""
    dataset, cache = prepared.dataset, prepared.cache
    cached_ids = set(cache.records["record_id"])
    table = dataset.records[dataset.records["record_id"].isin(cached_ids)]
    per_split: dict[str, dict[str, int]] = {}
    for split in ("train", "val", "test"):
        folds = dataset.splits.folds(split)
        part = table[table["fold"].isin(folds)]
        counts = Counter(label for labels in part["labels"] for label in labels)
        per_split[split] = {"records": len(part), **{c: counts.get(c, 0) for c in dataset.classes}}
    problems: dict[str, dict[str, Any]] = defaultdict(lambda: {"records": 0, "dropped": 0, "example": ""})
    for problem in dataset.problems:
        entry = problems[problem.kind]
        entry["records"] += 1
        entry["dropped"] += int(problem.dropped)
        entry["example"] = entry["example"] or problem.message
    for dropped in cache.manifest["dropped"]:  # type: ignore[union-attr]
        entry = problems[dropped.get("kind") or "unreadable_signal"]
        entry["records"] += 1
        entry["dropped"] += 1
        entry["example"] = entry["example"] or dropped["reason"]
    stats: dict[str, Any] = {
        "dataset": dataset.describe(),
        "cache": str(cache.path),
        "cache_digest": cache.digest,
        "records_cached": len(cache.records),
        "sampling_rates_on_disk": {str(k): int(v) for k, v in Counter(table["fs"]).items()},
        "cache_sampling_rate": cache.manifest["inputs"]["preprocessing"]["fs"],  # type: ignore[index]
        "lengths_s": {str(round(k, 2)): int(v) for k, v in
                      Counter(table["n_samples"] / table["fs"]).items()},
        "label_counts": per_split,
        "problems": dict(problems),
        "nan_samples": cache.manifest["nan_samples"],
        "records_with_nan": cache.manifest["records_with_nan"],
        "records_with_flat_leads": cache.manifest["records_with_flat_leads"],
    }
    if dataset.task == SHARED_TASK:
        stats["label_maps"] = _counts_per_map(dataset, table)
    if dataset.label_space is not None:
        stats["label_space"] = _described_label_space(dataset.label_space)
    return stats


def _described_label_space(space: dict[str, Any]) -> dict[str, Any]:
    """The own label space with every code's abbreviation and description beside its count."""
    from ecgml.data.dx_mapping import describe

    return {**space, "described": {c: describe(c) for c in [*space["classes"], *space["dropped"]]}}


def _counts_per_map(dataset: Dataset, table: Any) -> dict[str, dict[str, int]]:
    """How many records each label map gives per shared class (they differ on CRBBB, LVH, NDT)."""
    out: dict[str, dict[str, int]] = {}
    for name in LABEL_MAPS:
        lmap = load_label_map(name)
        convert = lmap.from_scp if dataset.source == "ptbxl" else lmap.from_snomed
        counts = Counter(c for codes in table["codes"] for c in convert(codes))
        out[name] = {c: counts.get(c, 0) for c in lmap.classes}
    return out


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable tables of :func:`dataset_stats`."""
    d = stats["dataset"]
    lines = [
        f"{d['source']} at {d['root']} (version {d['version']}), task {d['task']}, "
        f"label map {d['label_map']}, splits {d['splits']}",
        f"records: {d['n_records']} read, {stats['records_cached']} cached, {d['n_labelled']} labelled; "
        f"sampling rates on disk {stats['sampling_rates_on_disk']} Hz; cache at "
        f"{stats['cache_sampling_rate']} Hz; lengths (s) {_lengths_text(stats['lengths_s'])}",
        f"NaN samples: {stats['nan_samples']} in {stats['records_with_nan']} records; "
        f"records with flat leads: {stats['records_with_flat_leads']}",
        f"cache: {stats['cache']}",
        "",
    ]
    counts = pd.DataFrame(stats["label_counts"])
    counts["total"] = counts.sum(axis=1)
    lines += ["label counts per split:", counts.to_string(), ""]
    if "label_maps" in stats:
        maps = pd.DataFrame(stats["label_maps"])
        maps["differs"] = maps.nunique(axis=1).gt(1).map({True: "*", False: ""})
        lines += ["records per shared class under each label map:", maps.to_string(), ""]
    if "label_space" in stats:
        space = stats["label_space"]
        named = space["described"]
        rule = "given with --classes" if space["explicit"] else f"at least {space['min_positives']} positive records"
        lines.append(f"own label space ({rule}): {len(space['classes'])} class(es) kept, {len(space['dropped'])} "
                     "dropped")
        lines += [f"  kept     {c:>10} {named[c]}: {n}" for c, n in space["counts"].items()]
        lines += [f"  dropped  {c:>10} {named[c]}: {n}" for c, n in space["dropped"].items()]
        lines.append("")
    if stats["problems"]:
        lines.append("problems:")
        for kind, entry in sorted(stats["problems"].items()):
            lines.append(f"  {kind}: {entry['records']} records ({entry['dropped']} dropped), "
                         f"e.g. {entry['example']}")
    else:
        lines.append("problems: none")
    return "\n".join(lines)


def _lengths_text(lengths: dict[str, int]) -> str:
    """Record lengths as counted (``{'10.0': 20}``), or their range and median when there are many (a Challenge
    collection's 6 s to 60 s records)."""
    if len(lengths) <= 6:
        return str(lengths)
    values = sorted(float(k) for k, n in lengths.items() for _ in range(n))
    return f"{values[0]:g}-{values[-1]:g} (median {values[len(values) // 2]:g}, {len(lengths)} distinct)"
