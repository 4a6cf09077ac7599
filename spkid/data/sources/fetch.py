"""Get a dataset archive, check it, unpack it, and tell what it holds.

    fetch(urls, dest, sha256=..., cache_dir=...)   download (or copy) -> verify -> extract
    extract(archive, dest)                          safe, all-or-nothing unpacking
    detect_layout(folder)                           "hw4" | "audio_dir"

Sources: http(s):// (resumable), file://, plain local paths, and kaggle://<competition>
or kaggle://<owner>/<dataset> through the `kaggle` package. Several URLs are parts of one
archive, concatenated in order (the HW4 archive was published as .partaa, .partab, ...).

The archive is cached in `cache_dir` with a small JSON stamp, so a re-run neither
downloads nor unpacks again when nothing changed; a wrong checksum is caught before a
single member is written.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, url2pathname, urlopen

from tqdm import tqdm

from spkid.core.atomic import atomic_dir, write_json
from spkid.core.errors import DataError
from spkid.data.audio import AUDIO_SUFFIXES
from spkid.data.sources.hw4 import MAPPING, METADATA

CHUNK = 1 << 20
TIMEOUT_S = 60
USER_AGENT = "spkid (python urllib)"
EXTRACT_STAMP = ".spkid-fetch.json"
# Split-archive suffixes (`split` and 7-Zip style); stripped to name the joined archive.
PART_SUFFIX = re.compile(r"\.(part[a-z]{2,}|\d{3})$")


def fetch(urls: str | list[str], dest: str | Path, *, sha256: str | None,
          cache_dir: str | Path, progress: bool = True) -> Path:
    """Download `urls` (one archive, or its parts in order) into `cache_dir`, verify the
    SHA-256 when given, and unpack into `dest`. Returns the unpacked data folder (the
    archive's single top-level folder when it has one, else `dest`)."""
    urls = _url_list(urls)
    expected = _normalise_sha(sha256)
    archive = download(urls, cache_dir=cache_dir, sha256=expected, progress=progress)
    return _extract_once(archive, Path(dest))


def download(urls: str | list[str], *, cache_dir: str | Path, sha256: str | None = None,
             progress: bool = True) -> Path:
    """The archive file in `cache_dir`, fetched only when the cached copy is missing or
    does not match (checksum when given, else the size recorded at download time)."""
    urls = _url_list(urls)
    expected = _normalise_sha(sha256)
    archive = archive_path(urls, cache_dir)
    if _cached_ok(archive, urls, expected):
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(archive)
    if urls[0].startswith("kaggle://"):
        _kaggle_download(urls[0], part, progress)
    else:
        _download_parts(urls, part, progress)
    actual = _sha256_file(part, progress)
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        _state_path(part).unlink(missing_ok=True)
        raise DataError(f"{archive}: SHA-256 mismatch: expected {expected}, got {actual} "
                        f"(downloaded from {', '.join(urls)}); the file was removed")
    os.replace(part, archive)
    _write_stamp(archive, urls, actual)
    _state_path(part).unlink(missing_ok=True)
    return archive


def archive_path(urls: str | list[str], cache_dir: str | Path) -> Path:
    """Where the joined archive for `urls` lives in `cache_dir`. The name keeps the
    source's file name (readable) behind a hash of the URLs (two sources never share a
    cache entry). Its partial download is the same path plus `.part`."""
    urls = _url_list(urls)
    if urls[0].startswith("kaggle://"):
        name = urls[0][len("kaggle://"):].strip("/").replace("/", "_") + ".zip"
    else:
        name = PurePosixPath(urlparse(urls[0]).path if "://" in urls[0] else
                             Path(urls[0]).as_posix()).name
        if len(urls) > 1:
            name = PART_SUFFIX.sub("", name)
    digest = hashlib.sha256("\n".join(urls).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{digest}-{name or 'archive'}"


# --- cache -----------------------------------------------------------------------------

def _stamp_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".json")


def _part_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".part")


def _state_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _write_stamp(archive: Path, urls: list[str], digest: str) -> None:
    st = archive.stat()
    write_json(_stamp_path(archive), {"urls": urls, "size": st.st_size,
                                      "mtime_ns": st.st_mtime_ns, "sha256": digest})


