"""spkid: a reproducible speaker-recognition training pipeline (the library).

Subpackages, each importing only those before it in this list (report and train/scoring
aside as noted), which tests/test_architecture.py checks:

    core      plumbing: errors, params, atomic writes, locks, seeding, device, ranks
    data      where utterances come from, the split and the segment index
    features  log-mels, the Parquet feature store and its incremental writer
    models    encoders, poolings, heads, model folders, the embedding loop
    report    pictures and the report page (core only)
    train     the training loop and everything a run carries    (not scoring, serve)
    scoring   metrics, trials, score normalisation, evaluation  (not train, serve)
    serve     an exported model: export, ONNX, embedding audio files

No CLI or path conventions inside: the `stages/` commands decide where things live.
`from spkid import SpeakerModel` is the API for using a trained model from Python
(spkid.serve.embedder), imported on first use.
"""

import importlib

__all__ = ["SpeakerModel"]


def __getattr__(name: str):
    # Lazily: every stage imports spkid, and the model API pulls in torch and friends. By
    # name, so that dvc.yaml's code deps (which follow import statements) do not make every
    # stage depend on the serving code.
    if name == "SpeakerModel":
        return importlib.import_module("spkid.serve.embedder").SpeakerModel
    raise AttributeError(f"module 'spkid' has no attribute {name!r}")
