"""Training that starts from a trained model (`train.init_from`), to fine-tune it on new
data: a model folder (data/model, data/export/model: model.pt + model.json) or a training
checkpoint (data/checkpoints/last.pt). The encoder, pooling and embedding layer always
carry over; the head only where it classifies the same speakers in the same order (a new
data set's speakers need a new one). The weights mean something only for the features
and the architecture they were trained with: both must match this run's, key by key.
`train.freeze_steps` first trains the head alone on the frozen rest (`freeze_body`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from spkid.core.errors import DataError, ParamsError
from spkid.models.folder import (CONFIG, WEIGHTS, checkpoint_weights, load_torch, model_params,
                                 read_config)

PARAM = "train.init_from"
HEAD = "head."
# Shapes no weight and does nothing at test time: fine-tuning may change it.
FREE_MODEL_KEYS = ("dropout",)


def source_files(path: str | Path) -> list[Path]:
    """The files that hold the init model (what the checkpoint fingerprint hashes)."""
    path = Path(path)
    if path.is_dir():
        return [path / CONFIG, path / WEIGHTS]
    if path.is_file():
        return [path]
    raise ParamsError(f"{PARAM}: {path}: not found (a model folder such as data/model, or "
                      "a checkpoint such as data/checkpoints/last.pt)")


@dataclass(frozen=True)
class InitModel:
    path: Path
    config: dict  # model.json's: model, loss, n_mels, speakers, features
    weights: dict

    @classmethod
    def read(cls, path: str | Path) -> "InitModel":
        path = Path(path)
        files = source_files(path)
        if path.is_dir():
            try:
                config = read_config(files[0])
            except Exception as exc:  # a DataError naming the file; say which param led there
                raise ParamsError(f"{PARAM}: {exc}") from None
            return cls(path, config, _load(files[1]))
        snapshot = _load(path)
        weights = checkpoint_weights(snapshot)
        config = snapshot.get("config") if isinstance(snapshot, dict) else None
        if not isinstance(config, dict) and (path.parent / CONFIG).is_file():
            config = read_config(path.parent / CONFIG)  # the model.json training writes beside
        if not isinstance(config, dict):
            raise ParamsError(f"{PARAM}: {path} holds no model config and has no {CONFIG} "
                              "beside it (a checkpoint of an older spkid): give a model "
                              "folder such as data/model")
        return cls(path, config, weights)

    def check(self, config: dict) -> None:
        """Refuse, naming the first differing key, a model whose feature params or
        architecture differ from this run's `config` (spkid.models.folder.model_config)."""
        for section in ("features", "model"):
            theirs, ours = self.config.get(section) or {}, config[section]
            if section == "model":  # keys newer than their model.json at what they computed
                theirs, ours = model_params(self.config), model_params(config)
            for key in sorted(set(theirs) | set(ours)):
                if section == "model" and key in FREE_MODEL_KEYS:
                    continue
                if theirs.get(key) != ours.get(key):
                    raise ParamsError(
                        f"{PARAM}: {self.path} was trained with {section}.{key} = "
                        f"{theirs.get(key)!r} and this run has {ours.get(key)!r}: the feature "
                        "params and the model architecture must match")

    def load_into(self, model: torch.nn.Module, config: dict) -> str:
        """Copy the weights into `model` (built from `config`); what was carried over."""
        self.check(config)
        ours = model.state_dict()
        if not _fits(self.weights, ours, _body):
            raise ParamsError(f"{PARAM}: {self.path}: its weights do not fit the model its "
                              "config describes")
        head = (list(self.config.get("speakers", [])) == list(config["speakers"])
                and _fits(self.weights, ours, _head))
        model.load_state_dict({**ours, **{k: v for k, v in self.weights.items()
                                          if head or _body(k)}})
        return (f"initialised from {self.path}: encoder, pooling, embedding"
                + (" and head (same speakers)" if head else "; the head starts fresh "
                   f"({len(config['speakers'])} speakers here, other than its "
                   f"{len(self.config.get('speakers', []))})"))


def _load(path: Path):
    try:
        return load_torch(path)
    except DataError as exc:  # naming the file; say which param led there
        raise ParamsError(f"{PARAM}: {exc}") from None


def _head(key: str) -> bool:
    return key.startswith(HEAD)


def _body(key: str) -> bool:
    return not key.startswith(HEAD)


def _fits(saved: dict, wanted: dict, part) -> bool:
    """Whether `saved` holds the weights of `wanted` that are in `part`, in their shapes."""
    keys = {k for k in wanted if part(k)}
    return keys == {k for k in saved if part(k)} and all(
        tuple(saved[k].shape) == tuple(wanted[k].shape) for k in keys)


def freeze_body(model: torch.nn.Module, frozen: bool) -> None:
    """Everything but the head frozen (no gradients, and eval mode, so that batch-norm
    statistics and dropout leave it as it was) or trainable again."""
    for name, module in model.named_children():
        if name != "head":
            module.train(not frozen and model.training)
            module.requires_grad_(not frozen)
