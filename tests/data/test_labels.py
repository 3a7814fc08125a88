"""The shared label space, checked against the Challenge's own tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgml.data.labels import LABEL_MAPS, label_matrix, load_label_map, snomed_vocabulary

STUDY_CLASSES = ("1AVB", "CRBBB", "IRBBB", "LAFB", "CLBBB", "IVCD", "LNGQT", "2AVB", "ISCAN", "ILBBB",
                 "ISCIN", "ISCLA", "LAO/LAE", "LPFB", "LVH", "NDT", "RVH", "SEHYP")


def _tables(folder: Path) -> pd.DataFrame:
    tables = pd.concat([pd.read_csv(folder / f"dx_mapping_{k}.csv") for k in ("scored", "unscored")])
    code_column = next(c for c in tables.columns if "SNOMED" in c)
    tables["code"] = tables[code_column].astype(str)
    return tables.set_index("code")


@pytest.mark.parametrize("name", LABEL_MAPS)
def test_maps_cover_the_18_study_classes(name: str) -> None:
    lmap = load_label_map(name)
    assert lmap.classes == STUDY_CLASSES
    vocabulary = snomed_vocabulary()
    for cls in lmap.classes:
        assert lmap.snomed_codes[cls] and all(code in vocabulary for code in lmap.snomed_codes[cls])
        assert lmap.scp_codes[cls][0] == cls  # the class is named after its SCP statement


@pytest.mark.parametrize("name", LABEL_MAPS)
def test_georgia_counts_equal_the_challenge_table(name: str, real_challenge: Path) -> None:
    tables = _tables(real_challenge)
    lmap = load_label_map(name)
    for cls in lmap.classes:
        expected = int(sum(tables.loc[code, "Georgia"] for code in lmap.snomed_codes[cls]))
        assert lmap.georgia_counts[cls] == expected, cls


def test_the_two_maps_differ_where_documented() -> None:
    challenge, seed = load_label_map("challenge"), load_label_map("seed")
    differing = [c for c in challenge.classes
                 if (challenge.scp_codes[c], challenge.snomed_codes[c]) != (seed.scp_codes[c], seed.snomed_codes[c])]
    assert differing == ["CRBBB", "CLBBB", "LVH", "NDT"]
    assert seed.snomed_codes["CRBBB"] == ("713427006",) and "59118001" in challenge.snomed_codes["CRBBB"]
    assert seed.snomed_codes["NDT"] == ("428750005",) and challenge.snomed_codes["NDT"] == ("164934002",)
    assert set(challenge.scp_codes["NDT"]) == {"NDT", "NT_", "TAB_", "LOWT"}
    assert set(challenge.scp_codes["LVH"]) == {"LVH", "VCLVH"}
    for cls in differing:
        assert challenge.notes[cls] and seed.notes[cls]


def test_vocabulary_is_the_union_of_both_challenge_years(real_challenge: Path, real_challenge_2020: Path) -> None:
    codes = set(_tables(real_challenge).index) | set(_tables(real_challenge_2020).index)
    assert set(snomed_vocabulary()) == codes


def test_conversions_keep_class_order() -> None:
    lmap = load_label_map("challenge")
    assert lmap.from_snomed(["164934002", "59118001", "426783006"]) == ("CRBBB", "NDT")
    assert lmap.from_scp({"VCLVH": 0.0, "1AVB": 100.0}) == ("1AVB", "LVH")
    assert load_label_map("seed").from_scp({"VCLVH": 0.0}) == ()


def test_label_matrix_refuses_foreign_labels() -> None:
    np.testing.assert_array_equal(label_matrix([("b",), (), ("a", "b")], ("a", "b")),
                                  [[0, 1], [0, 0], [1, 1]])
    with pytest.raises(ValueError, match="'c' is not one of the 2 classes"):
        label_matrix([("c",)], ("a", "b"))


def test_unknown_map_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown label map 'x'; choose one of challenge, seed"):
        load_label_map("x")
