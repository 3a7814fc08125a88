"""Dataset downloads against a local HTTP server (127.0.0.1 only): resume, Range quirks, checksums, unsafe
archives, clear errors, and the receipt that makes a second call free."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from ecgml.data.download import (
    RECEIPT_NAME,
    SOURCES,
    ChecksumError,
    DownloadError,
    Source,
    UnknownDatasetError,
    UnsafeArchiveError,
    download_dataset,
    get_source,
    read_receipt,
    verify_tree,
)
from ecgml.data.formats import read_header, write_challenge_record
from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.sources.common import read_version
from tests.data.trees import write_tiny_ptbxl

PTBXL_TOP = "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3"
PTBXL_ZIP = PTBXL_TOP + ".zip"
GEORGIA_TGZ = "PhysioNetChallenge2020_Training_E.tar.gz"
TAMPERED = "records100/00000/00002_lr.dat"


# --------------------------------------------------------------------------------------------------
# the local server


@dataclass
class ServerState:
    """What the server serves and how it misbehaves; ``log`` records every request it answered."""

    files: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False
    drop_after: int | None = None  # send this many body bytes, then close the connection (once)
    log: list[dict[str, Any]] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


class RangeHandler(BaseHTTPRequestHandler):
    """GET with single ``bytes=N-`` ranges, ``If-Range`` on the ETag, 404, 416 and a one-off drop."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        state = cast(_Server, self.server).state
        name = self.path.rsplit("/", 1)[-1]
        data = state.files.get(name) if self.path.startswith("/mirror/") else None
        entry: dict[str, Any] = {"path": self.path, "range": self.headers.get("Range"),
                                 "if_range": self.headers.get("If-Range")}
        state.log.append(entry)
        if data is None:
            entry["status"] = 404
            self.send_error(404)
            return
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        start = 0
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if range_header and not state.ignore_range and if_range in (None, etag):
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        entry["status"] = 206 if start else 200
        self.send_response(entry["status"])
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if state.drop_after is not None:
            self.wfile.write(body[: state.drop_after])
            self.wfile.flush()
            state.drop_after = None
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the environment must not swallow requests to the local server."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[tuple[ServerState, str]]:
    """A threaded server on 127.0.0.1, port 0; yields its state and the mirror's base URL."""
    httpd = _Server(("127.0.0.1", 0), RangeHandler)
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.state, f"http://127.0.0.1:{httpd.server_address[1]}/mirror"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# --------------------------------------------------------------------------------------------------
# tiny archives in the real layouts


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_sums(root: Path) -> None:
    lines = [f"{_sha256(data)}  {rel}\n" for rel, data in _files(root).items()]
    (root / "SHA256SUMS.txt").write_text("".join(lines))


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


@dataclass(frozen=True)
class Ptbxl:
    tree: dict[str, bytes]  # what the dataset root must hold (SHA256SUMS.txt included)
    zip: bytes
    tampered_zip: bytes  # one record's bytes changed after SHA256SUMS.txt was written


@dataclass(frozen=True)
class Georgia:
    tree: dict[str, bytes]
    tar_gz: bytes


@pytest.fixture(scope="session")
def ptbxl(tmp_path_factory: pytest.TempPathFactory) -> Ptbxl:
    root = tmp_path_factory.mktemp("ptbxl-src") / PTBXL_TOP
    write_tiny_ptbxl(root, n=4)
    (root / "LICENSE.txt").write_text("Creative Commons Attribution 4.0 International Public License\n")
    _write_sums(root)
    tree = _files(root)
    tampered = dict(tree)
    raw = bytearray(tampered[TAMPERED])
    raw[100] ^= 0xFF
    tampered[TAMPERED] = bytes(raw)
    return Ptbxl(tree=tree, zip=_zip({f"{PTBXL_TOP}/{k}": v for k, v in tree.items()}),
                 tampered_zip=_zip({f"{PTBXL_TOP}/{k}": v for k, v in tampered.items()}))


@pytest.fixture(scope="session")
def georgia(tmp_path_factory: pytest.TempPathFactory) -> Georgia:
    root = tmp_path_factory.mktemp("georgia-src") / "WFDB"
    rng = np.random.default_rng(1)
    for i in range(1, 5):
        signal = np.cumsum(rng.normal(0, 0.02, (12, 250)), axis=1)
        write_challenge_record(root, f"E{i:05d}", signal, 500, STANDARD_LEADS, dialect="2020",
                               comments=["Age: 60", "Sex: Male", "Dx: 426783006", "Rx: Unknown"])
    tree = _files(root)
    members = [_file_member(f"WFDB/{rel}", data) for rel, data in tree.items()]
    return Georgia(tree=tree, tar_gz=_tar_gz(members))


