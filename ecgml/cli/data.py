"""``ecgml data``: synthesise, download, prepare (cache) and describe datasets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import click

from ecgml.cli.options import data_options, fail, prepare_config
from ecgml.config import default_data_dir, to_jsonable
from ecgml.data.download import SOURCES as DOWNLOAD_SOURCES
from ecgml.data.dx_mapping import DX_DIALECTS
from ecgml.data.sources.ptbxl import PTBXL_FS
from ecgml.defaults import DATA_EXPERIMENT


@click.group("data")
def data_group() -> None:
    """Datasets: synthesise, download, prepare (cache) and describe."""


def _parse_rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of rates") from None
    if not rates or not set(rates) <= set(PTBXL_FS):
        raise click.BadParameter(f"PTB-XL-shaped trees are written at {' and/or '.join(map(str, PTBXL_FS))} Hz")
    return rates


@data_group.command("synth")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder to write ptbxl/, g12ec/ and cpsc/ into [default: $ECGML_DATA/synthetic].")
@click.option("--ptbxl-records", type=click.IntRange(0), default=2000, show_default=True)
@click.option("--g12ec-records", type=click.IntRange(0), default=1000, show_default=True)
@click.option("--cpsc-records", type=click.IntRange(0), default=0, show_default=True,
              help="Records of a CPSC 2018-shaped Challenge tree (cpsc/: A0001..., 500 Hz, 6-60 s, its nine "
                   "classes), a target for --target cinc.")
@click.option("--cpsc-dialect", type=click.Choice(DX_DIALECTS), default=DX_DIALECTS[0], show_default=True,
              help="How the CPSC tree's #Dx lines name the classes: the 2020 first release's abbreviations "
                   "(AF,RBBB) or SNOMED CT codes (the 2021 layout, in g1/, g2/...).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ptbxl-rates", default=",".join(map(str, PTBXL_FS)), show_default=True,
              help="Sampling rates of the PTB-XL-shaped tree (records100/, records500/).")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="Worker processes (0 = all cores).")
def synth_command(out_dir: Path | None, ptbxl_records: int, g12ec_records: int, cpsc_records: int,
                  cpsc_dialect: str, seed: int, ptbxl_rates: str, workers: int) -> None:
    """Write synthetic PTB-XL-shaped, G12EC-shaped and CPSC 2018-shaped trees in the real on-disk formats."""
    from ecgml.data.synth import generate_cpsc, generate_g12ec, generate_ptbxl

    out_dir = out_dir or default_data_dir() / "synthetic"
    rates = _parse_rates(ptbxl_rates)
    try:
        summaries: dict[str, Any] = {}
        if ptbxl_records:
            summaries["ptbxl"] = generate_ptbxl(out_dir / "ptbxl", ptbxl_records, seed,
                                                sampling_rates=rates, workers=workers)
        if g12ec_records:
            summaries["g12ec"] = generate_g12ec(out_dir / "g12ec", g12ec_records, seed + 1, workers=workers)
        if cpsc_records:
            summaries["cpsc"] = generate_cpsc(out_dir / "cpsc", cpsc_records, seed + 2, dx_dialect=cpsc_dialect,
                                              workers=workers)
    except (OSError, ValueError) as exc:
        fail(exc)
    for name, summary in summaries.items():
        click.echo(f"{name}: {summary}")
    log_to_mlflow_run({"synth_config.json": {"out": str(out_dir), "ptbxl_records": ptbxl_records,
                                             "g12ec_records": g12ec_records, "cpsc_records": cpsc_records,
                                             "cpsc_dialect": cpsc_dialect, "seed": seed,
                                             "ptbxl_rates": list(rates)}})


@data_group.command("download")
@click.argument("name", type=click.Choice(sorted(DOWNLOAD_SOURCES)))
@click.option("--dest", type=click.Path(path_type=Path), required=True, help="Folder to download into.")
@click.option("--base-url", default=None, help="A mirror to download from instead of the publisher.")
@click.option("--no-verify", is_flag=True, help="Skip SHA-256 verification (not recommended).")
def download_command(name: str, dest: Path, base_url: str | None, no_verify: bool) -> None:
    """Download a published dataset, resuming partial files and verifying published checksums.

    ptbxl: PTB-XL 1.0.3, every file checked against its SHA256SUMS.txt. g12ec: the 2020 Challenge's
    Georgia archive, checked against its published MD5. g12ec-physionet: the same records from
    PhysioNet's versioned release, every file checked by SHA-256. g12ec-2021: the 2021 re-issue (no
    published checksum: the receipt records the SHA-256 of what arrived).
    """
    from ecgml.data.download import download_dataset

    try:
        root = download_dataset(name, dest, base_url=base_url, verify=not no_verify)
    except (OSError, ValueError) as exc:
        fail(exc)
    click.echo(f"{name} ready at {root}")


@data_group.command("prepare")
@data_options
def prepare_command(**options: Any) -> None:
    """Read a dataset and build (or reuse) its signal cache and label matrix."""
    from ecgml.data.prepare import prepare

    config = prepare_config(**options)
    try:
        prepared = prepare(config)
    except (OSError, ValueError, KeyError) as exc:
        _fail_with_hint(exc)
    _foreign_note(prepared.dataset.problems, config.data.allow_foreign)
    click.echo(f"cache ready: {prepared.cache.path} ({len(prepared.cache.records)} records, "
               f"shape {tuple(prepared.cache.signals.shape)})")
    log_to_mlflow_run({"config.json": to_jsonable(config)})


@data_group.command("stats")
@data_options
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the statistics as JSON here.")
def stats_command(json_path: Path | None, **options: Any) -> None:
    """Label counts per split and per label map, dropped records and why, NaN and flat leads."""
    from ecgml.data.prepare import prepare
    from ecgml.data.stats import dataset_stats, format_stats
    from ecgml.io import atomic_write_json

    config = prepare_config(**options)
    try:
        prepared = prepare(config, require_labels=False)
        stats = dataset_stats(prepared)
    except (OSError, ValueError, KeyError) as exc:
        _fail_with_hint(exc)
    _foreign_note(prepared.dataset.problems, config.data.allow_foreign)
    click.echo(format_stats(stats))
    if json_path:
        atomic_write_json(json_path, stats)
    log_to_mlflow_run({"config.json": to_jsonable(config), f"stats_{config.data.source}.json": stats})


_FOREIGN_HINT = "--allow-foreign lets records of other Challenge databases in (never for fine-tuning)"


def _foreign_note(problems: list[Any], allowed: bool) -> None:
    """Say how many foreign records were refused, and the flag that lets them in."""
    refused = sum(p.kind == "foreign_record" for p in problems)
    if refused and not allowed:
        click.echo(f"{refused} record(s) of other databases refused; {_FOREIGN_HINT}")


def _fail_with_hint(exc: Exception) -> NoReturn:
    """``fail`` with the flag named when every record was refused as foreign."""
    if "foreign_record" in str(exc):
        raise click.ClickException(f"{exc}; {_FOREIGN_HINT}") from exc
    fail(exc)


@data_group.group("cache")
def cache_group() -> None:
    """The signal caches in a cache folder: list them, prune the ones not needed."""


def _cache_dir_option(fn: Any) -> Any:
    return click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                        help="[default: $ECGML_DATA/cache]")(fn)


@cache_group.command("list")
@_cache_dir_option
def cache_list_command(cache_dir: Path | None) -> None:
    """Each cache: dataset, rate, leads, records, size on disk, created, last used, tasks labelled on it."""
    from ecgml.data.cache.store import format_table, list_caches

    folder = cache_dir or default_data_dir() / "cache"
    try:
        click.echo(format_table(list_caches(folder)))
    except (OSError, ValueError) as exc:
        fail(exc)


@cache_group.command("prune")
@_cache_dir_option
@click.option("--older-than", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Caches not used for more than DAYS days (never used: counted from their creation).")
@click.option("--unused", is_flag=True, help="Caches never opened since they were built.")
@click.option("--all", "everything", is_flag=True, help="Every cache.")
@click.option("--yes", is_flag=True, help="Delete; without it, only show what would go.")
def cache_prune_command(cache_dir: Path | None, older_than: float | None, unused: bool, everything: bool,
                        yes: bool) -> None:
    """Remove caches by age, by disuse or all; a dry run unless --yes. A cache being built is kept."""
    from datetime import timedelta

    from ecgml.data.cache.store import format_size, list_caches, remove_cache, select_for_prune

    folder = cache_dir or default_data_dir() / "cache"
    try:
        chosen = select_for_prune(list_caches(folder), unused=unused, everything=everything,
                                  older_than=None if older_than is None else timedelta(days=older_than))
    except (OSError, ValueError) as exc:
        fail(exc)
    freed = 0
    for info in chosen:
        if not yes:
            click.echo(f"would remove {info.path} ({format_size(info.size_bytes)})")
        elif remove_cache(info):
            click.echo(f"removed {info.path} ({format_size(info.size_bytes)})")
            freed += info.size_bytes
        else:
            click.echo(f"kept {info.path}: it is being built right now")
    total = sum(i.size_bytes for i in chosen)
    if not yes:
        click.echo(f"{len(chosen)} cache(s), {format_size(total)}: dry run, nothing removed (--yes removes them)")
    else:
        click.echo(f"freed {format_size(freed)}")


def log_to_mlflow_run(artifacts: dict[str, Any]) -> None:
    """When run by ``mlflow run`` (``MLFLOW_RUN_ID`` set), attach these JSON documents to that run."""
    if not os.environ.get("MLFLOW_RUN_ID"):
        return
    from ecgml.tracking.runs import log_json, open_run

    with open_run(DATA_EXPERIMENT, system_metrics=False):
        for name, obj in artifacts.items():
            log_json(obj, name)


COMMANDS: tuple[click.Command, ...] = (data_group,)
