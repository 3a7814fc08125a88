"""The documentation is checked like code: ``mkdocs build --strict`` passes (a broken link or a page missing
from the nav fails it), the CLI reference is generated from the click commands, and every command block
marked ``<!-- runnable -->`` in the README and the docs runs, in order, against a tiny synthetic tree.

A runnable block is a fenced ``bash`` block on the line after ``<!-- runnable -->``. The blocks share one
working folder, README first, then the docs pages in the order of ``mkdocs.yml``'s nav, so a page can use
what an earlier block made (the README's first run trains and registers the models the later pages use).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- runnable -->"
BLOCK = re.compile(r"^" + re.escape(MARKER) + r"\n```bash\n(.*?)\n```", re.S | re.M)
MARKER_LINE = re.compile(r"^" + re.escape(MARKER) + r"$", re.M)
IN_CI = bool(os.environ.get("CI"))


def _need_mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        if IN_CI:
            pytest.fail("mkdocs and mkdocs-material are missing under CI: the `dev` extra installs them")
        pytest.skip("mkdocs or mkdocs-material is not installed (pip install -e '.[docs]')")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, env=env, capture_output=True, text=True, timeout=300)


def _nav_pages() -> list[str]:
    import yaml

    def walk(entries: list) -> list[str]:
        pages = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            pages += walk(value) if isinstance(value, list) else [value]
        return pages

    return walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


def test_mkdocs_build_strict_passes_and_writes_the_cli_reference(tmp_path: Path) -> None:
    _need_mkdocs()
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for page in _nav_pages():
        built = tmp_path / "site" / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), page
    reference = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    for command in ("ecgml finetune", "ecgml registry promote", "ecgml data cache prune", "ecgml tune"):
        assert f"<code>{command}</code>" in reference, command


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    _need_mkdocs()
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "data.md").open("a") as page:
        page.write("\nSee [the old page](caches-old.md).\n")
    done = _build(copy / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "caches-old.md" in done.stdout + done.stderr


def test_the_cli_reference_is_every_commands_help() -> None:
    import click
    from click.testing import CliRunner

    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        from cli_reference import WIDTH, cli_reference_markdown
    finally:
        sys.path.remove(str(ROOT / "docs" / "hooks"))
    from ecgml.cli import main

    text = cli_reference_markdown()

    def paths(command: click.Command, prefix: list[str]) -> list[list[str]]:
        out = [prefix]
        if isinstance(command, click.Group):
            for name in command.list_commands(click.Context(command)):
                out += paths(command.get_command(click.Context(command), name), [*prefix, name])
        return out

    every = paths(main, [])
    assert len(every) > 20
    for args in every:
        assert f"`{' '.join(['ecgml', *args])}`" in text, args
        shown = CliRunner().invoke(main, [*args, "--help"], prog_name="ecgml", terminal_width=WIDTH,
                                   max_content_width=WIDTH).output
        assert shown.strip() and shown.strip() in text, args  # what --help prints, word for word


def runnable_blocks() -> list[tuple[str, str]]:
    """(where, commands) of every runnable block: the README's, then each nav page's, in order."""
    blocks = []
    for page in ["README.md", *(f"docs/{p}" for p in _nav_pages())]:
        path = ROOT / page
        if path.is_file():
            blocks += [(f"{page} block {n + 1}", text) for n, text in enumerate(BLOCK.findall(path.read_text()))]
    return blocks


def test_the_readme_and_most_pages_have_runnable_blocks() -> None:
    places = {where.split(" block")[0] for where, _ in runnable_blocks()}
    assert "README.md" in places and len(places) >= 5, places
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:  # a marker must sit right above a block
        text = page.read_text()
        assert len(MARKER_LINE.findall(text)) == len(BLOCK.findall(text)), page


@pytest.mark.slow
def test_every_runnable_block_runs_in_order(tmp_path: Path) -> None:
    """Each block as a reader pastes it, in a shell whose PATH has this environment's ``ecgml`` and ``mlflow``,
    all in one folder and in order (one test, so a parallel runner cannot split the sequence)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ECGML_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT),
               ECGML_THREADS="1")
    blocks = runnable_blocks()
    assert blocks
    for where, commands in blocks:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{where} failed:\n{commands}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
