"""The train stage as users run it: killed with SIGKILL and resumed, and under torchrun."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

BIN = Path(sys.executable).parent
PARAMS = {
    "data": {"synthetic": {"speakers": 4, "utterances_per_speaker": 10, "submit_per_speaker": 1,
                           "min_seconds": 1.0, "max_seconds": 1.5}},
    "index": {"val_fraction": 0.2, "test_fraction": 0.2},
    # The default encoder (ECAPA-TDNN: BatchNorm statistics must resume too), small.
    "model": {"channels": 32, "embedding_dim": 32},
    "train": {"steps": 150, "batch_size": 16, "valid_every": 25, "warmup_steps": 10,
              "checkpoint_every": 10, "augment": {"specaugment": True},
              # Checkpoint averaging over all six validations: the state of step 25, kept
              # before the kill, must survive the resume.
              "average_last": 6},
    "loss": {"margin_warmup": [20, 80]},
}


def env():
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


def spkid(cwd, *args, check=True):
    out = subprocess.run([str(BIN / "spkid"), *args], cwd=cwd, env=env(), capture_output=True,
                         text=True, timeout=300)
    if check and out.returncode:
        raise AssertionError(f"spkid {' '.join(args)}: {out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    for stage in ("download", "features", "index"):
        spkid(root, stage)
    return root


def fresh_copy(prepared, dest):
    shutil.copytree(prepared, dest)
    return dest


def test_sigkill_then_resume_equals_uninterrupted_run(prepared, tmp_path):
    whole = fresh_copy(prepared, tmp_path / "whole")
    spkid(whole, "train")
    expected = json.loads((whole / "metrics/train.json").read_text())
    assert not (whole / "data/checkpoints/last.pt").exists()  # nothing left to resume
    assert not list((whole / "data/checkpoints").glob("val-*.pt"))
    assert (expected["averaged_checkpoints"], expected["averaged_from_step"]) == (6, 25)
    assert 0 <= expected["averaged_val_accuracy"] <= 1 and expected["best_step"] > 0

    killed = fresh_copy(prepared, tmp_path / "killed")
    proc = subprocess.Popen([str(BIN / "spkid"), "train"], cwd=killed, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = wait_for_checkpoint(proc, killed, 30)
    proc.send_signal(signal.SIGSTOP)  # paused, it still holds the lock
    # A second train in the same clone is refused, naming the first, and touches nothing.
    second = spkid(killed, "train", check=False)
    assert second.returncode == 2 and second.stderr.count("\n") == 1
    assert f"spkid train (pid {proc.pid}" in second.stderr and "locked" in second.stderr
    assert last.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(last, weights_only=True)["progress"]["step"]
    assert 30 <= step < 150
    assert (killed / "data/checkpoints/val-00000025.pt").exists()
    assert not (killed / "metrics/train.json").exists()

    out = spkid(killed, "train")  # SIGKILL left no stale lock
    assert f"resuming from step {step}" in out.stdout
    assert json.loads((killed / "metrics/train.json").read_text()) == expected
    # The curves too: every step once, the same numbers as the uninterrupted run's.
    curves = sorted(p.relative_to(whole) for p in (whole / "metrics/train").rglob("*.tsv"))
    assert curves and curves == sorted(p.relative_to(killed)
                                       for p in (killed / "metrics/train").rglob("*.tsv"))
    for c in curves:
        assert (killed / c).read_text() == (whole / c).read_text(), c
    a = torch.load(whole / "data/model/model.pt", weights_only=True)
    b = torch.load(killed / "data/model/model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def wait_for_checkpoint(proc, work, step, timeout=120):
    """The checkpoint of the training `proc` runs in `work`, once it holds `step` (or more);
    fails when training ends first."""
    last = work / "data/checkpoints/last.pt"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["progress"]["step"] >= step:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    return last


def start_and_kill_at(work, step):
    """`spkid train` killed with kill -9 once its checkpoint holds `step`; the checkpoint."""
    proc = subprocess.Popen([str(BIN / "spkid"), "train"], cwd=work, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = wait_for_checkpoint(proc, work, step)
    proc.kill()
    proc.wait()
    return last


def first_lines_of_train(work, count=2):
    """The first `count` lines `spkid train` prints (then it is stopped): what it decided."""
    proc = subprocess.Popen([str(BIN / "spkid"), "train"], cwd=work, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        return [proc.stdout.readline() for _ in range(count)]
    finally:
        proc.kill()
        proc.wait()


def test_a_checkpoint_of_other_features_starts_afresh_in_one_line(prepared, tmp_path):
    """kill -9, change a feature param, re-run features and index: train starts afresh with
    a note (n_mels used to die in load_state_dict; n_fft resumed silently; dtype and the
    rest: tests/test_training.py's fingerprint test)."""
    killed = fresh_copy(prepared, tmp_path / "killed")
    last = start_and_kill_at(killed, 10)
    for changed in ({"n_mels": 32}, {"n_fft": 512}):
        work = fresh_copy(killed, tmp_path / next(iter(changed)))
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["features"] = changed
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        spkid(work, "features")
        spkid(work, "index")
        lines = first_lines_of_train(work)
        assert lines[0] == (f"[train] {last.relative_to(killed)} is from other params or data: "
                            "starting afresh\n"), changed
        assert "Traceback" not in "".join(lines) and "resuming" not in "".join(lines)


def test_how_a_run_computes_does_not_discard_its_checkpoint(prepared, tmp_path):
    """train.num_workers, device, compile and checkpoint_every change how, not what: the
    checkpoint is resumed."""
    work = fresh_copy(prepared, tmp_path / "w")
    last = start_and_kill_at(work, 10)
    step = torch.load(last, weights_only=True)["progress"]["step"]
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"].update({"num_workers": 1, "device": "cpu", "compile": True,
                            "checkpoint_every": 7})
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert first_lines_of_train(work, 1) == [f"[train] resuming from step {step} of "
                                             f"{last.relative_to(work)}\n"]


