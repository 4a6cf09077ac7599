"""A model directory: `model.pt` (a plain state_dict, loadable with weights_only=True) and
`model.json` (everything needed to rebuild the network and reproduce its input features)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from spkid.core.atomic import atomic_path, write_json
from spkid.core.errors import DataError, StaleInputError
from spkid.core.params import Params, defaults
from spkid.models.speaker_net import SpeakerNet

WEIGHTS, CONFIG = "model.pt", "model.json"


def model_config(p, n_mels: int, speakers: list[str], features: dict) -> dict:
    return {"model": p.model.to_dict(), "loss": p.loss.to_dict(), "n_mels": n_mels,
            "speakers": list(speakers), "features": features}


def model_params(config: dict) -> dict:
    """config["model"] with the keys a model.json of an older spkid lacks at their defaults,
    which keep what those models computed (e.g. model.time_stride 1: full time resolution)."""
    return {**defaults()["model"], **config["model"]}


def build_model(config: dict) -> SpeakerNet:
    return SpeakerNet(Params(model_params(config)), Params(config["loss"]), config["n_mels"],
                      len(config["speakers"]))


def save_torch(path: str | Path, obj) -> None:
    """torch.save, atomically and byte-reproducibly: torch names the archive inside the file
    after the file it writes to, so save to memory rather than to a random temporary name."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def save_weights(folder: str | Path, state_dict: dict) -> None:
    save_torch(Path(folder) / WEIGHTS, state_dict)


def save_model_dir(folder: str | Path, state_dict: dict | None, config: dict) -> None:
    if state_dict is not None:
        save_weights(folder, state_dict)
    write_json(Path(folder) / CONFIG, config)


def read_config(path: str | Path) -> dict:
    """A model folder's model.json; a missing or broken one is a DataError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StaleInputError(f"{path}: not found", path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None


def load_torch(path: str | Path):
    """What a .pt file holds, loaded with weights_only=True (it may come from a stranger);
    a missing or unreadable file is a DataError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot load weights ({str(exc).splitlines()[0]})") from None


def checkpoint_weights(saved) -> dict:
    """The weights in what load_torch read: a state dict (model.pt, best.pt) as it is, a
    resumable snapshot's (last.pt) "model" entry (no parameter is named "model")."""
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        return saved["model"]
    return saved


def load_model_dir(folder: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, config). Weights are loaded with weights_only=True: a model
    directory may come from a stranger."""
    folder = Path(folder)
    return load_weights(folder / WEIGHTS, folder / CONFIG, device)


def load_weights(weights: str | Path, config_path: str | Path,
                 device: str | torch.device = "cpu"):
    """(model in eval mode, config) from a weights file and the model.json describing it:
    a model folder's model.pt, or a training checkpoint (a state dict such as best.pt, or
    a resumable snapshot such as last.pt, whose "model" entry holds the weights)."""
    weights, config_path = Path(weights), Path(config_path)
    config = read_config(config_path)
    state = checkpoint_weights(load_torch(weights))
    model = build_model(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise DataError(f"{weights}: does not match {config_path} "
                        f"({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), config
