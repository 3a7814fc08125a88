"""The PhysioNet/CinC Challenge's diagnosis tables: SNOMED CT code <-> abbreviation <-> description.

The package carries the Challenge's own ``dx_mapping_scored.csv`` and ``dx_mapping_unscored.csv`` of 2020 and
2021 (``resources/dx_mapping_<scored|unscored>_<year>.csv``, BSD 2-Clause, see ``dx_mapping_LICENSE.txt``), so
a ``#Dx:`` line written as abbreviations (the 2020 first release of CPSC 2018: ``AF``, ``I-AVB``, ``Normal``)
maps to the same SNOMED CT codes as one written as codes. The first release's own spellings that differ from
the tables' abbreviations are listed, each with a note, in ``resources/dx_abbreviation_aliases.csv``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

#: The tables, newest first: a code both years list is described as 2021 describes it.
DX_MAPPING_FILES: tuple[str, ...] = (
    "dx_mapping_scored_2021.csv", "dx_mapping_unscored_2021.csv",
    "dx_mapping_scored_2020.csv", "dx_mapping_unscored_2020.csv",
)
ALIASES_FILE = "dx_abbreviation_aliases.csv"
#: How a ``#Dx:`` line names diagnoses: the 2020 first release's abbreviations (``#Dx: AF,RBBB``) or SNOMED CT
#: codes (``# Dx: 164889003,59118001``); :func:`dx_code` reads either.
DX_DIALECTS: tuple[str, ...] = ("abbreviation", "snomed")


@dataclass(frozen=True)
class Diagnosis:
    """One row of the Challenge's tables."""

    code: str
    abbreviation: str
    description: str
    scored: bool


def _resource(name: str) -> Path:
    return Path(str(resources.files("ecgml.data") / "resources" / name))


def _code_column(row: dict[str, str]) -> str:
    # 2020 names the column "SNOMED CT Code", 2021 "SNOMEDCTCode"
    return (row.get("SNOMEDCTCode") or row.get("SNOMED CT Code") or "").strip()


@cache
def challenge_diagnoses() -> dict[str, Diagnosis]:
    """``code -> Diagnosis`` over both years' scored and unscored tables."""
    out: dict[str, Diagnosis] = {}
    for name in DX_MAPPING_FILES:
        with _resource(name).open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                code = _code_column(row)
                if code and code not in out:
                    out[code] = Diagnosis(code, row["Abbreviation"].strip(), row["Dx"].strip(), "_scored_" in name)
    return out


@cache
def abbreviation_codes() -> dict[str, str]:
    """``abbreviation -> code``, upper-cased, the first release's own spellings included."""
    out: dict[str, str] = {}
    for diagnosis in challenge_diagnoses().values():
        out.setdefault(diagnosis.abbreviation.upper(), diagnosis.code)
    with _resource(ALIASES_FILE).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            out[row["spelling"].strip().upper()] = out[row["abbreviation"].strip().upper()]
    return out


#: How the scored tables' Notes say two codes count as one diagnosis.
_SCORED_AS_SAME = re.compile(r"We score (\d+) and (\d+) as the same diagnosis")


@cache
def scored_as_same() -> dict[str, frozenset[str]]:
    """``code -> the codes the Challenge scores as the same diagnosis`` (the code itself included), read from the
    Notes of the scored tables (complete RBBB 713427006 and RBBB 59118001, PAC 284470004 and SVPB 63593006, ...)."""
    pairs: list[tuple[str, str]] = []
    for name in DX_MAPPING_FILES:
        if "_scored_" not in name:
            continue
        with _resource(name).open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                pairs += _SCORED_AS_SAME.findall(row.get("Notes") or "")
    out: dict[str, set[str]] = {}
    for a, b in pairs:
        group = out.get(a, {a}) | out.get(b, {b})
        for code in group:
            out[code] = group
    return {code: frozenset(group) for code, group in out.items()}


def dx_code(token: str) -> str | None:
    """The SNOMED CT code a ``#Dx:`` entry names: the entry itself when it is a number, else the code of its
    abbreviation; None for an abbreviation the tables do not know."""
    token = token.strip()
    if token.isdigit():
        return token
    return abbreviation_codes().get(token.upper())


def describe(code: str) -> str:
    """``AF (atrial fibrillation)`` for a known code, the code itself otherwise."""
    diagnosis = challenge_diagnoses().get(code)
    return f"{diagnosis.abbreviation} ({diagnosis.description})" if diagnosis else code