def test_changed_params_do_not_resume(prepared, tmp_path):
    work = fresh_copy(prepared, tmp_path / "w")
    ckpt = work / "data/checkpoints"
    ckpt.mkdir(parents=True)
    torch.save({"fingerprint": "other", "progress": {"step": 5}}, ckpt / "last.pt")
    torch.save({}, ckpt / "best.pt")
    lines = first_lines_of_train(work)
    assert "starting afresh" in lines[0] and "resuming" not in "".join(lines)


def test_a_checkpoint_before_the_first_validation_resumes(tmp_path):
    from spkid.train.checkpoints import resumable
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    assert resumable(last, best, "f") == (None, "")
    torch.save({"fingerprint": "f", "progress": {"step": 100, "best_step": 0}}, last)
    snapshot, why = resumable(last, best, "f")
    assert snapshot["progress"]["step"] == 100 and why == ""
    snapshot, why = resumable(last, best, "g")
    assert snapshot is None and "other params or data" in why
    torch.save({"fingerprint": "f", "progress": {"step": 300, "best_step": 200}}, last)
    snapshot, why = resumable(last, best, "f")
    assert snapshot is None and f"{best} (the best model so far) is missing" in why
    last.write_text("garbage")
    assert "unreadable checkpoint" in resumable(last, best, "f")[1]


def test_trim_curves_drops_rows_after_the_checkpoint(tmp_path):
    from spkid.train.curves import trim_curves
    (tmp_path / "plots/val").mkdir(parents=True)
    curve = tmp_path / "plots/val/accuracy.tsv"
    curve.write_text("step\taccuracy\n25\t0.5\n50\t0.6\n75\t0.7\n")
    trim_curves(tmp_path, 50)
    assert curve.read_text() == "step\taccuracy\n25\t0.5\n50\t0.6\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cwd, *args, wait=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "stages.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    out = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def kill_job(proc) -> None:
    """kill -9 a torchrun job: the launcher and its workers (each in a session of its own)."""
    proc.send_signal(signal.SIGSTOP)  # the launcher must not react to its workers' deaths
    workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


