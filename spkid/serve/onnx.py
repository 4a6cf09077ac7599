"""ONNX export of a speaker model's embedding, and ONNX Runtime inference with it.

The graph (`model.onnx` in an exported model folder, beside model.json):
    inputs   feats       (batch, frames, n_mels) float32 log-mels, zero- or garbage-padded
             lengths     (batch,) int64, real frames of each row
    output   embeddings  (batch, embedding_dim) float32
Batch and frames are dynamic axes. Padded frames never reach an embedding, exactly as in
PyTorch (lengths become the same mask), so a recording gets the same embedding whatever
it is batched with. When the model ships a training mean (evaluate.subtract_mean) the graph
subtracts it, as WeSpeaker's export does: its embeddings are the ones that are scored.

Exported with torch.onnx's TorchDynamo exporter (torch.export; the TorchScript one is
deprecated and bakes MultiheadAttention's shapes into constants), which needs `onnx` and
`onnxscript`; running it needs `onnxruntime`: `pip install -e '.[onnx]'`.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spkid.core.atomic import atomic_path
from spkid.core.errors import DataError
from spkid.core.install import onnx_missing

ONNX_FILE = "model.onnx"
OPSET = 18
INPUTS, OUTPUT = ("feats", "lengths"), "embeddings"


class EmbeddingGraph(nn.Module):
    """What is exported: (feats, lengths) -> embeddings, minus `mean` when given."""

    def __init__(self, net: nn.Module, mean: np.ndarray | None = None):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.as_tensor(
            np.zeros(net.embedding_dim, np.float32) if mean is None else mean, dtype=torch.float32))

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        frames = torch.arange(feats.shape[1], device=feats.device)
        mask = frames[None, :] < lengths[:, None]
        return self.net.embed(feats, mask) - self.mean


def export_onnx(net: nn.Module, path: str | Path, n_mels: int, mean: np.ndarray | None = None) -> None:
    """Write the embedding graph of `net` (a SpeakerNet) to `path`, atomically."""
    reason = onnx_missing()
    if reason:
        raise DataError(f"{path}: cannot export ONNX: {reason}")
    graph = EmbeddingGraph(copy.deepcopy(net).float().cpu().eval(), mean).eval()
    # A padded example, so the graph keeps every masking step (none depends on the data).
    g = torch.Generator().manual_seed(0)
    example = (torch.randn(2, 48, n_mels, generator=g), torch.tensor([48, 29]))
    batch, frames = torch.export.Dim("batch"), torch.export.Dim("frames")
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [log.level for log in quiet]
    try:
        for log in quiet:
            log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph, example, input_names=list(INPUTS), output_names=[OUTPUT],
                dynamic_shapes=({0: batch, 1: frames}, {0: batch}), opset_version=OPSET,
                dynamo=True, verbose=False)
        _strip_node_metadata(program.model.graph)
        with atomic_path(path) as tmp:
            program.save(str(tmp))
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


def _strip_node_metadata(graph) -> None:
    """Drop the exporter's per-node notes (Python stack traces with absolute source paths,
    FX node dumps), so the file's bytes do not depend on where spkid is installed."""
    for node in graph:
        node.metadata_props.clear()
        for attr in node.attributes.values():
            for sub in (attr.value if isinstance(attr.value, list) else [attr.value]):
                if hasattr(sub, "all_nodes"):  # an If/Loop body
                    _strip_node_metadata(sub)


class OnnxEmbedder:
    """An exported graph run by ONNX Runtime (CPU) behind the part of SpeakerNet that
    embedding code uses: embed(x, mask), embedding_dim, training, eval(), train()."""

    def __init__(self, path: str | Path, threads: int = 0):
        reason = onnx_missing()
        if reason:
            raise DataError(f"{path}: cannot run an ONNX model: {reason}")
        import onnxruntime as ort  # an optional extra (pip install -e '.[onnx]')
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own classes for unreadable graphs
            raise DataError(f"{path}: not a usable ONNX model ({str(exc).splitlines()[0]})") from None
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUTS):
            raise DataError(f"{path}: inputs {names} are not spkid's {list(INPUTS)}")
        self.embedding_dim = int(self.session.get_outputs()[0].shape[1])
        self.training = False

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        feats = x.detach().cpu().float().numpy()
        lengths = mask.sum(1).cpu().numpy().astype(np.int64)
        (emb,) = self.session.run([OUTPUT], {"feats": feats, "lengths": lengths})
        return torch.from_numpy(emb)

    def eval(self) -> "OnnxEmbedder":
        return self

    def train(self, mode: bool = True) -> "OnnxEmbedder":
        return self