def _georgia_source(**checksums: str | None) -> Source:
    """The registry's ``g12ec`` entry with the tiny archive's checksum in place of the real one."""
    return replace(get_source("g12ec"), **checksums)


def _plain_source(archive: str, root: str | None, **kwargs: Any) -> Source:
    return Source(name="tiny", dataset="test", version="0", title="tiny test archive",
                  urls=(f"https://example.invalid/{archive}",), root=root, licence="-", citation="-", **kwargs)


def _names(dest: Path) -> set[str]:
    return {p.name for p in dest.iterdir()}


# --------------------------------------------------------------------------------------------------
# tests


def test_ptbxl_full_download_unpack_verify_and_receipt(server: tuple[ServerState, str], ptbxl: Ptbxl,
                                                       tmp_path: Path) -> None:
    state, base = server
    state.files[PTBXL_ZIP] = ptbxl.zip
    dest = tmp_path / "data"
    root = download_dataset("ptbxl", dest, base_url=base, progress=False)
    assert root == dest / "ptbxl-1.0.3"
    assert {k: v for k, v in _files(root).items() if k != RECEIPT_NAME} == ptbxl.tree
    receipt = read_receipt(root)
    assert receipt is not None
    assert (receipt["source"], receipt["version"], receipt["archive"]) == ("ptbxl", "1.0.3", PTBXL_ZIP)
    assert receipt["url"] == f"{base}/{PTBXL_ZIP}"
    assert receipt["archive_sha256"] == _sha256(ptbxl.zip)
    assert receipt["archive_bytes"] == len(ptbxl.zip)
    assert receipt["verified"] is True
    assert receipt["files_verified"] == len(ptbxl.tree) - 1  # every file but SHA256SUMS.txt itself
    assert receipt["unlisted_files"] == []
    assert read_version(root) == "1.0.3"
    assert read_header(root / "records100/00000/00001_lr.hea").n_sig == 12
    # the archive, its .part and its metadata are gone; only the tree and the lock file remain
    assert _names(dest) == {"ptbxl-1.0.3", ".ptbxl-1.0.3.lock"}
    assert [e["status"] for e in state.log] == [200]


def test_second_call_with_complete_receipt_downloads_nothing(server: tuple[ServerState, str], ptbxl: Ptbxl,
                                                             tmp_path: Path) -> None:
    state, base = server
    state.files[PTBXL_ZIP] = ptbxl.zip
    first = download_dataset("ptbxl", tmp_path, base_url=base, progress=False)
    requests = len(state.log)
    second = download_dataset("ptbxl", tmp_path, base_url=base, progress=False)
    assert second == first
    assert len(state.log) == requests == 1


def test_resume_after_dropped_connection(server: tuple[ServerState, str], ptbxl: Ptbxl, tmp_path: Path) -> None:
    state, base = server
    state.files[PTBXL_ZIP] = ptbxl.zip
    cut = len(ptbxl.zip) // 2
    state.drop_after = cut
    root = download_dataset("ptbxl", tmp_path, base_url=base, progress=False, keep_archive=True)
    assert [e["status"] for e in state.log] == [200, 206]
    assert state.log[1]["range"] == f"bytes={cut}-"
    assert state.log[1]["if_range"] == '"' + _sha256(ptbxl.zip)[:16] + '"'
    assert (tmp_path / PTBXL_ZIP).read_bytes() == ptbxl.zip
    assert read_receipt(root)["archive_sha256"] == _sha256(ptbxl.zip)  # type: ignore[index]


def test_server_ignoring_range_starts_over_and_ends_correct(server: tuple[ServerState, str], ptbxl: Ptbxl,
                                                            tmp_path: Path) -> None:
    state, base = server
    state.files[PTBXL_ZIP] = ptbxl.zip
    cut = len(ptbxl.zip) // 3
    state.drop_after = cut
    state.ignore_range = True
    root = download_dataset("ptbxl", tmp_path, base_url=base, progress=False, keep_archive=True)
    assert [e["status"] for e in state.log] == [200, 200]
    assert state.log[1]["range"] == f"bytes={cut}-"  # asked to resume, got the whole file again
    assert (tmp_path / PTBXL_ZIP).read_bytes() == ptbxl.zip
    assert {k: v for k, v in _files(root).items() if k != RECEIPT_NAME} == ptbxl.tree