DDP = {"steps": 40, "valid_every": 20, "checkpoint_every": 10, "average_last": 2}


def test_torchrun_two_ranks_resume_after_kill_and_score_as_one_process(prepared, tmp_path):
    """Two gloo ranks: killed with kill -9 at a checkpoint and resumed, training ends with
    the weights of an uninterrupted two-rank run (each rank restores its own RNG state:
    dropout and SpecAugment draw differently on each); a one-process run does not resume
    their checkpoint; evaluate and export under torchrun write what one process writes."""
    whole = fresh_copy(prepared, tmp_path / "whole")
    params = yaml.safe_load((whole / "params.yaml").read_text())
    params["train"].update(DDP)
    (whole / "params.yaml").write_text(yaml.safe_dump(params))
    killed = fresh_copy(whole, tmp_path / "killed")

    out = torchrun(whole, "train")
    total = sum(pq.read_table(whole / "data/index/segments.parquet")["windows"].to_pylist())
    counts = {}
    for rank in (0, 1):
        line = next(l for l in out.stdout.splitlines() if l.startswith(f"[train] rank {rank} of 2"))
        counts[rank] = int(line.split(": ")[1].split()[0])  # crop windows of this rank
    assert counts[0] + counts[1] == total and abs(counts[0] - counts[1]) <= 1
    assert out.stdout.count("[train] 40 steps") == 1  # only rank 0 reports and writes
    expected = json.loads((whole / "metrics/train.json").read_text())
    assert (expected["world_size"], expected["batch_per_rank"], expected["effective_batch"]) \
        == (2, 16, 32)

    job = torchrun(killed, "train", wait=False)
    last = wait_for_checkpoint(job, killed, 20, timeout=180)
    kill_job(job)
    snapshot = torch.load(last, weights_only=True)
    assert len(snapshot["rng"]) == 2 and not torch.equal(snapshot["rng"][0]["cpu"],
                                                         snapshot["rng"][1]["cpu"])
    step = snapshot["progress"]["step"]
    assert 20 <= step < 40

    alone = spkid(killed, "train", check=False)  # one process: refused, in one line
    assert alone.returncode == 2 and alone.stderr.count("\n") == 1, alone.stderr
    assert ("data/checkpoints/last.pt was written by a run of 2 ranks and this run has 1: "
            "run it with 2 ranks again") in alone.stderr
    assert torch.load(last, weights_only=True)["progress"]["step"] == step

    out = torchrun(killed, "train")
    assert f"resuming from step {step}" in out.stdout
    assert json.loads((killed / "metrics/train.json").read_text()) == expected
    a = torch.load(whole / "data/model/model.pt", weights_only=True)
    b = torch.load(killed / "data/model/model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    for stage in ("evaluate", "export"):
        spkid(whole, stage)
        torchrun(killed, stage)
    assert (json.loads((killed / "metrics/eval.json").read_text())
            == json.loads((whole / "metrics/eval.json").read_text()))
    report = json.loads((whole / "metrics/eval.json").read_text())
    assert report["test"]["eer"] is not None and report["val"]["target_trials"] > 0
    shipped = [json.loads((w / "data/export/model/model.json").read_text()) for w in (whole, killed)]
    assert shipped[0] == shipped[1] and shipped[0]["eer_threshold"] is not None
    assert ((killed / "data/export/submission.csv").read_text()
            == (whole / "data/export/submission.csv").read_text())


def test_an_empty_test_role_is_reported_not_a_traceback(tmp_path):
    """index.test_fraction 0 is allowed: evaluate reports the empty role with null metrics."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "data": PARAMS["data"], "index": {"val_fraction": 0.2, "test_fraction": 0.0},
        "model": {"channels": 16, "embedding_dim": 16},
        "train": {"steps": 6, "batch_size": 8, "valid_every": 3, "warmup_steps": 2}}))
    for stage in ("download", "features", "index", "train"):
        spkid(tmp_path, stage)
    out = spkid(tmp_path, "evaluate").stdout
    assert "test: top1 n/a, EER n/a" in out
    test = json.loads((tmp_path / "metrics/eval.json").read_text())["test"]
    assert test["utterances"] == 0 and test["accuracy_top1"] is None and test["eer"] is None


def test_every_param_at_its_edge_runs_the_whole_pipeline(tmp_path):
    """The smallest allowed values together: two speakers of three utterances, no val split
    (the last model is kept), 8-frame crops, batches of 2, one step, one-utterance shards,
    one-frame evaluation batches, two trials at most, AS-norm over both speakers, checkpoint
    averaging of two validations. Each stage finishes and says what it could not measure."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "data": {"synthetic": {"speakers": 2, "utterances_per_speaker": 3, "submit_per_speaker": 1,
                               "min_seconds": 0.5, "max_seconds": 0.6}},
        "features": {"shard_size": 1, "n_mels": 8},
        "index": {"val_fraction": 0.0, "test_fraction": 0.5, "segment_len": 8},
        "model": {"channels": 8, "embedding_dim": 0, "attention_dim": 0, "dropout": 0.9},
        "loss": {"m": 1.0},
        "train": {"steps": 2, "batch_size": 2, "valid_every": 1, "warmup_steps": 0,
                  "checkpoint_every": 1, "valid_utterances": 0, "valid_max_frames": 0,
                  "clip_grad": 0.0, "average_last": 2},
        "evaluate": {"max_trials": 2, "nontarget_ratio": 0.001, "batch_frames": 1,
                     "subtract_mean": True, "asnorm_top_n": 2},
        "export": {"onnx": False}}))
    for stage in ("download", "features", "index", "train", "evaluate", "export", "report"):
        out = spkid(tmp_path, stage)
        assert f"[{stage}]" in out.stdout, out.stderr
    train = json.loads((tmp_path / "metrics/train.json").read_text())
    assert train["steps"] == 2 and train["best_step"] == 2  # no val split: the last model
    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert report["val"]["utterances"] == 0 and report["val"]["eer"] is None
    assert report["test"]["utterances"] == 4 and report["test"]["trials"] <= 2
    assert (tmp_path / "metrics/report.html").stat().st_size > 10_000
    assert len((tmp_path / "data/export/submission.csv").read_text().splitlines()) == 3


