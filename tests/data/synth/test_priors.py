"""Label priors come from the label-map CSVs; sampling respects exclusions; codes are in the vocabulary."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from ecgml.data.labels import load_label_map, snomed_vocabulary
from ecgml.data.synth.diagnoses import DIAGNOSES, MODIFIERS, incompatible
from ecgml.data.synth.labels import (
    GEORGIA_RECORDS,
    PTBXL_RECORDS,
    Priors,
    all_georgia_codes,
    default_priors,
    georgia_codes,
    nsr_share,
    ptbxl_statements,
    sample_concepts,
)
from ecgml.data.synth.statements import SCP_STATEMENTS_CSV


def test_shared_class_priors_are_the_label_map_counts() -> None:
    lmap = load_label_map("challenge")
    ptbxl, georgia = default_priors("ptbxl"), default_priors("g12ec")
    for cls in lmap.classes:
        assert ptbxl[cls] == lmap.ptbxl_counts[cls] / PTBXL_RECORDS
        assert georgia[cls] == lmap.georgia_counts[cls] / GEORGIA_RECORDS
    assert georgia["LNGQT"] > 5 * ptbxl["LNGQT"]  # the source shift the study is about


def test_overrides_apply_and_bad_ones_are_refused() -> None:
    assert Priors.build("ptbxl", {"CLBBB": 0.3}).probabilities["CLBBB"] == 0.3
    with pytest.raises(ValueError, match="unknown concept"):
        Priors.build("ptbxl", {"NOPE": 0.1})
    with pytest.raises(ValueError, match="probability"):
        Priors.build("ptbxl", {"LVH": 1.5})
    with pytest.raises(ValueError, match="rhythm"):
        Priors.build("ptbxl", {"AFIB": 0.6, "STACH": 0.6})


def _sample(source: str, n: int, overrides: dict[str, float] | None = None) -> list[frozenset[str]]:
    rng = np.random.default_rng(7)
    priors = Priors.build(source, overrides)
    return [sample_concepts(rng, priors) for _ in range(n)]


@pytest.mark.parametrize("source", ["ptbxl", "g12ec"])
def test_sampled_marginals_follow_the_priors(source: str) -> None:
    n = 20000
    samples = _sample(source, n)
    counts = Counter(c for s in samples for c in s)
    priors = default_priors(source)
    for concept in ("NORM", "LVH", "NDT", "1AVB", "IRBBB", "LNGQT", "AFIB", "STACH"):
        expected = priors[concept]
        sd = np.sqrt(expected * (1 - expected) / n)
        # exclusions drop a few draws, so allow 15 % below the prior on top of sampling noise
        assert expected * 0.85 - 4 * sd <= counts[concept] / n <= expected + 4 * sd, concept
    assert all(sum(r in s for r in ("SR", "STACH", "SBRAD", "SARRH", "AFIB")) == 1 for s in samples)


def test_overriding_a_prior_changes_the_sampled_frequency() -> None:
    low = Counter(c for s in _sample("ptbxl", 3000, {"CLBBB": 0.0}) for c in s)
    high = Counter(c for s in _sample("ptbxl", 3000, {"CLBBB": 0.3}) for c in s)
    assert low["CLBBB"] == 0
    assert 0.2 < high["CLBBB"] / 3000 < 0.4


def test_no_sampled_record_holds_an_incompatible_pair() -> None:
    for s in _sample("ptbxl", 5000) + _sample("g12ec", 5000):
        for a, b in combinations(sorted(s), 2):
            assert not incompatible(a, b), (a, b, s)
        assert s <= set(DIAGNOSES) | MODIFIERS


def test_ptbxl_statements_are_scp_statements_with_real_likelihood_values() -> None:
    known = {line.split(",", 1)[0] for line in SCP_STATEMENTS_CSV.splitlines()[1:]}
    rng = np.random.default_rng(0)
    seen: Counter[str] = Counter()
    for s in _sample("ptbxl", 3000):
        codes = ptbxl_statements(s, rng)
        assert set(codes) <= known
        assert set(codes.values()) <= {0.0, 15.0, 35.0, 50.0, 80.0, 100.0}
        assert list(codes)[-1] in {"SR", "STACH", "SBRAD", "SARRH", "AFIB"}  # rhythm last, as PTB-XL
        seen.update(codes.keys())
    for statement in ("NORM", "LVH", "VCLVH", "NDT", "LOWT", "NT_", "INVT", "STD_", "ABQRS", "IMI", "ASMI"):
        assert seen[statement] > 0, statement


def test_t_abnormality_is_always_in_the_challenge_ndt_class() -> None:
    lmap = load_label_map("challenge")
    rng = np.random.default_rng(1)
    for variant in ("T_FLAT", "T_INV", "T_NONSPEC"):
        for _ in range(200):
            codes = ptbxl_statements(frozenset({"SR", "NDT", variant}), rng)
            assert "NDT" in lmap.from_scp(codes)


def test_every_georgia_code_is_in_the_challenge_vocabulary() -> None:
    vocabulary = snomed_vocabulary()
    assert all_georgia_codes() <= set(vocabulary)


def test_georgia_codes_rbbb_mostly_as_59118001_so_the_two_label_maps_differ() -> None:
    priors = Priors.build("g12ec")
    rng = np.random.default_rng(2)
    codes = Counter(c for _ in range(2000) for c in georgia_codes(frozenset({"SR", "CRBBB"}), 40.0, rng,
                                                                    nsr_share(priors)))
    assert codes["59118001"] > 10 * codes["713427006"] > 0
    challenge, seed = load_label_map("challenge"), load_label_map("seed")
    assert challenge.from_snomed(["59118001"]) == ("CRBBB",)
    assert seed.from_snomed(["59118001"]) == ()
    sinus = georgia_codes(frozenset({"SR", "NORM"}), 40.0, rng, nsr_share(priors))
    assert sinus == ["426783006"]  # a record without findings is coded sinus rhythm
    left = georgia_codes(frozenset({"SBRAD", "LAFB"}), -60.0, rng, nsr_share(priors))
    assert left == ["445118002", "39732003", "426177001"]  # diagnosis, axis deviation, rhythm last