def test_416_for_an_already_complete_partial_file(server: tuple[ServerState, str], ptbxl: Ptbxl,
                                                  tmp_path: Path) -> None:
    state, base = server
    state.files[PTBXL_ZIP] = ptbxl.zip
    (tmp_path / f"{PTBXL_ZIP}.part").write_bytes(ptbxl.zip)
    root = download_dataset("ptbxl", tmp_path, base_url=base, progress=False)
    assert [(e["range"], e["status"]) for e in state.log] == [(f"bytes={len(ptbxl.zip)}-", 416)]
    assert read_receipt(root)["archive_sha256"] == _sha256(ptbxl.zip)  # type: ignore[index]


def test_416_for_a_partial_file_longer_than_the_remote_one_starts_over(
        server: tuple[ServerState, str], ptbxl: Ptbxl, tmp_path: Path) -> None:
    state, base = server
    state.files[PTBXL_ZIP] = ptbxl.zip
    (tmp_path / f"{PTBXL_ZIP}.part").write_bytes(ptbxl.zip + b"stale bytes of another file")
    download_dataset("ptbxl", tmp_path, base_url=base, progress=False, keep_archive=True)
    assert [(e["range"] is not None, e["status"]) for e in state.log] == [(True, 416), (False, 200)]
    assert (tmp_path / PTBXL_ZIP).read_bytes() == ptbxl.zip


def test_georgia_tar_gz_with_published_md5(server: tuple[ServerState, str], georgia: Georgia,
                                           tmp_path: Path) -> None:
    state, base = server
    state.files[GEORGIA_TGZ] = georgia.tar_gz
    md5 = hashlib.md5(georgia.tar_gz).hexdigest()
    root = download_dataset(_georgia_source(md5=md5), tmp_path, base_url=base, progress=False)
    assert root == tmp_path / "g12ec-challenge-2020"
    assert {k: v for k, v in _files(root).items() if k != RECEIPT_NAME} == georgia.tree
    header = read_header(root / "E00001.hea")
    assert header.record_name == "E00001.mat" and header.n_sig == 12
    receipt = read_receipt(root)
    assert receipt is not None
    assert receipt["archive_md5"] == md5 and receipt["archive_sha256"] == _sha256(georgia.tar_gz)
    assert receipt["checks"] == ["archive md5 (published)"]
    assert receipt["files_verified"] == 0


def test_unpack_false_returns_the_verified_archive(server: tuple[ServerState, str], georgia: Georgia,
                                                   tmp_path: Path) -> None:
    state, base = server
    state.files[GEORGIA_TGZ] = georgia.tar_gz
    source = _georgia_source(md5=None, sha256=_sha256(georgia.tar_gz))
    archive = download_dataset(source, tmp_path, base_url=base, unpack=False, progress=False)
    assert archive == tmp_path / GEORGIA_TGZ and archive.read_bytes() == georgia.tar_gz
    assert not (tmp_path / source.target).exists()


