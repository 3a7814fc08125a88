"""The download catalogue: each dataset release ecgml can fetch, its URLs, checksums, licence and layout.

One home for what is known about each published archive; :mod:`.orchestrate` fetches, checks and unpacks
what an entry here describes.

What was found about the sources (public pages and repositories searched offline; none of these URLs
could be fetched from the machines this was written on, so no digest below was checked against a real
download -- the first real run records one in its receipt):

``ptbxl`` -- PTB-XL 1.0.3 (doi:10.13026/kfzx-aw45). PhysioNet's "Download the ZIP file" link of
    https://physionet.org/content/ptb-xl/1.0.3/ is
    ``https://physionet.org/static/published-projects/ptb-xl/ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3.zip``
    (~1.7 GB, used by many public scripts); it unpacks to a folder of the same name that holds
    ``SHA256SUMS.txt`` with one ``<sha256>  <path>`` line per file (the same format as
    ``shared/real-sample/ptbxl/SHA256SUMS.txt``). PhysioNet publishes no checksum of the zip itself, so
    every unpacked file is verified against ``SHA256SUMS.txt`` and the zip's sha256 goes into the
    receipt. That list travels inside the zip: it catches corruption and truncation, not a malicious
    host; pass ``sha256=`` (for instance from an earlier receipt) to pin the archive too.

``g12ec`` -- Georgia 12-lead ECG Challenge database, 10,344 records, as released for the 2020
    PhysioNet/CinC Challenge. The Challenge website (``2020/index.md`` of
    github.com/physionetchallenges/physionetchallenges.github.io, repeated on the 2021 page) lists
    ``PhysioNetChallenge2020_Training_E.tar.gz`` in the public bucket
    ``physionet-challenge-2020-12-lead-ecg-public`` with **MD5** ``4971a0562df4a7e2fd8f58e060927ff2``;
    no sha256 is published, so the MD5 is enforced and the sha256 recorded in the receipt. (An older
    MD5, ``594c8cbc02a0aec4c179d2f019b09a7a``, circulates in third-party READMEs from before the archive
    was re-issued.) The site links ``storage.cloud.google.com``, which wants a Google sign-in; the same
    object is served anonymously from ``storage.googleapis.com``, used here. Third-party code says the
    archive unpacks to ``WFDB/``; that is unconfirmed, so a single top folder of another name is
    accepted with a warning.

``g12ec-physionet`` -- the same database from PhysioNet's versioned release of the 2020 Challenge,
    challenge-2020 1.0.2 (doi:10.13026/dvyd-kd57): the project zip
    ``classification-of-12-lead-ecgs-the-physionetcomputing-in-cardiology-challenge-2020-1.0.2.zip``
    (name confirmed by several public scripts) holds ``training/georgia/g1..g11``. It is the whole
    training set (several GB, all six sources), but only Georgia is unpacked, and every Georgia file is
    verified against the project's ``SHA256SUMS.txt`` (PhysioNet puts one in every project zip, as in
    PTB-XL's; assumed, not seen, for this project). The stable host and per-file sha256 are the reason
    to choose it over ``g12ec``.

``g12ec-2021`` -- Georgia as re-issued for the 2021 Challenge (2021 header dialect): ``WFDB_Ga.tar.gz``
    in the bucket ``physionetchallenge2021-public-datasets`` (named in third-party code; unpacks to
    ``WFDB_Ga/``). **No checksum is published** for it (an MD5, ``47085dd62baca5ace4041025d6910b13``,
    appears only in third-party code and is not enforced); the receipt records the sha256 of what was
    downloaded so a later run or a colleague can pin the same bytes with ``sha256=``. PhysioNet's
    challenge-2021 1.0.3 (doi:10.13026/34va-7q14) also holds ``training/georgia``, but no Georgia-only
    archive of it was found and the name of its project zip could not be confirmed, so it is not listed.

"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ecgml.data.download.base import UnknownDatasetError
from ecgml.data.download.unpack import unsafe_reason

#: The receipt written into every downloaded dataset root.
RECEIPT_NAME = "DOWNLOAD.json"
#: The per-file checksum list PhysioNet publishes inside its archives.
SUMS_NAME = "SHA256SUMS.txt"
#: Lowercase hexadecimal digits (checksums).
HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class Source:
    """One downloadable release: where it is, how to check it, and where its data sit in the archive.

    ``urls`` are alternatives serving the same bytes, tried in order. ``sha256``/``md5`` are checksums of
    the archive *as published* (``md5`` only where no sha256 is published); ``sums_file`` is a
    ``SHA256SUMS.txt`` inside ``root`` listing every file. ``root`` is the archive's top folder (None: the
    archive's top level is the dataset); ``subdir`` keeps only that part of ``root``.
    """

    name: str
    dataset: str
    version: str
    title: str
    urls: tuple[str, ...]
    root: str | None
    licence: str
    citation: str
    sha256: str | None = None
    md5: str | None = None
    sums_file: str | None = None
    subdir: str | None = None
    folder: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.urls:
            raise ValueError("a Source needs a name and at least one URL")
        for label, digest, length in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if digest is not None and (len(digest) != length or not HEX.match(digest)):
                raise ValueError(f"source {self.name!r}: {label} must be {length} lowercase hex digits")
        names = {posixpath.basename(urllib.parse.urlsplit(u).path) for u in self.urls}
        if len(names) != 1 or not next(iter(names)):
            raise ValueError(f"source {self.name!r}: its URLs must name one archive file, got {sorted(names)}")
        for label, rel in (("root", self.root), ("subdir", self.subdir), ("sums_file", self.sums_file)):
            if rel is not None and unsafe_reason(rel):
                raise ValueError(f"source {self.name!r}: {label} {rel!r} is not a safe relative path")
        if self.folder and (unsafe_reason(self.folder) or "/" in self.folder):
            raise ValueError(f"source {self.name!r}: folder {self.folder!r} must be one plain folder name")

    @property
    def archive(self) -> str:
        """File name of the archive (the last part of its URL), also its name under ``dest``."""
        return posixpath.basename(urllib.parse.urlsplit(self.urls[0]).path)

    @property
    def target(self) -> str:
        """Name of the dataset root folder created under ``dest``."""
        return self.folder or f"{self.name}-{self.version}"

    @property
    def published_checksum(self) -> str | None:
        """Which published check guards this source: ``sha256``, ``md5``, the sums file, or None."""
        if self.sha256:
            return "sha256"
        if self.md5:
            return "md5"
        return self.sums_file


_PHYSIONET = "Goldberger AL et al. PhysioBank, PhysioToolkit, and PhysioNet. Circulation 101(23):e215-e220 (2000)."
_CHALLENGE_2020 = ("Perez Alday EA et al. Classification of 12-lead ECGs: the PhysioNet/Computing in Cardiology "
                   "Challenge 2020. Physiol Meas 41:124003 (2020), doi:10.1088/1361-6579/abc960.")

_REGISTRY: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            name="ptbxl",
            dataset="ptbxl",
            version="1.0.3",
            title="PTB-XL, a large publicly available electrocardiography dataset (PhysioNet 1.0.3)",
            urls=("https://physionet.org/static/published-projects/ptb-xl/"
                  "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3.zip",),
            root="ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3",
            sums_file=SUMS_NAME,
            folder="ptbxl-1.0.3",
            licence="CC BY 4.0 (PhysioNet open access)",
            citation=("Wagner P et al. PTB-XL, a large publicly available electrocardiography dataset. "
                      "Sci Data 7:154 (2020); PhysioNet doi:10.13026/kfzx-aw45. " + _PHYSIONET),
            notes="no checksum of the zip is published; every file is checked against SHA256SUMS.txt",
        ),
        Source(
            name="g12ec",
            dataset="g12ec",
            version="challenge-2020",
            title="Georgia 12-lead ECG Challenge database, 2020 Challenge training release (Training_E)",
            urls=("https://storage.googleapis.com/physionet-challenge-2020-12-lead-ecg-public/"
                  "PhysioNetChallenge2020_Training_E.tar.gz",),
            root="WFDB",
            md5="4971a0562df4a7e2fd8f58e060927ff2",
            folder="g12ec-challenge-2020",
            licence="CC BY 4.0 (PhysioNet/CinC Challenge 2020 data)",
            citation=_CHALLENGE_2020 + " " + _PHYSIONET,
            notes="MD5 published on the 2020 Challenge website; no sha256 published",
        ),
        Source(
            name="g12ec-physionet",
            dataset="g12ec",
            version="1.0.2",
            title="Georgia records of PhysioNet challenge-2020 1.0.2 (training/georgia)",
            urls=("https://physionet.org/static/published-projects/challenge-2020/"
                  "classification-of-12-lead-ecgs-the-physionetcomputing-in-cardiology-challenge-2020-1.0.2.zip",),
            root="classification-of-12-lead-ecgs-the-physionetcomputing-in-cardiology-challenge-2020-1.0.2",
            subdir="training/georgia",
            sums_file=SUMS_NAME,
            folder="g12ec-physionet-1.0.2",
            licence="CC BY 4.0 (PhysioNet open access)",
            citation=_CHALLENGE_2020 + " PhysioNet doi:10.13026/dvyd-kd57. " + _PHYSIONET,
            notes="downloads the whole 2020 training set (several GB), keeps and verifies training/georgia",
        ),
        Source(
            name="g12ec-2021",
            dataset="g12ec",
            version="challenge-2021",
            title="Georgia 12-lead ECG Challenge database, 2021 Challenge training release (WFDB_Ga)",
            urls=("https://storage.googleapis.com/physionetchallenge2021-public-datasets/WFDB_Ga.tar.gz",),
            root="WFDB_Ga",
            folder="g12ec-challenge-2021",
            licence="CC BY 4.0 (PhysioNet/CinC Challenge 2021 data)",
            citation=("Reyna MA et al. Will Two Do? Varying Dimensions in Electrocardiography: the "
                      "PhysioNet/Computing in Cardiology Challenge 2021. Computing in Cardiology 48 (2021); "
                      "PhysioNet doi:10.13026/34va-7q14. " + _PHYSIONET),
            notes="no checksum published; the receipt records the sha256 of what was downloaded",
        ),
    )
}

#: The registry, read-only: ``name -> Source``.
SOURCES: Mapping[str, Source] = MappingProxyType(_REGISTRY)


def get_source(name: str) -> Source:
    """The registered source called ``name``; an unknown name raises and lists the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {known}") from None