def _read_json_or_none(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _cached_ok(archive: Path, urls: list[str], expected: str | None) -> bool:
    if not archive.is_file():
        return False
    stamp = _read_json_or_none(_stamp_path(archive)) or {}
    st = archive.stat()
    same_file = (stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns
                 and stamp.get("urls") == urls)
    if expected is None:
        return stamp.get("size") == st.st_size and stamp.get("urls") == urls
    # Hashing a multi-GB archive takes a while: trust the stamp when the file has not
    # been touched since we hashed it.
    if same_file and stamp.get("sha256") == expected:
        return True
    actual = _sha256_file(archive, progress=False)
    if actual == expected:
        _write_stamp(archive, urls, actual)
        return True
    # A cached archive that no longer matches (say, sha256 was updated for a new
    # release) is simply fetched again.
    archive.unlink()
    _stamp_path(archive).unlink(missing_ok=True)
    return False


def _sha256_file(path: Path, progress: bool) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, _bar(path.stat().st_size, 0, f"sha256 {path.name}",
                                     progress) as bar:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


# --- downloading -----------------------------------------------------------------------

def _download_parts(urls: list[str], part: Path, progress: bool) -> None:
    """Append each source to `part` in order. A state file records the sizes of the parts
    already complete, so an interrupted run resumes inside the part it stopped in."""
    state_file = _state_path(part)
    state = _read_json_or_none(state_file) or {}
    done = state.get("done", []) if state.get("urls") == urls else []
    have = part.stat().st_size if part.exists() else 0
    if have < sum(done):  # the .part was cut or replaced behind our back: start over
        done, have = [], 0
        part.unlink(missing_ok=True)
    for i, url in enumerate(urls):
        if i < len(done):
            continue
        label = f"part {i + 1}/{len(urls)}" if len(urls) > 1 else "download"
        scheme = urlparse(url).scheme.lower()
        if scheme in ("http", "https"):
            _http_part(url, part, sum(done), progress, label)
        elif scheme in ("", "file") or len(scheme) == 1:  # one letter: a C:\ path
            _copy_part(_local_path(url), part, sum(done), progress, label)
        else:
            raise DataError(f"{url}: unsupported URL scheme {scheme!r} (use http(s)://, "
                            "file://, kaggle:// or a local path)")
        done.append(part.stat().st_size - sum(done))
        write_json(state_file, {"urls": urls, "done": done})


def _local_path(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.scheme.lower() == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DataError(f"{url}: file:// URL names another host ({parsed.netloc})")
        return Path(url2pathname(parsed.path))
    return Path(url)


def _truncate(part: Path, size: int) -> None:
    with open(part, "a+b") as f:
        f.truncate(size)


def _copy_part(src: Path, part: Path, base: int, progress: bool, label: str) -> None:
    # A local copy is cheap enough to redo from the start of this part.
    if not src.is_file():
        raise DataError(f"{src}: file not found")
    _truncate(part, base)
    with open(src, "rb") as fin, open(part, "ab") as fout, \
            _bar(src.stat().st_size, 0, f"{label} {src.name}", progress) as bar:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))


def _http_part(url: str, part: Path, base: int, progress: bool, label: str) -> None:
    have = part.stat().st_size - base if part.exists() else 0
    resp, have = _open_http(url, have)
    if resp is None:  # the server says the bytes we hold are already the whole part
        return
    with resp:
        _truncate(part, base + have)
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        got = 0
        name = PurePosixPath(urlparse(url).path).name or url
        with open(part, "ab") as f, _bar(have + length if length is not None else None,
                                         have, f"{label} {name}", progress) as bar:
            try:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise DataError(f"{url}: download interrupted after {have + got} bytes "
                                f"({exc or type(exc).__name__}); run again to resume") from None
    if length is not None and got < length:
        raise DataError(f"{url}: download stopped after {have + got} of {have + length} "
                        "bytes; run again to resume")


def _open_http(url: str, have: int):
    """(response, offset it starts at): a Range request resumes after the `have` bytes we
    hold; a server that ignores Range sends everything (offset 0). (None, have) when the
    server says those bytes are already the whole file."""
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as exc:
        if exc.code == 416 and have:
            total = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and int(total) == have:
                return None, have
            return _open_http(url, 0)  # our partial bytes do not fit this file: restart
        raise DataError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from None
    except (URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"{url}: download failed ({reason})") from None
    if not have:
        return resp, 0
    if resp.status != 206:
        return resp, 0  # Range ignored: this is the whole file, start the part over
    start = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range") or "")
    if start is None or int(start.group(1)) != have:
        resp.close()
        return _open_http(url, 0)
    return resp, have


def _bar(total: int | None, initial: int, desc: str, progress: bool):
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, disable=not progress, leave=False)


# --- kaggle ----------------------------------------------------------------------------

KAGGLE_HELP = ("pip install kaggle, then create an API token on kaggle.com (Settings -> "
               "API) and save it as ~/.kaggle/kaggle.json or set KAGGLE_USERNAME and "
               "KAGGLE_KEY; also accept the competition rules on its Kaggle page")


def _kaggle_credentials() -> bool:
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle"
    return (Path(config_dir) / "kaggle.json").is_file()