@pytest.mark.parametrize("kind", ["sha256", "md5", "pinned"])
def test_checksum_mismatch_deletes_the_archive_and_unpacks_nothing(
        kind: str, server: tuple[ServerState, str], georgia: Georgia, tmp_path: Path) -> None:
    state, base = server
    corrupted = bytearray(georgia.tar_gz)
    corrupted[len(corrupted) // 2] ^= 0x01
    state.files[GEORGIA_TGZ] = bytes(corrupted)
    pinned = None
    if kind == "sha256":
        source, expected, actual = (_georgia_source(md5=None, sha256=_sha256(georgia.tar_gz)),
                                    _sha256(georgia.tar_gz), _sha256(corrupted))
    elif kind == "md5":
        expected, actual = hashlib.md5(georgia.tar_gz).hexdigest(), hashlib.md5(corrupted).hexdigest()
        source = _georgia_source(md5=expected)
    else:  # a source that publishes nothing, pinned by the caller
        source, pinned = _georgia_source(md5=None), _sha256(georgia.tar_gz)
        expected, actual = pinned, _sha256(corrupted)
    with pytest.raises(ChecksumError) as info:
        download_dataset(source, tmp_path, base_url=base, progress=False, sha256=pinned)
    message = str(info.value)
    assert GEORGIA_TGZ in message and expected in message and actual in message
    assert "The file was deleted" in message  # the user is told the partial download is gone
    assert _names(tmp_path) == {f".{source.target}.lock"}  # no archive, no .part, no tree, no work folder


def test_tampered_file_fails_sha256sums_naming_it(server: tuple[ServerState, str], ptbxl: Ptbxl,
                                                  tmp_path: Path) -> None:
    state, base = server
    state.files[PTBXL_ZIP] = ptbxl.tampered_zip
    with pytest.raises(ChecksumError) as info:
        download_dataset("ptbxl", tmp_path, base_url=base, progress=False, keep_archive=True)
    message = str(info.value)
    assert TAMPERED in message and "1 of" in message
    assert f"The archive {tmp_path / PTBXL_ZIP} was deleted and nothing was installed" in message
    assert _sha256(ptbxl.tree[TAMPERED]) in message
    assert "00001_lr.dat" not in message
    assert _names(tmp_path) == {".ptbxl-1.0.3.lock"}  # bad archive deleted, nothing installed


def test_no_verify_installs_unverified_and_a_verified_call_redoes_it(
        server: tuple[ServerState, str], ptbxl: Ptbxl, tmp_path: Path) -> None:
    state, base = server
    state.files[PTBXL_ZIP] = ptbxl.tampered_zip
    root = download_dataset("ptbxl", tmp_path, base_url=base, progress=False, verify=False)
    receipt = read_receipt(root)
    assert receipt is not None and receipt["verified"] is False and receipt["files_verified"] == 0
    with pytest.raises(ChecksumError, match=re.escape(TAMPERED)):
        download_dataset("ptbxl", tmp_path, base_url=base, progress=False)
    assert len(state.log) == 2  # the unverified receipt was not trusted


def _unsafe_archives() -> list[tuple[str, str, bytes, str]]:
    """(id, archive file name, bytes, the refused name) -- each starts with a good member."""
    good = _file_member("WFDB/E00001.hea", b"E00001 12 500 10\n")
    link_out = tarfile.TarInfo("WFDB/link")
    link_out.type, link_out.linkname = tarfile.SYMTYPE, "../../outside"
    link_abs = tarfile.TarInfo("WFDB/etc")
    link_abs.type, link_abs.linkname = tarfile.SYMTYPE, "/etc"
    hard_out = tarfile.TarInfo("WFDB/hard")
    hard_out.type, hard_out.linkname = tarfile.LNKTYPE, "../outside"
    return [
        ("tar-parent", "evil.tar.gz", _tar_gz([good, _file_member("../evil", b"x")]), "../evil"),
        ("tar-nested-parent", "evil.tar.gz", _tar_gz([good, _file_member("WFDB/../../evil", b"x")]),
         "WFDB/../../evil"),
        ("tar-symlink-out", "evil.tar.gz", _tar_gz([good, (link_out, None)]), "WFDB/link"),
        ("tar-symlink-absolute", "evil.tar.gz", _tar_gz([good, (link_abs, None)]), "WFDB/etc"),
        ("tar-hardlink-out", "evil.tar.gz", _tar_gz([good, (hard_out, None)]), "../outside"),
        ("zip-parent", "evil.zip", _zip({"WFDB/E00001.hea": b"ok", "WFDB/../../evil": b"x"}), "WFDB/../../evil"),
    ]


@pytest.mark.parametrize(("archive", "data", "refused"), [case[1:] for case in _unsafe_archives()],
                         ids=[case[0] for case in _unsafe_archives()])
def test_unsafe_members_are_refused(archive: str, data: bytes, refused: str, server: tuple[ServerState, str],
                                    tmp_path: Path) -> None:
    state, base = server
    state.files[archive] = data
    dest = tmp_path / "dest"
    source = _plain_source(archive, root="WFDB")
    with pytest.raises(UnsafeArchiveError) as info:
        download_dataset(source, dest, base_url=base, progress=False)
    assert repr(refused) in str(info.value) and archive in str(info.value)
    assert not (dest / "evil").exists() and not (tmp_path / "evil").exists()
    assert not (tmp_path / "outside").exists()
    assert _names(dest) == {".tiny-0.lock"}  # no tree, no half-unpacked work folder, archive deleted


def test_absolute_member_is_refused(server: tuple[ServerState, str], tmp_path: Path) -> None:
    state, base = server
    target = tmp_path / "abs-evil"
    state.files["abs.tar.gz"] = _tar_gz([_file_member("WFDB/ok", b"ok"), _file_member(str(target), b"x")])
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        download_dataset(_plain_source("abs.tar.gz", root="WFDB"), tmp_path / "dest", base_url=base,
                         progress=False)
    assert not target.exists()


def test_subdir_source_keeps_and_verifies_only_georgia(server: tuple[ServerState, str], georgia: Georgia,
                                                       tmp_path: Path) -> None:
    state, base = server
    project = tmp_path / "src" / "challenge-2020-1.0.2"
    for rel, data in georgia.tree.items():
        (project / "training/georgia/g1").mkdir(parents=True, exist_ok=True)
        (project / "training/georgia/g1" / rel).write_bytes(data)
        (project / "training/cpsc_2018/g1").mkdir(parents=True, exist_ok=True)
        (project / "training/cpsc_2018/g1" / rel.replace("E", "A")).write_bytes(data)
    _write_sums(project)
    state.files["challenge.zip"] = _zip({f"challenge-2020-1.0.2/{k}": v for k, v in _files(project).items()})
    source = _plain_source("challenge.zip", root="challenge-2020-1.0.2", subdir="training/georgia",
                           sums_file="SHA256SUMS.txt")
    root = download_dataset(source, tmp_path / "dest", base_url=base, progress=False)
    kept = {k: v for k, v in _files(root).items() if k not in (RECEIPT_NAME, "SHA256SUMS.txt")}
    assert kept == {f"g1/{rel}": data for rel, data in georgia.tree.items()}
    assert read_receipt(root)["files_verified"] == len(georgia.tree)  # type: ignore[index]
    assert verify_tree(root) == len(georgia.tree)
    (root / "g1/E00002.mat").write_bytes(b"changed on disk")
    with pytest.raises(ChecksumError, match=re.escape("g1/E00002.mat")):
        verify_tree(root)


def test_leftovers_of_an_interrupted_run_are_replaced(server: tuple[ServerState, str], ptbxl: Ptbxl,
                                                      tmp_path: Path) -> None:
    state, base = server
    state.files[PTBXL_ZIP] = ptbxl.zip
    work = tmp_path / ".ptbxl-1.0.3.unpack-dead"
    work.mkdir()
    (work / "half.dat").write_bytes(b"half")
    stale = tmp_path / "ptbxl-1.0.3"  # a tree without a receipt: never trusted
    stale.mkdir()
    (stale / "junk.txt").write_text("junk")
    root = download_dataset("ptbxl", tmp_path, base_url=base, progress=False)
    assert not (root / "junk.txt").exists() and (root / RECEIPT_NAME).is_file()
    assert _names(tmp_path) == {"ptbxl-1.0.3", ".ptbxl-1.0.3.lock"}


def test_http_404_names_the_url(server: tuple[ServerState, str], tmp_path: Path) -> None:
    _, base = server
    with pytest.raises(DownloadError) as info:
        download_dataset("ptbxl", tmp_path, base_url=base, progress=False)
    assert "404" in str(info.value) and f"{base}/{PTBXL_ZIP}" in str(info.value)
    assert _names(tmp_path) == {".ptbxl-1.0.3.lock"}


def test_unreachable_host_names_url_reason_and_mirror_hint(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the socket is closed
    base = f"http://127.0.0.1:{port}/mirror"
    with pytest.raises(DownloadError) as info:
        download_dataset("ptbxl", tmp_path, base_url=base, progress=False, retries=1, timeout=2)
    message = str(info.value)
    assert f"{base}/{PTBXL_ZIP}" in message and "--base-url" in message
    assert "refused" in message.lower() and "2 attempts" in message


def test_unknown_dataset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError) as info:
        download_dataset("mitbih", tmp_path)
    assert isinstance(info.value, ValueError)
    assert "'mitbih'" in str(info.value) and "ptbxl" in str(info.value) and "g12ec" in str(info.value)
    assert not any(tmp_path.iterdir())


def test_sources_are_validated() -> None:
    with pytest.raises(ValueError, match="root"):
        _plain_source("a.zip", root="../up")
    with pytest.raises(ValueError, match="sha256"):
        _plain_source("a.zip", root=None, sha256="abc")
    with pytest.raises(ValueError, match="md5"):
        _plain_source("a.zip", root=None, md5="Z" * 32)


def test_registry_entries_fit_their_archives() -> None:
    assert {"ptbxl", "g12ec"} <= set(SOURCES)
    assert len({s.target for s in SOURCES.values()}) == len(SOURCES)
    for source in SOURCES.values():
        assert all(url.startswith("https://") for url in source.urls), source.name
        assert source.archive.endswith((".zip", ".tar.gz")), source.name
        assert source.licence and source.citation, source.name
        if source.archive.endswith(".zip") and source.root is not None:
            assert source.archive == source.root + ".zip", source.name  # PhysioNet project zips
    ptb = get_source("ptbxl")
    assert (ptb.version, ptb.sums_file, ptb.sha256) == ("1.0.3", "SHA256SUMS.txt", None)
    assert get_source("g12ec").md5 == "4971a0562df4a7e2fd8f58e060927ff2"
    json.dumps({name: s.__dict__ for name, s in SOURCES.items()})  # plain data, printable by a CLI
