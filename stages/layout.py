"""Where each stage reads and writes, relative to the repository root (dvc.yaml agrees)."""

from pathlib import Path

STAGE_LOCK = Path("data/.spkid.lock")  # held while a stage runs (spkid.core.lock)
RAW = Path("data/raw")
MANIFEST = RAW / "manifest.parquet"
SOURCE_STAMP = RAW / "source.json"
UNSEEN_MANIFEST = RAW / "verify.parquet"  # verification audio (data.verify_dir / evaluate.trials)
HELD_OUT = RAW / "held_out.parquet"  # synthetic speakers held out of training (data.synthetic.unseen_speakers)
DOWNLOADS = Path("data/downloads")  # download cache, outside every DVC out
AUDIO_CHECKS = DOWNLOADS / "audio-checks.parquet"  # recordings checked to decode, by size+mtime
FEATURES = Path("data/features")
INDEX = Path("data/index")
VIEWS = INDEX / "utterances.parquet"
SEGMENTS = INDEX / "segments.parquet"
SPEAKERS = INDEX / "speakers.json"
MODEL = Path("data/model")
CHECKPOINTS = Path("data/checkpoints")  # resumable training state (not a DVC out)
SCORE_NORM = Path("data/score_norm")  # training mean and AS-norm cohort (evaluate -> export)
EXPORT = Path("data/export")
SUBMISSION = EXPORT / "submission.csv"
EXPORT_MODEL = EXPORT / "model"
METRICS = Path("metrics")
TRAIN_METRICS = METRICS / "train.json"
TRAIN_LIVE = METRICS / "train"  # dvclive folder: per-step curves for `dvc plots`
EVAL_METRICS = METRICS / "eval.json"
DET_DIR = METRICS / "det"  # one DET curve per role, for `dvc plots`
PLOTS = METRICS / "plots"  # PNG pictures of the run, declared as DVC plots
TRAINING_PLOT = PLOTS / "training.png"
CONFUSIONS = PLOTS / "confusions.json"
REPORT = METRICS / "report.html"  # everything above in one self-contained page
# The stage that writes each folder (what to run again when one is missing or stale).
PRODUCERS = {RAW: "download", FEATURES: "features", INDEX: "index", MODEL: "train",
             SCORE_NORM: "evaluate", EVAL_METRICS: "evaluate", EXPORT: "export"}