def _kaggle_download(url: str, part: Path, progress: bool) -> None:
    slug = url[len("kaggle://"):].strip("/")
    if not slug:
        raise DataError(f"{url}: expected kaggle://<competition> or kaggle://<owner>/<dataset>")
    # Checked before importing: `import kaggle` itself authenticates and raises a
    # multi-line error when no credentials exist.
    if importlib.util.find_spec("kaggle") is None:
        raise DataError(f"{url}: the kaggle package is not installed; {KAGGLE_HELP}")
    if not _kaggle_credentials():
        raise DataError(f"{url}: no Kaggle credentials found; {KAGGLE_HELP}")
    with tempfile.TemporaryDirectory(dir=part.parent, prefix=".kaggle-") as tmp:
        try:
            # An optional package, and importing it authenticates (see above).
            from kaggle.api.kaggle_api_extended import KaggleApi
            api = KaggleApi()
            api.authenticate()
            if "/" in slug:
                api.dataset_download_files(slug, path=tmp, unzip=False, quiet=not progress)
            else:
                api.competition_download_files(slug, path=tmp, quiet=not progress)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{url}: Kaggle download failed ({first}); {KAGGLE_HELP}") from None
        files = [p for p in Path(tmp).iterdir() if p.is_file()]
        if len(files) != 1:
            raise DataError(f"{url}: Kaggle download produced {len(files)} files, expected "
                            "one archive")
        os.replace(files[0], part)


# --- extraction ------------------------------------------------------------------------