def test_a_damaged_shard_ends_index_and_train_in_one_line_losing_nothing(prepared, tmp_path):
    work = fresh_copy(prepared, tmp_path / "damaged")
    for earlier in ("data/model/model.pt", "data/model/model.json", "metrics/train.json"):
        (work / earlier).parent.mkdir(parents=True, exist_ok=True)  # a model trained before
        (work / earlier).write_text(f"{earlier} of an earlier run")
    kept = {p: p.read_bytes() for folder in ("data/index", "data/model", "metrics")
            for p in (work / folder).rglob("*") if p.is_file()}
    assert len([p for p in kept if "data/index" in str(p)]) == 3
    shard = sorted((work / "data/features").glob("shard-*.parquet"))[-1]
    os.truncate(shard, shard.stat().st_size // 2)  # a damaged copy of the features
    for stage in ("index", "train"):
        out = spkid(work, stage, check=False)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.startswith(f"spkid: error: {shard.relative_to(work)}: damaged feature "
                                     "shard"), out.stderr
        assert out.stderr.rstrip().endswith("(run `spkid features` or `dvc repro`)")
    assert {p: p.read_bytes() for p in kept} == kept  # nothing already written is lost
    spkid(work, "features")  # which writes the damaged block again
    spkid(work, "index")


def test_an_absurd_batch_size_is_refused_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"batch_size": 1_000_000_000}}))
    out = spkid(tmp_path, "train", check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "train.batch_size = 1000000000: must be <= 65536" in out.stderr
