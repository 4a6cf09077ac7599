"""spkid.data.sources.fetch: download (http, file://, local, kaggle message), verify, extract,
detect the layout. HTTP tests use a server on 127.0.0.1 inside the test, nothing else."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import re
import stat
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

import spkid.data.sources.fetch as fetch_mod
from spkid.core.errors import DataError
from spkid.data.sources.fetch import archive_path, detect_layout, extract, fetch, locate_layout

PAYLOAD = np.random.default_rng(0).bytes(300_000)  # incompressible, so the archive is big


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


HW4_FILES = {"Dataset/mapping.json": b"{}", "Dataset/metadata.json": b"{}",
             "Dataset/uttr-1.pt": PAYLOAD}


@pytest.fixture
def archive_bytes(tmp_path) -> bytes:
    return make_zip(tmp_path / "build.zip", HW4_FILES).read_bytes()


# --- a local HTTP server ----------------------------------------------------------------

def _handler(state):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state.requests.append((self.path, self.headers.get("Range")))
            file = state.root / self.path.lstrip("/")
            if not file.is_file():
                self.send_error(404)
                return
            data = file.read_bytes()
            start, rng = 0, self.headers.get("Range")
            if rng and self.path not in state.ignore_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = state.cut_once.pop(self.path, None)  # drop the connection mid-body, once
            self.wfile.write(body if cut is None else body[:cut])

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def http(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod, "TIMEOUT_S", 5)
    root = tmp_path / "www"
    root.mkdir()
    state = SimpleNamespace(root=root, requests=[], ignore_range=set(), cut_once={})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- fetch over HTTP --------------------------------------------------------------------

def test_http_download_verify_extract_and_cache(http, tmp_path, archive_bytes):
    (http.root / "hw4.zip").write_bytes(archive_bytes)
    url, cache, dest = f"{http.url}/hw4.zip", tmp_path / "cache", tmp_path / "data"
    root = fetch(url, dest, sha256=sha(archive_bytes).upper(), cache_dir=cache, progress=False)
    assert root == dest / "Dataset"
    assert (root / "uttr-1.pt").read_bytes() == PAYLOAD
    assert archive_path(url, cache).read_bytes() == archive_bytes
    assert http.requests == [("/hw4.zip", None)]
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [archive_path(url, cache).name, archive_path(url, cache).name + ".json"])

    # Second run: no request, no re-extraction (a file we add survives).
    (root / "added").write_text("kept")
    again = fetch(url, dest, sha256=sha(archive_bytes), cache_dir=cache, progress=False)
    assert again == root and (root / "added").exists()
    assert len(http.requests) == 1


def test_resume_partial_download_with_range(http, tmp_path, archive_bytes):
    (http.root / "hw4.zip").write_bytes(archive_bytes)
    url, cache = f"{http.url}/hw4.zip", tmp_path / "cache"
    cache.mkdir()
    half = len(archive_bytes) // 2
    part = archive_path(url, cache).with_name(archive_path(url, cache).name + ".part")
    part.write_bytes(archive_bytes[:half])
    root = fetch(url, tmp_path / "data", sha256=sha(archive_bytes), cache_dir=cache, progress=True)
    assert http.requests == [("/hw4.zip", f"bytes={half}-")]
    assert archive_path(url, cache).read_bytes() == archive_bytes
    assert (root / "uttr-1.pt").read_bytes() == PAYLOAD and not part.exists()


def test_complete_part_is_not_downloaded_again(http, tmp_path, archive_bytes):
    # A run that stopped after the last byte arrived, before the file was renamed.
    (http.root / "hw4.zip").write_bytes(archive_bytes)
    url, cache = f"{http.url}/hw4.zip", tmp_path / "cache"
    cache.mkdir()
    part = archive_path(url, cache).with_name(archive_path(url, cache).name + ".part")
    part.write_bytes(archive_bytes)
    fetch(url, tmp_path / "data", sha256=sha(archive_bytes), cache_dir=cache, progress=False)
    assert http.requests == [("/hw4.zip", f"bytes={len(archive_bytes)}-")]  # answered 416
    assert archive_path(url, cache).read_bytes() == archive_bytes


def test_server_ignoring_range_restarts(http, tmp_path, archive_bytes):
    (http.root / "hw4.zip").write_bytes(archive_bytes)
    http.ignore_range.add("/hw4.zip")
    url, cache = f"{http.url}/hw4.zip", tmp_path / "cache"
    cache.mkdir()
    part = archive_path(url, cache).with_name(archive_path(url, cache).name + ".part")
    part.write_bytes(b"x" * 1000)  # would corrupt the result if appended to
    fetch(url, tmp_path / "data", sha256=sha(archive_bytes), cache_dir=cache, progress=False)
    assert http.requests == [("/hw4.zip", "bytes=1000-")]
    assert archive_path(url, cache).read_bytes() == archive_bytes


def test_interrupted_download_resumes_on_the_next_run(http, tmp_path, archive_bytes):
    (http.root / "hw4.zip").write_bytes(archive_bytes)
    http.cut_once["/hw4.zip"] = 100_000
    url, cache = f"{http.url}/hw4.zip", tmp_path / "cache"
    with pytest.raises(DataError, match=r"hw4.zip: download .* run again to resume"):
        fetch(url, tmp_path / "data", sha256=sha(archive_bytes), cache_dir=cache, progress=False)
    assert not (tmp_path / "data").exists()
    fetch(url, tmp_path / "data", sha256=sha(archive_bytes), cache_dir=cache, progress=False)
    assert http.requests == [("/hw4.zip", None), ("/hw4.zip", "bytes=100000-")]
    assert archive_path(url, cache).read_bytes() == archive_bytes


def test_multipart_archive_is_joined_in_order(http, tmp_path, archive_bytes):
    cuts = [0, 100_000, 200_000, len(archive_bytes)]
    names = ["hw4.zip.partaa", "hw4.zip.partab", "hw4.zip.partac"]
    for name, lo, hi in zip(names, cuts, cuts[1:]):
        (http.root / name).write_bytes(archive_bytes[lo:hi])
    urls = [f"{http.url}/{n}" for n in names]
    http.cut_once["/hw4.zip.partab"] = 30_000  # interrupted inside the second part
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="hw4.zip.partab: download"):
        fetch(urls, tmp_path / "data", sha256=sha(archive_bytes), cache_dir=cache, progress=False)
    root = fetch(urls, tmp_path / "data", sha256=sha(archive_bytes), cache_dir=cache, progress=False)
    assert http.requests == [("/hw4.zip.partaa", None), ("/hw4.zip.partab", None),
                             ("/hw4.zip.partab", "bytes=30000-"), ("/hw4.zip.partac", None)]
    assert archive_path(urls, cache).name.endswith("-hw4.zip")
    assert archive_path(urls, cache).read_bytes() == archive_bytes
    assert (root / "uttr-1.pt").read_bytes() == PAYLOAD


def test_http_error_names_the_url(http, tmp_path):
    with pytest.raises(DataError, match=r"/missing.zip: download failed: HTTP 404"):
        fetch(f"{http.url}/missing.zip", tmp_path / "d", sha256=None, cache_dir=tmp_path / "c",
              progress=False)


# --- fetch from local files -------------------------------------------------------------

def test_local_path_and_file_url_parts(tmp_path, archive_bytes):
    (tmp_path / "a.partaa").write_bytes(archive_bytes[:1234])
    (tmp_path / "a.partab").write_bytes(archive_bytes[1234:])
    urls = [str(tmp_path / "a.partaa"), (tmp_path / "a.partab").as_uri()]
    root = fetch(urls, tmp_path / "data", sha256=None, cache_dir=tmp_path / "cache", progress=False)
    assert root == tmp_path / "data" / "Dataset"
    assert archive_path(urls, tmp_path / "cache").read_bytes() == archive_bytes


def test_cache_without_checksum_uses_the_size_stamp(tmp_path, archive_bytes):
    src = tmp_path / "hw4.zip"
    src.write_bytes(archive_bytes)
    cache = tmp_path / "cache"
    fetch(str(src), tmp_path / "data", sha256=None, cache_dir=cache, progress=False)
    cached = archive_path(str(src), cache)
    stamp = json.loads(cached.with_name(cached.name + ".json").read_text())
    assert stamp["size"] == len(archive_bytes) and stamp["sha256"] == sha(archive_bytes)

    src.unlink()  # the source is gone: the cached copy must be used
    assert fetch(str(src), tmp_path / "data", sha256=None, cache_dir=cache,
                 progress=False) == tmp_path / "data" / "Dataset"

    cached.write_bytes(archive_bytes[:-10])  # a damaged cache entry is fetched again
    with pytest.raises(DataError, match="hw4.zip: file not found"):
        fetch(str(src), tmp_path / "data", sha256=None, cache_dir=cache, progress=False)


def test_checksum_mismatch_removes_the_file_and_extracts_nothing(tmp_path, archive_bytes):
    src = tmp_path / "hw4.zip"
    src.write_bytes(archive_bytes)
    cache, wrong = tmp_path / "cache", "0" * 64
    with pytest.raises(DataError, match=rf"hw4.zip: SHA-256 mismatch: expected {wrong}, "
                                        rf"got {sha(archive_bytes)}.*removed"):
        fetch(str(src), tmp_path / "data", sha256=wrong, cache_dir=cache, progress=False)
    assert not (tmp_path / "data").exists()
    assert list(cache.iterdir()) == []


def test_new_checksum_fetches_a_changed_source_again(tmp_path, archive_bytes):
    src = tmp_path / "hw4.zip"
    src.write_bytes(archive_bytes)
    cache = tmp_path / "cache"
    fetch(str(src), tmp_path / "data", sha256=sha(archive_bytes), cache_dir=cache, progress=False)
    newer = make_zip(tmp_path / "newer.zip", {"Dataset/mapping.json": b"{}",
                                             "Dataset/metadata.json": b"{}",
                                             "Dataset/new.pt": b"new"}).read_bytes()
    src.write_bytes(newer)
    root = fetch(str(src), tmp_path / "data", sha256=sha(newer), cache_dir=cache, progress=False)
    assert (root / "new.pt").exists() and not (root / "uttr-1.pt").exists()


@pytest.mark.parametrize("url,message", [
    ("ftp://example.org/x.zip", "ftp://example.org/x.zip: unsupported URL scheme 'ftp'"),
    ("file://otherhost/x.zip", "file://otherhost/x.zip: file:// URL names another host"),
])
def test_unsupported_urls(tmp_path, url, message):
    with pytest.raises(DataError, match=re.escape(message)):
        fetch(url, tmp_path / "d", sha256=None, cache_dir=tmp_path / "c", progress=False)


def test_malformed_sha256_param(tmp_path):
    with pytest.raises(DataError, match="data.sha256: 'abc' is not a SHA-256"):
        fetch(str(tmp_path / "x.zip"), tmp_path / "d", sha256="abc", cache_dir=tmp_path / "c")


# --- kaggle:// (never touches the network here) -----------------------------------------

def _fake_find_spec(has_kaggle: bool):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "kaggle":
            return object() if has_kaggle else None
        return real(name, *args, **kwargs)
    return find_spec


def test_kaggle_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec(False))
    with pytest.raises(DataError, match=r"kaggle://ml2022spring-hw4: the kaggle package is not "
                                        r"installed; pip install kaggle.*kaggle.json.*KAGGLE_KEY"):
        fetch("kaggle://ml2022spring-hw4", tmp_path / "d", sha256=None, cache_dir=tmp_path / "c",
              progress=False)


def test_kaggle_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec(True))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    with pytest.raises(DataError, match=r"kaggle://ml2022spring-hw4: no Kaggle credentials found;"
                                        r" pip install kaggle.*KAGGLE_USERNAME"):
        fetch("kaggle://ml2022spring-hw4", tmp_path / "d", sha256=None, cache_dir=tmp_path / "c",
              progress=False)


def test_kaggle_must_be_the_only_url(tmp_path):
    with pytest.raises(DataError, match="kaggle:// source must be the only URL"):
        fetch(["kaggle://a", "kaggle://b"], tmp_path / "d", sha256=None, cache_dir=tmp_path / "c")


# --- extract: good archives -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tgz-named-bin", "tar.xz"])
def test_extract_formats_by_content(tmp_path, kind):
    files = {"top/a.txt": b"a", "top/sub/b.bin": PAYLOAD[:1000]}
    if kind == "zip":
        archive = make_zip(tmp_path / "x.zip", files)
    else:
        mode = {"tar": "w", "tar.gz": "w:gz", "tgz-named-bin": "w:gz", "tar.xz": "w:xz"}[kind]
        archive = make_tar(tmp_path / ("x.bin" if kind == "tgz-named-bin" else f"x.{kind}"),
                           files, mode)
    root = extract(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "top"
    assert (root / "a.txt").read_bytes() == b"a" and (root / "sub" / "b.bin").read_bytes() == PAYLOAD[:1000]


def test_extract_without_single_top_folder_returns_dest(tmp_path):
    archive = make_zip(tmp_path / "x.zip", {"a/1.txt": b"1", "b/2.txt": b"2", "__MACOSX/a/._1.txt": b"junk"})
    assert extract(archive, tmp_path / "out") == tmp_path / "out"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "b"]  # no __MACOSX
    single_file = make_zip(tmp_path / "y.zip", {"only.txt": b"1"})
    assert extract(single_file, tmp_path / "out2") == tmp_path / "out2"


def test_extract_replaces_dest(tmp_path):
    (tmp_path / "out" / "stale").mkdir(parents=True)
    extract(make_zip(tmp_path / "x.zip", {"top/a.txt": b"a"}), tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["top"]


# --- extract: hostile and broken archives -----------------------------------------------

def _tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("top/ok.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"ok"))
        for m in members:
            tf.addfile(m, io.BytesIO(b"x" * m.size) if m.isreg() else None)
    return path


def _tarinfo(name: str, type_=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, linkname
    info.size = 1 if type_ == tarfile.REGTYPE else 0
    return info


def _zip_symlink(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("top/ok.txt", b"ok")
        info = zipfile.ZipInfo("top/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../outside")
    return path


HOSTILE = {
    "zip-dotdot": (lambda p: make_zip(p, {"top/ok.txt": b"ok", "top/../../evil.txt": b"x"}),
                   "member 'top/../../evil.txt' contains '..'"),
    "zip-absolute": (lambda p: make_zip(p, {"/tmp/evil.txt": b"x"}),
                     "member '/tmp/evil.txt' has an absolute path"),
    "zip-windows-absolute": (lambda p: make_zip(p, {"C:/evil.txt": b"x"}),
                             "member 'C:/evil.txt' has an absolute path"),
    "zip-symlink": (_zip_symlink, "member 'top/link' is a symbolic link"),
    "tar-dotdot": (lambda p: _tar_with(p, _tarinfo("../evil.txt")),
                   "member '../evil.txt' contains '..'"),
    "tar-absolute": (lambda p: _tar_with(p, _tarinfo("/tmp/evil.txt")),
                     "member '/tmp/evil.txt' has an absolute path"),
    "tar-symlink-out": (lambda p: _tar_with(p, _tarinfo("top/link", tarfile.SYMTYPE, "../../../etc")),
                        "member 'top/link' is a link to '../../../etc'"),
    "tar-symlink-in": (lambda p: _tar_with(p, _tarinfo("top/link", tarfile.SYMTYPE, "ok.txt")),
                       "member 'top/link' is a link"),
    "tar-hardlink": (lambda p: _tar_with(p, _tarinfo("top/hard", tarfile.LNKTYPE, "/etc/passwd")),
                     "member 'top/hard' is a link to '/etc/passwd'"),
    "tar-fifo": (lambda p: _tar_with(p, _tarinfo("top/fifo", tarfile.FIFOTYPE)),
                 "member 'top/fifo' is a device file or fifo"),
    "tar-chardev": (lambda p: _tar_with(p, _tarinfo("top/null", tarfile.CHRTYPE)),
                    "member 'top/null' is a device file or fifo"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_extract_refuses_hostile_members(tmp_path, case):
    build, message = HOSTILE[case]
    archive = build(tmp_path / "bad.archive")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "previous.txt").write_text("still here")
    with pytest.raises(DataError, match=re.escape(f"bad.archive: {message}")):
        extract(archive, tmp_path / "out")
    # nothing outside, the previous contents intact, no temporary folder left behind
    assert not (tmp_path / "evil.txt").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["previous.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.archive", "out"]


def test_fetch_refuses_a_hostile_archive_before_anything_lands(tmp_path):
    src = make_zip(tmp_path / "evil.zip", {"a.txt": b"a", "../escape.txt": b"x"})
    with pytest.raises(DataError, match=r"evil.zip: member '../escape.txt' contains '..'"):
        fetch(str(src), tmp_path / "sub" / "data", sha256=None, cache_dir=tmp_path / "cache",
              progress=False)
    assert not (tmp_path / "sub" / "data").exists() and not (tmp_path / "sub" / "escape.txt").exists()


def test_extract_broken_archives(tmp_path, archive_bytes):
    (tmp_path / "notes.zip").write_text("this is not an archive")
    with pytest.raises(DataError, match="notes.zip: not a zip or tar archive"):
        extract(tmp_path / "notes.zip", tmp_path / "o1")

    tgz = make_tar(tmp_path / "full.tar.gz", {"top/big.bin": PAYLOAD})
    (tmp_path / "cut.tar.gz").write_bytes(tgz.read_bytes()[:50_000])
    with pytest.raises(DataError, match="cut.tar.gz: corrupt or unreadable archive"):
        extract(tmp_path / "cut.tar.gz", tmp_path / "o2")

    damaged = bytearray(archive_bytes)
    at = archive_bytes.index(PAYLOAD[:64])
    damaged[at + 1000: at + 1010] = b"\0" * 10  # stored data no longer matches its CRC
    (tmp_path / "crc.zip").write_bytes(bytes(damaged))
    with pytest.raises(DataError, match="crc.zip: member 'Dataset/uttr-1.pt' is corrupt"):
        extract(tmp_path / "crc.zip", tmp_path / "o3")

    with pytest.raises(DataError, match="gone.zip: archive not found"):
        extract(tmp_path / "gone.zip", tmp_path / "o4")
    make_zip(tmp_path / "empty.zip", {})
    with pytest.raises(DataError, match="empty.zip: archive is empty"):
        extract(tmp_path / "empty.zip", tmp_path / "o5")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


# --- detect_layout ----------------------------------------------------------------------

def _audio(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(160, dtype=np.float32), 16000)


def test_detect_layout(tmp_path):
    hw4 = tmp_path / "hw4"
    hw4.mkdir()
    (hw4 / "mapping.json").write_text("{}")
    (hw4 / "metadata.json").write_text("{}")
    assert detect_layout(hw4) == "hw4"

    wrapped = tmp_path / "wrapped"
    (wrapped / "Dataset").mkdir(parents=True)
    for name in ("mapping.json", "metadata.json"):
        (wrapped / "Dataset" / name).write_text("{}")
    assert locate_layout(wrapped) == ("hw4", wrapped / "Dataset")

    speakers = tmp_path / "speakers"
    _audio(speakers / "s1" / "a.wav")
    _audio(speakers / "s2" / "chapter" / "b.FLAC")
    (speakers / ".git").mkdir()
    assert locate_layout(speakers) == ("audio_dir", speakers)

    libri = tmp_path / "LibriSpeech"  # LibriSpeech/dev-clean/<speaker>/<chapter>/*.flac
    _audio(libri / "dev-clean" / "103" / "1240" / "x.flac")
    _audio(libri / "dev-clean" / "1034" / "121119" / "y.flac")
    (libri / "README.TXT").write_text("readme")
    assert locate_layout(libri) == ("audio_dir", libri / "dev-clean")


def test_detect_layout_failures(tmp_path):
    with pytest.raises(DataError, match="nowhere: data folder not found"):
        detect_layout(tmp_path / "nowhere")
    (tmp_path / "junk" / "docs").mkdir(parents=True)
    (tmp_path / "junk" / "docs" / "a.txt").write_text("x")
    (tmp_path / "junk" / "mapping.json").write_text("{}")  # metadata.json missing
    with pytest.raises(DataError, match="junk: cannot tell the data layout"):
        detect_layout(tmp_path / "junk")
