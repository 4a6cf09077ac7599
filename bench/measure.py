"""Measuring a stage as a user runs it: wall time, peak anonymous memory of its spkid
processes, disk. Shared by the scale benchmarks (hw4_scale.py, vox_scale.py)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import yaml

from bench.pipeline import copy_project, git
from spkid.core.recipes import apply, parse_override


class PeakMemory:
    """Polls /proc for the spkid processes under a PID: the peak of their summed anonymous
    resident memory (RssAnon + RssShmem) and of their VmRSS; with `folder`, also the peak
    of the bytes of the files below it (polled every `disk_every` s)."""

    def __init__(self, pid: int, interval: float = 0.1, folder: Path | None = None,
                 disk_every: float = 2.0):
        self.pid, self.interval = pid, interval
        self.folder, self.disk_every, self._disk_at = folder, disk_every, 0.0
        self.anon = self.rss = self.disk = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(d.name))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            anon = rss = 0
            for p in self._descendants():
                try:
                    if b"spkid" not in Path(f"/proc/{p}/cmdline").read_bytes():
                        continue
                    status = Path(f"/proc/{p}/status").read_text().splitlines()
                except OSError:
                    continue
                kb = {line.split(":")[0]: int(line.split()[1]) for line in status
                      if line.startswith(("RssAnon", "RssShmem", "VmRSS"))}
                anon += kb.get("RssAnon", 0) + kb.get("RssShmem", 0)
                rss += kb.get("VmRSS", 0)
            self.anon, self.rss = max(self.anon, anon * 1024), max(self.rss, rss * 1024)
            if self.folder is not None and time.monotonic() - self._disk_at > self.disk_every:
                self.disk = max(self.disk, file_bytes(self.folder))
                self._disk_at = time.monotonic()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def disk(repo: Path) -> dict[str, int]:
    def du(*paths: str) -> int:
        existing = [p for p in paths if (repo / p).exists()]
        if not existing:
            return 0
        out = subprocess.run(["du", "-s", "-B1", "-c", *existing], cwd=repo,
                             capture_output=True, text=True, check=True).stdout
        return int(out.strip().splitlines()[-1].split()[0])
    return {"data": du("data"), "cache": du(".dvc/cache"), "both": du("data", ".dvc/cache")}


def file_bytes(folder: Path) -> int:
    """Apparent size of the files below `folder` (0 while it does not exist)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:  # renamed or removed while we looked
                pass
    return total


def measured_stage(repo: Path, env: dict, stage: str, cmd: list[str] | None = None,
                   watch: Path | None = None, kill_after: float | None = None) -> dict:
    """Run `cmd` (default: `dvc repro --single-item STAGE`) in `repo` and return its wall
    time, peaks (anonymous memory; disk of `watch`), disk after, and the stage's summary
    line. With `kill_after`, SIGKILL the whole process group after that many seconds (a
    power cut), and return what had happened by then (status -9)."""
    cmd = cmd or ["dvc", "repro", "--single-item", stage]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    peak = PeakMemory(proc.pid, folder=watch)
    try:
        out, _ = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    peak.stop()
    wall = time.perf_counter() - started
    if proc.returncode != 0 and kill_after is None:
        print(out[-4000:], file=sys.stderr)
        raise SystemExit(f"{stage} failed with status {proc.returncode}")
    summary = next((line.split("\r")[-1] for line in out.splitlines()
                    if line.split("\r")[-1].startswith(f"[{stage}]")), "")
    used = disk(repo)
    row = {"stage": stage, "wall_s": round(wall, 1), "status": proc.returncode,
           "peak_anon": peak.anon, "peak_rss": peak.rss, "peak_watched": peak.disk,
           **{f"disk_{k}": v for k, v in used.items()}, "summary": summary}
    print(f"{stage:<9} {wall:7.1f} s  anon {peak.anon / 2**30:5.2f} GiB  "
          f"rss {peak.rss / 2**30:5.2f} GiB  data {used['data'] / 2**30:5.2f} GiB  "
          f"cache {used['cache'] / 2**30:5.2f} GiB  both {used['both'] / 2**30:5.2f} GiB"
          + (f"  peak {watch.name} {peak.disk / 2**30:5.2f} GiB" if watch else "")
          + (f"  (killed, status {proc.returncode})" if kill_after is not None else "")
          + f"\n          {summary}", flush=True)
    return row


def make_and_run_parsers(doc: str, make_help: str) -> tuple:
    """The `make FOLDER` / `run FOLDER [--set K=V] [--workdir DIR]` command line of the
    scale benchmarks: (parser, make subparser, run subparser) for each to add its own."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help=make_help)
    mk.add_argument("folder", type=Path)
    rn = sub.add_parser("run", help="run the pipeline on it, stage by stage")
    rn.add_argument("folder", type=Path)
    rn.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    rn.add_argument("--workdir", type=Path, help="parent folder of the temporary repository")
    return ap, mk, rn


@contextlib.contextmanager
def scratch_repo(project: Path, settings: dict, overrides: list[str], workdir: Path | None,
                 prefix: str, keep: bool = False) -> Iterator[tuple[Path, dict]]:
    """A temporary git repository holding `project`'s pipeline with its params.yaml
    changed by `settings` then `overrides` (KEY=VALUE), committed; yields (repo, env) with
    `project`'s code first on PYTHONPATH; removed afterwards unless `keep`."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(project)}
    repo = Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
    try:
        git(["init", "-q", "-b", "main"], repo, env)
        copy_project(repo, project)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params = apply(apply(params, settings), dict(parse_override(item) for item in overrides))
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        git(["add", "-A"], repo, env)
        git(["commit", "-q", "-m", "bench"], repo, env)
        print(f"repository {repo}; code {project}; {os.cpu_count()} CPUs", flush=True)
        yield repo, env
    finally:
        if keep:
            print(f"kept {repo}")
        else:
            shutil.rmtree(repo, ignore_errors=True)
