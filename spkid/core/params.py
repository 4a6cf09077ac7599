"""The params.yaml contract: every key, its type, its default and its allowed values.

`load_params` validates the whole file before any stage does work, so a typo or an
out-of-range value fails at start with one line naming the key and what is allowed.
Missing keys take their defaults, so tests and users may write partial files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

import yaml

from spkid.core.errors import ParamsError


@dataclass(frozen=True)
class Field:
    kind: str  # "int" | "float" | "str" | "bool" | "int_pair" | "float_pair" | "str_or_list"
    #            | "str_list" | "float_list" (choices, min and max apply to each item)
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    above: float | None = None  # strict lower bound
    nullable: bool = False


def _f(kind, default, help, **kw) -> Field:
    return Field(kind, default, help, **kw)


SCHEMA: dict[str, Any] = {
    "data": {
        "source": _f("str", "synthetic", "where utterances come from",
                     choices=("synthetic", "hw4", "audio_dir", "kaldi", "url")),
        "seed": _f("int", 0, "seed of the synthetic corpus", min=0),
        "path": _f("str", None, "folder read by hw4/audio_dir/kaldi (relative to the repo root)",
                   nullable=True),
        "url": _f("str_or_list", None, "URL (or list of part URLs, concatenated) for source url",
                  nullable=True),
        "sha256": _f("str", None, "expected SHA-256 of the downloaded archive", nullable=True),
        "layout": _f("str", "auto", "what a url archive holds",
                     choices=("auto", "hw4", "audio_dir")),
        "submit_dir": _f("str", None, "audio_dir/kaldi only: unlabelled audio for the submission",
                         nullable=True),
        "verify_dir": _f("str", None, "folder of unseen speakers for verification "
                         "(audio_dir-style or Kaldi)", nullable=True),
        "min_seconds": _f("float", 0.5, "shortest usable recording", min=0),
        "short": _f("str", "skip", "what to do with recordings under data.min_seconds",
                    choices=("skip", "pad")),
        "synthetic": {
            "speakers": _f("int", 40, "number of synthetic speakers", min=2),
            "utterances_per_speaker": _f("int", 20, "labelled utterances per speaker", min=3),
            "submit_per_speaker": _f("int", 2, "extra unlabelled utterances per speaker", min=0),
            "unseen_speakers": _f("int", 8, "more speakers, never trained on, scored as the "
                                  "unseen-speaker role (verify) when neither data.verify_dir "
                                  "nor evaluate.trials is given (0 = none)", min=0),
            "unseen_utterances_per_speaker": _f("int", 10, "utterances of each unseen speaker",
                                                min=2),
            "min_seconds": _f("float", 2.0, "shortest utterance (room for a syllable)", min=0.25),
            "max_seconds": _f("float", 6.0, "longest utterance", min=0.25, max=600),
            "snr_db": _f("float", 20.0, "background noise level (higher is cleaner)"),
            "spread": _f("float", 0.4, "how far apart speaker voices are (lower is harder)",
                         above=0),
        },
    },
    "features": {
        "sample_rate": _f("int", 16000, "audio is resampled to this rate (Hz)", min=1000),
        "n_mels": _f("int", 40, "mel bins", min=1, max=512),
        "n_fft": _f("int", 400, "FFT size / window length (samples)", min=16),
        "hop_length": _f("int", 160, "frame hop (samples)", min=1),
        "f_min": _f("float", 0.0, "lowest mel filter frequency (Hz)", min=0),
        "f_max": _f("float", None, "highest mel filter frequency (Hz); null = sample_rate/2",
                    nullable=True, above=0),
        "shard_size": _f("int", 512, "utterances per Parquet shard", min=1),
        "batch_size": _f("int", 1, "utterances per log-mel call (1 is fastest on CPU: batching "
                          "pads and thrashes caches)", min=1),
        "dtype": _f("str", "float32", "precision of the stored log-mels (float16 halves disk "
                    "and memory)", choices=("float32", "float16")),
        "vad": _f("bool", False, "keep only the speech of each recording (Silero VAD; needs the "
                  "vad extra: pip install -e '.[vad]'); model.json records it"),
        "workers": _f("int", 0, "parallel feature workers on this machine: processes over "
                      "blocks, threads within one (0 = one per CPU core)",
                      min=0),
    },
    "index": {
        "segment_len": _f("int", 64, "training segment length (frames)", min=8),
        "val_fraction": _f("float", 0.1, "share of each speaker's utterances for val", min=0, max=0.5),
        "test_fraction": _f("float", 0.1, "share of each speaker's utterances for test", min=0,
                            max=0.5),
        "seed": _f("int", 0, "seed of the split", min=0),
        "split_by": _f("str", "utterance", "split whole utterances, or cut recordings in time",
                       choices=("utterance", "time")),
        "trial_seconds": _f("float", 3.0, "split_by time: length of held-out pieces", above=0),
    },
    "model": {
        "encoder": _f("str", "ecapa_tdnn", "frame encoder",
                      choices=("transformer", "conformer", "ecapa_tdnn", "resnet34", "campplus")),
        "d_model": _f("int", 64, "encoder width", min=8),
        "layers": _f("int", 2, "encoder layers", min=1),
        "heads": _f("int", 4, "attention heads (d_model must divide by it)", min=1),
        "ffn_dim": _f("int", 128, "feed-forward width", min=8),
        "conv_kernel": _f("int", 15, "conformer depthwise kernel (odd)", min=3),
        "dropout": _f("float", 0.1, "dropout", min=0, max=0.9),
        "norm": _f("str", "pre", "transformer: layer norm before (pre) or after (post) each "
                   "sublayer", choices=("pre", "post")),
        "pooling": _f("str", "asp", "frames -> utterance vector",
                      choices=("mean", "sap", "asp", "tstp")),
        "attention_dim": _f("int", 64, "sap hidden size (0 = single linear score)", min=0),
        "embedding_dim": _f("int", 64, "speaker embedding size (0 = the pooled vector itself)",
                            min=0),
        "embedding_activation": _f("str", "none", "non-linearity after the embedding layer",
                                   choices=("none", "relu")),
        "channels": _f("int", 128, "ecapa_tdnn: channels of the SE-Res2Net blocks; campplus: "
                       "channels of the TDNN layer before the dense blocks", min=8),
        "base_width": _f("int", 8, "resnet34: channels of the first stage; campplus: channels "
                         "of the FCM front end", min=4),
        "growth_rate": _f("int", 32, "campplus: channels each dense layer adds", min=2),
        "time_stride": _f("int", 1, "resnet34: stride over time of stages 2-4 (1 = full time "
                          "resolution; 2 = WeSpeaker's, 8x fewer frames)", choices=(1, 2)),
        "input_norm": _f("str", "none", "per-utterance mean normalisation of log-mels",
                         choices=("cmn", "none")),
    },
    "loss": {
        "name": _f("str", "aam_softmax", "classification head and loss",
                   choices=("softmax", "am_softmax", "aam_softmax")),
        "s": _f("float", 30.0, "cosine logit scale", above=0),
        "m": _f("float", 0.2, "additive margin on the target class", min=0, max=1),
        "margin_warmup": _f("int_pair", None, "[start_step, end_step]: margin grows from 0 to "
                            "loss.m over these steps (null = full margin from the start)",
                            nullable=True),
    },
    "train": {
        "steps": _f("int", 1000, "optimizer steps", min=1),
        "batch_size": _f("int", 32, "segments per step", min=2, max=65536),
        "lr": _f("float", 2e-3, "peak learning rate (AdamW)", above=0),
        "weight_decay": _f("float", 0.01, "AdamW weight decay", min=0),
        "warmup_steps": _f("int", 100, "linear warmup steps, then cosine decay", min=0),
        "seed": _f("int", 0, "seed of init, batches and dropout", min=0),
        "device": _f("str", "auto", "auto uses CUDA when present", choices=("auto", "cpu", "cuda")),
        "num_workers": _f("int", 0, "batch-assembly worker processes", min=0),
        "valid_every": _f("int", 200, "validate every N steps (and at the end)", min=1),
        "valid_utterances": _f("int", 500, "val utterances scored at each validation, a seeded "
                               "subset (0 = all)", min=0),
        "valid_max_frames": _f("int", 300, "frames of each val utterance scored during training, "
                               "from its middle (0 = whole)", min=0),
        "clip_grad": _f("float", 5.0, "clip the gradient norm to this (0 = off)", min=0),
        "checkpoint_every": _f("int", 100, "save a resumable checkpoint every N steps", min=1),
        "average_last": _f("int", 0, "data/model is the average of the weights at the last N "
                           "validations (0 or 1 = the best single one); averages usually "
                           "generalise better to unseen speakers, and metrics/train.json "
                           "gives the val accuracy of both", min=0),
        "compile": _f("bool", False, "torch.compile the model (CUDA only; ignored on CPU)"),
        "precision": _f("str", "auto", "training arithmetic: auto = bf16 autocast on GPUs "
                        "that compute it natively, fp16 with loss scaling on older GPUs, "
                        "fp32 on CPU", choices=("auto", "fp32", "bf16", "fp16")),
        "lr_scaling": _f("str", "none", "learning rate under torchrun with N ranks (the batch "
                         "is N x train.batch_size): none keeps train.lr, linear multiplies it "
                         "by N, sqrt by the square root of N", choices=("none", "linear", "sqrt")),
        "shard_window": _f("int", 0, "crops come from this many feature shards at a time, a "
                           "window that moves on by one shard every train.window_steps steps, "
                           "so that reads stay mostly in the page cache when the features "
                           "are bigger than it (0 = from all shards)", min=0),
        "window_steps": _f("int", 25, "steps before the shard window moves on by one shard",
                           min=1),
        "init_from": _f("str", None, "a trained model to start from, to fine-tune it on this "
                        "data: a model folder (model.pt + model.json, e.g. data/model) or a "
                        "checkpoint (data/checkpoints/last.pt), relative to the repo root; its "
                        "head too when the speakers are the same (null = random init)",
                        nullable=True),
        "freeze_steps": _f("int", 0, "first steps that train the head alone, the rest of the "
                           "train.init_from model frozen", min=0),
        "finetune": {
            "steps": _f("int", 0, "large-margin fine-tuning steps after train.steps (0 = off); "
                        "data/model then comes from this phase's validations", min=0),
            "crop_frames": _f("int", 200, "fine-tuning crop length (frames; shorter views give "
                              "their whole length)", min=1),
            "margin": _f("float", 0.5, "fine-tuning margin (replaces loss.m)", min=0, max=1),
            "lr": _f("float", 1e-4, "fine-tuning learning rate, constant", above=0),
        },
        "augment": {
            "specaugment": _f("bool", False, "random time and frequency masks"),
            "time_masks": _f("int", 2, "time masks per segment", min=0),
            "time_mask_width": _f("int", 10, "widest time mask (frames)", min=1),
            "freq_masks": _f("int", 2, "frequency masks per segment", min=0),
            "freq_mask_width": _f("int", 5, "widest frequency mask (mel bins)", min=1),
            "mask_fill": _f("str", "zero", "what SpecAugment's bands hold: 0 (on raw log-mels "
                            "a level far below speech) or each bin's mean over the crop (the "
                            "level masks have after mean normalisation)", choices=("zero", "mean")),
            "noise_dir": _f("str", None, "folder of noise audio mixed into training segments",
                            nullable=True),
            "noise_prob": _f("float", 0.5, "share of segments that get noise", min=0, max=1),
            "snr_db": _f("float_pair", [5.0, 20.0], "[low, high] SNR range for added noise"),
            "speed": _f("float_list", [], "speed factors drawn on the fly with 1.0, each "
                        "equally likely; a crop at speed f trains the class <speaker>~sp<f> "
                        "(WeSpeaker: [0.9, 1.1]; [] = none)", min=0.5, max=2.0),
            "reverb": _f("float", 0.0, "share of crops put in a generated room", min=0, max=1),
            "rt60": _f("float_pair", [0.2, 0.8], "[low, high] reverberation time (s) of the "
                       "generated rooms", above=0, max=3.0),
            "babble": _f("float", 0.0, "share of crops mixed with babble of 3 to 7 other "
                         "speakers' crops of the batch (never one that also got a room)",
                         min=0, max=1),
            "babble_snr_db": _f("float_pair", [13.0, 20.0], "[low, high] SNR of babble"),
        },
    },
    "evaluate": {
        "seed": _f("int", 0, "seed of the different-speaker trial sample", min=0),
        "nontarget_ratio": _f("float", 4.0, "different-speaker trials per same-speaker trial",
                              above=0),
        "max_trials": _f("int", 200000, "cap on trials per role", min=2),
        "batch_frames": _f("int", 20000, "padded frames per evaluation batch", min=1),
        "trials": _f("str_or_list", None, "VoxCeleb- or Kaldi-style trial list (or a list "
                     "of them, e.g. VoxCeleb1-O, -E, -H) scored as unseen-speaker verification: "
                     "the first as verify, each further one as verify_<file name>",
                     nullable=True),
        "calibration_trials": _f("str", None, "trial list whose trials fit the calibration "
                                 "of scores to LLRs, measured on every evaluate.trials list "
                                 "(null = a share of the unseen speakers, "
                                 "evaluate.calibration_speakers)", nullable=True),
        "subtract_mean": _f("bool", False, "also score with the training-set mean embedding "
                            "subtracted (\"mean_sub\" in metrics/eval.json)"),
        "asnorm_top_n": _f("int", 0, "also score with adaptive s-norm against the training "
                           "speakers, from each side's top N cohort scores (\"asnorm\"; 0 = off; "
                           "WeSpeaker: 300 of 5994 speakers)", min=0),
        "cohort_per_speaker": _f("int", 20, "training utterances embedded per speaker for the "
                                 "mean and the AS-norm cohort, a seeded sample (0 = all)", min=0),
        "bootstrap_rounds": _f("int", 200, "bootstrap resamplings behind the 95 % intervals "
                               "of EER and minDCF (eer_ci95, ...; 0 = no intervals)", min=0),
        "calibration_speakers": _f("float", 0.5, "share of the unseen speakers (a seeded "
                                   "draw) whose trials fit the score calibration to LLRs; the "
                                   "others measure it (verify.calibration; 0 = none)",
                                   min=0, max=1),
        "calibration_quality": _f("str", "none", "quality measure the calibration also "
                                  "weighs (WeSpeaker's QMF): duration = log of the shorter "
                                  "and of the longer side's seconds", choices=("none", "duration")),
        "bootstrap_by": _f("str", "speakers", "what the bootstrap resamples: speakers (when "
                           "the trials' speakers are known; else trials) or trials",
                           choices=("speakers", "trials")),
    },
    "export": {
        "onnx": _f("bool", True, "also write data/export/model/model.onnx (needs the onnx "
                   "extra: pip install -e '.[onnx]')"),
    },
}


# Keys an earlier spkid had, and what replaces them.
MOVED = {
    "features.augment": "augmentation is done on the fly on training crops, with train.augment "
                        "(speed, reverb, rt60, babble, babble_snr_db; spkid recipe verification)",
}


def _check(path: str, field: Field, value: Any) -> Any:
    def fail(why: str) -> ParamsError:
        allowed = f" (allowed: {', '.join(map(str, field.choices))})" if field.choices else ""
        return ParamsError(f"params: {path} = {value!r}: {why}{allowed}")

    if value is None:
        if field.nullable:
            return None
        raise fail("must not be empty")
    kind = field.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise fail("must be true or false")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("must be a whole number")
    elif kind == "float":
        # YAML 1.1 reads "1e-3" as a string; DVC's -S writes it that way, so accept it.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise fail("must be a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("must be a number")
        value = float(value)
        if not math.isfinite(value):
            raise fail("must be finite")
    elif kind == "str":
        if not isinstance(value, str):
            raise fail("must be a string")
    elif kind == "str_or_list":
        if isinstance(value, str):
            value = [value]
        if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise fail("must be a string or a non-empty list of strings")
    elif kind in ("int_pair", "float_pair"):
        num = int if kind == "int_pair" else (int, float)
        if not (isinstance(value, list) and len(value) == 2
                and all(isinstance(v, num) and not isinstance(v, bool) for v in value)):
            raise fail("must be a list of two numbers [low, high]")
        if value[0] > value[1]:
            raise fail("low must not exceed high")
        _check_items(field, value, fail)
    elif kind == "str_list":
        if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise fail("must be a non-empty list of strings")
        if field.choices is not None and any(v not in field.choices for v in value):
            raise fail(f"unknown value {next(v for v in value if v not in field.choices)!r}")
        if len(set(value)) != len(value):
            raise fail("lists a value twice")
        return value
    elif kind == "float_list":
        if not (isinstance(value, list) and all(isinstance(v, (int, float))
                                                and not isinstance(v, bool) for v in value)):
            raise fail("must be a list of numbers")
        value = [float(v) for v in value]
        _check_items(field, value, fail)
        if len(set(value)) != len(value):
            raise fail("lists a value twice")
        return value
    if field.choices is not None and value not in field.choices:
        raise fail("unknown value")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if field.min is not None and value < field.min:
            raise fail(f"must be >= {field.min:g}")
        if field.above is not None and value <= field.above:
            raise fail(f"must be > {field.above:g}")
        if field.max is not None and value > field.max:
            raise fail(f"must be <= {field.max:g}")
    return value


def _check_items(field: Field, items: list, fail) -> None:
    """The bounds of a pair's or list's field, applied to each of its numbers."""
    bounds = [(field.above, "> ", lambda v, b: v > b), (field.min, ">= ", lambda v, b: v >= b),
              (field.max, "<= ", lambda v, b: v <= b)]
    bounds = [(b, text, ok) for b, text, ok in bounds if b is not None]
    if any(not math.isfinite(v) or not all(ok(v, b) for b, _, ok in bounds) for v in items):
        raise fail("each must be finite" + "".join(
            f"{' and' if k else ','} {text}{b:g}" for k, (b, text, _) in enumerate(bounds)))


def _validate(schema: dict, raw: Any, prefix: str) -> dict:
    where = prefix.rstrip(".") or "params file"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params: {where} must be a mapping of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        key = prefix + unknown[0]
        if key in MOVED:
            raise ParamsError(f"params: {key} is gone: {MOVED[key]}")
        raise ParamsError(f"params: unknown key {key} "
                          f"(allowed under {where}: {', '.join(schema)})")
    out = {}
    for key, spec in schema.items():
        path = prefix + key
        if isinstance(spec, dict):
            out[key] = _validate(spec, raw.get(key), path + ".")
        else:
            out[key] = _check(path, spec, raw.get(key, spec.default))
    return out


class Params:
    """Read-only attribute view of validated params: `p.loss.m`, `p.section("model")`."""

    def __init__(self, values: dict):
        object.__setattr__(self, "_values", MappingProxyType(values))

    def __getattr__(self, name: str) -> Any:
        try:
            value = self._values[name]
        except KeyError:
            raise AttributeError(name) from None
        return Params(value) if isinstance(value, (dict, MappingProxyType)) else value

    def __setattr__(self, name, value):
        raise AttributeError("params are read-only")

    def to_dict(self) -> dict:
        def plain(v):
            return {k: plain(x) for k, x in v.items()} if isinstance(v, (dict, MappingProxyType)) else v
        return plain(self._values)

    def __repr__(self) -> str:
        return f"Params({self.to_dict()!r})"


def _empty_mel_band(f: dict) -> int | None:
    """The first mel band (1-based) that no FFT bin falls inside, as torchaudio's htk
    filterbank (spkid.features.logmel) builds them; None when every band gets one. Such a band is
    a constant feature; when all are, the model learns from nothing."""
    import numpy as np  # only here: `spkid report` and `spkid recipe` start without it
    f_max = f["f_max"] or f["sample_rate"] / 2
    bins = np.linspace(0, f["sample_rate"] // 2, f["n_fft"] // 2 + 1)
    mel = np.linspace(*(2595.0 * np.log10(1.0 + np.array([f["f_min"], f_max]) / 700.0)),
                      f["n_mels"] + 2)
    edges = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    for band in range(f["n_mels"]):
        if not ((bins > edges[band]) & (bins < edges[band + 2])).any():
            return band + 1
    return None


_CROSS_CHECKS: list[tuple[str, Callable[[dict], bool], str]] = [
    ("data.synthetic.max_seconds", lambda p: p["data"]["synthetic"]["max_seconds"]
     >= p["data"]["synthetic"]["min_seconds"], "must be >= data.synthetic.min_seconds"),
    ("index.test_fraction", lambda p: p["index"]["val_fraction"] + p["index"]["test_fraction"] < 0.9,
     "index.val_fraction + index.test_fraction must stay under 0.9"),
    ("model.heads", lambda p: p["model"]["d_model"] % p["model"]["heads"] == 0,
     "model.d_model must be divisible by model.heads"),
    ("model.conv_kernel", lambda p: p["model"]["conv_kernel"] % 2 == 1, "must be odd"),
    ("features.n_fft", lambda p: p["features"]["n_fft"] >= p["features"]["hop_length"],
     "must be >= features.hop_length"),
    ("features.f_max", lambda p: (p["features"]["f_max"] or p["features"]["sample_rate"] / 2)
     <= p["features"]["sample_rate"] / 2
     and (p["features"]["f_max"] or p["features"]["sample_rate"] / 2) > p["features"]["f_min"],
     "must lie in (features.f_min, features.sample_rate / 2]"),
    ("features.n_mels", lambda p: _empty_mel_band(p["features"]) is None,
     "a mel band between features.f_min and f_max holds no FFT bin and would be a constant "
     "feature (fewer mels, a larger features.n_fft or a wider frequency range)"),
    ("data.path", lambda p: p["data"]["source"] not in ("hw4", "audio_dir", "kaldi")
     or bool(p["data"]["path"]), "is required when data.source is hw4, audio_dir or kaldi"),
    ("train.augment.speed", lambda p: 1.0 not in p["train"]["augment"]["speed"],
     "must not list 1.0 (the clean speed is always drawn too)"),
    ("train.augment.babble", lambda p: p["train"]["augment"]["reverb"]
     + p["train"]["augment"]["babble"] <= 1.0,
     "train.augment.reverb + train.augment.babble must not exceed 1 (a crop gets one or "
     "the other)"),
    ("train.freeze_steps", lambda p: p["train"]["freeze_steps"] == 0
     or p["train"]["init_from"] is not None,
     "needs train.init_from (a frozen random encoder learns nothing)"),
    ("evaluate.asnorm_top_n", lambda p: p["evaluate"]["asnorm_top_n"] != 1,
     "must be 0 (off) or >= 2 (a standard deviation needs two scores)"),
    ("data.url", lambda p: p["data"]["source"] != "url" or bool(p["data"]["url"]),
     "is required when data.source is url"),
    # The synthetic voices' formants reach ~4 kHz; above 48 kHz their filters lose accuracy.
    ("features.sample_rate", lambda p: p["data"]["source"] != "synthetic"
     or 8000 <= p["features"]["sample_rate"] <= 48000,
     "must lie in [8000, 48000] when data.source is synthetic"),
]


def validate_params(raw: Any) -> Params:
    values = _validate(SCHEMA, raw, "")
    for key, ok, why in _CROSS_CHECKS:
        if not ok(values):
            value = values
            for part in key.split("."):
                value = value[part]
            raise ParamsError(f"params: {key} = {value!r}: {why}")
    return Params(values)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    raw = _read_yaml(path)
    try:
        return validate_params(raw)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def _read_yaml(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ParamsError(f"params: file not found: {path}") from None
    except IsADirectoryError:
        raise ParamsError(f"{path}: is a folder, not a params file") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ParamsError(f"{path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                          "save the file as UTF-8") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:  # an empty file: every key takes its default
            return None
        _refuse_duplicate_keys(path, node, "", set())
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise ParamsError(f"params: {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    finally:
        loader.dispose()


def _refuse_duplicate_keys(path: Path, node: yaml.Node, prefix: str, seen_nodes: set) -> None:
    """YAML lets a repeated key silently replace the first one, so a second `train:`
    section would drop every key of the first: refuse it, naming both lines."""
    if id(node) in seen_nodes:  # an alias: checked where its anchor is
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple, int] = {}
        for key, value in node.value:
            name = prefix + (key.value if isinstance(key, yaml.ScalarNode) else "?")
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if (key.tag, key.value) in lines:
                    raise ParamsError(f"{path}: duplicate key {name!r} (lines "
                                      f"{lines[key.tag, key.value]} and {line})")
                lines[key.tag, key.value] = line
            _refuse_duplicate_keys(path, value, name + ".", seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(path, item, prefix, seen_nodes)


def defaults() -> dict:
    """The default params as a plain nested dict (what params.yaml ships)."""
    return _validate(SCHEMA, {}, "")


def iter_fields(schema: dict = SCHEMA, prefix: str = ""):
    """(dotted key, Field) for every leaf, in schema order: the params reference."""
    for key, spec in schema.items():
        if isinstance(spec, dict):
            yield from iter_fields(spec, prefix + key + ".")
        else:
            yield prefix + key, spec