def extract(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a .zip / .tar / .tar.gz / .tgz / .tar.bz2 / .tar.xz (recognised by content)
    into `dest`, all or nothing: members are written to a temporary sibling folder that
    replaces `dest` only once everything is out. Links, device files, absolute paths and
    `..` are refused before anything lands outside `dest`. macOS `__MACOSX/` entries are
    skipped. Returns the archive's single top-level folder inside `dest`, if it has
    exactly one, else `dest`."""
    archive, dest = Path(archive), Path(dest)
    with atomic_dir(dest) as tmp:
        top = _extract_into(archive, tmp)
    return dest / top if top else dest


def _extract_once(archive: Path, dest: Path) -> Path:
    """extract(), skipped when `dest` already holds this very archive's contents."""
    st = archive.stat()
    key = {"archive": str(archive.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    stamp = _read_json_or_none(dest / EXTRACT_STAMP)
    if stamp and {k: stamp.get(k) for k in key} == key:
        root = dest / stamp.get("root", "")
        if root.is_dir():
            return root
    with atomic_dir(dest) as tmp:
        top = _extract_into(archive, tmp)
        write_json(tmp / EXTRACT_STAMP, {**key, "root": top or ""})
    return dest / top if top else dest


def _extract_into(archive: Path, out: Path) -> str | None:
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found")
    with open(archive, "rb") as f:
        magic = f.read(4)
    try:
        if magic in (b"PK\x03\x04", b"PK\x05\x06"):
            tops = _extract_zip(archive, out)
        elif tarfile.is_tarfile(archive):
            tops = _extract_tar(archive, out)
        else:
            raise DataError(f"{archive}: not a zip or tar archive (.zip, .tar, .tar.gz, .tgz)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error,
            lzma.LZMAError) as exc:
        raise DataError(f"{archive}: corrupt or unreadable archive "
                        f"({exc or type(exc).__name__})") from None
    if not tops:
        raise DataError(f"{archive}: archive is empty")
    names = list(tops)
    return names[0] if len(names) == 1 and tops[names[0]] else None


def _member_path(archive: Path, name: str) -> PurePosixPath | None:
    """The member's path inside the destination, or None for entries we skip. Refuses
    anything that could land outside it."""
    norm = name.replace("\\", "/")  # zips written on Windows may use backslashes
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise DataError(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{archive}: member {name!r} contains '..' (would extract outside "
                        "the destination)")
    if not parts or parts[0] == "__MACOSX":  # macOS resource forks are not data
        return None
    return PurePosixPath(*parts)


def _note_top(tops: dict[str, bool], rel: PurePosixPath, is_dir: bool) -> None:
    # tops: first path component -> whether it is a folder
    tops[rel.parts[0]] = tops.get(rel.parts[0], False) or is_dir or len(rel.parts) > 1


def _write_member(archive: Path, name: str, target: Path, src) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except OSError as exc:
        raise DataError(f"{archive}: cannot extract member {name!r} "
                        f"({exc.strerror or exc})") from None


def _extract_zip(archive: Path, out: Path) -> dict[str, bool]:
    tops: dict[str, bool] = {}
    with zipfile.ZipFile(archive) as zf:
        members = []
        # Check every member before writing any: a bad one at the end of a 7 GB archive
        # should not cost the time to unpack the rest.
        for info in zf.infolist():
            rel = _member_path(archive, info.filename)
            if rel is None:
                continue
            mode = info.external_attr >> 16  # unix mode, when a unix tool wrote the zip
            if stat.S_ISLNK(mode):
                raise DataError(f"{archive}: member {info.filename!r} is a symbolic link "
                                "(links are not extracted)")
            if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise DataError(f"{archive}: member {info.filename!r} is a device file or "
                                "fifo")
            members.append((info, rel))
            _note_top(tops, rel, info.is_dir())
        for info, rel in members:
            target = out.joinpath(*rel.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            try:
                src = zf.open(info)
            except (RuntimeError, NotImplementedError) as exc:  # encrypted / odd compression
                raise DataError(f"{archive}: cannot extract member {info.filename!r} "
                                f"({exc})") from None
            with src:
                try:
                    _write_member(archive, info.filename, target, src)
                except zipfile.BadZipFile as exc:
                    raise DataError(f"{archive}: member {info.filename!r} is corrupt "
                                    f"({exc})") from None
    return tops


def _extract_tar(archive: Path, out: Path) -> dict[str, bool]:
    # Stream mode reads a .tar.gz once (listing it first would decompress it twice).
    # Each member is checked before it is written; a bad one fails the whole extraction,
    # and the temporary folder with what came before it is removed.
    tops: dict[str, bool] = {}
    with tarfile.open(archive, "r|*") as tf:
        for member in tf:
            rel = _member_path(archive, member.name)
            if rel is None:
                continue
            if member.issym() or member.islnk():
                raise DataError(f"{archive}: member {member.name!r} is a link to "
                                f"{member.linkname!r} (links are not extracted)")
            if not (member.isreg() or member.isdir()):
                raise DataError(f"{archive}: member {member.name!r} is a device file or "
                                "fifo")
            _note_top(tops, rel, member.isdir())
            target = out.joinpath(*rel.parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            src = tf.extractfile(member)
            with src:
                _write_member(archive, member.name, target, src)
    return tops


# --- layout ----------------------------------------------------------------------------

def detect_layout(folder: str | Path) -> str:
    """"hw4" or "audio_dir": what `folder` (or its single subfolder) holds."""
    return locate_layout(folder)[0]


def locate_layout(folder: str | Path) -> tuple[str, Path]:
    """(layout, data folder): detect_layout plus the folder to scan, which is `folder`
    itself or its single subfolder (archives often wrap everything in one folder, e.g.
    LibriSpeech/dev-clean/<speaker>/...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found")
    subdirs = _visible_subdirs(folder)
    single = subdirs[0] if len(subdirs) == 1 else None
    for candidate in (folder, single):
        if candidate is not None and _is_hw4(candidate):
            return "hw4", candidate
    # Two speakers make a speaker folder; a single subfolder with speakers inside it is
    # a wrapper, not one speaker.
    if _count_speakers(folder, 2) >= 2:
        return "audio_dir", folder
    if single is not None and _count_speakers(single, 1) >= 1:
        return "audio_dir", single
    if _count_speakers(folder, 1) >= 1:
        return "audio_dir", folder
    raise DataError(f"{folder}: cannot tell the data layout: expected {MAPPING} + {METADATA} "
                    f"(hw4) or <speaker>/<audio files> subfolders (audio_dir), here or in "
                    "its single subfolder")


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_hw4(folder: Path) -> bool:
    return (folder / MAPPING).is_file() and (folder / METADATA).is_file()


def _count_speakers(folder: Path, enough: int) -> int:
    """Subfolders holding audio somewhere below, counted up to `enough`."""
    count = 0
    for sub in _visible_subdirs(folder):
        if _has_audio(sub):
            count += 1
            if count >= enough:
                break
    return count


def _has_audio(folder: Path) -> bool:
    for _, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not n.startswith(".") and n.lower().endswith(AUDIO_SUFFIXES)
               for n in filenames):
            return True
    return False


# --- small helpers ---------------------------------------------------------------------

def _url_list(urls: str | list[str]) -> list[str]:
    urls = [urls] if isinstance(urls, (str, Path)) else list(urls)
    urls = [str(u) for u in urls]
    if not urls or not all(urls):
        raise DataError("data.url: no URL given")
    if len(urls) > 1 and any(u.startswith("kaggle://") for u in urls):
        raise DataError("data.url: a kaggle:// source must be the only URL")
    return urls


def _normalise_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise DataError(f"data.sha256: {sha256!r} is not a SHA-256 (64 hex digits)")
    return value
