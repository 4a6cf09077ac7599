"""Training and scoring under DDP, in processes of this machine talking over gloo: what
would go wrong if gradients, RNG states or shares were not handled per rank."""

import numpy as np
import torch
import torch.multiprocessing as mp

from spkid.core.params import validate_params
from spkid.models.folder import build_model
from spkid.scoring.embedding import Scoring
from spkid.train.loop import train
from spkid.train.validation import Validation
from test_training import N_MELS, toy_store, views_for

# A model without BatchNorm and without dropout: every rank then computes exactly the
# gradient of its half of the batch, and their mean is the gradient of the whole batch.
PARAMS = validate_params({
    "model": {"encoder": "transformer", "pooling": "sap", "d_model": 16, "layers": 1,
              "heads": 2, "ffn_dim": 32, "embedding_dim": 16, "input_norm": "none",
              "dropout": 0.0},
    "train": {"steps": 8, "batch_size": 4, "valid_every": 4, "warmup_steps": 2, "lr": 3e-3},
    "loss": {"name": "am_softmax", "s": 10.0},
})
CONFIG = {"model": PARAMS.model.to_dict(), "loss": PARAMS.loss.to_dict(), "n_mels": N_MELS,
          "speakers": ["a", "b", "c"], "features": {}}


def whole_batches(steps=8, size=8, frames=24, seed=3):
    """Batches of `size` crops: (x, mask, y), the same in every process."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        y = torch.randint(0, 3, (size,), generator=g)
        x = torch.randn(size, frames, N_MELS, generator=g) + 2.0 * torch.eye(N_MELS)[y][:, None, :]
        out.append((x, torch.ones(size, frames, dtype=torch.bool), y))
    return out


def fresh_model():
    torch.manual_seed(0)
    return build_model(CONFIG)


def no_validation():
    return Validation(None, {}, None, 1, 0)


def _train_rank(rank, world, init, out):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        half = [(x[rank::world], m[rank::world], y[rank::world]) for x, m, y in whole_batches()]
        model = fresh_model()
        train(model, half, no_validation(), PARAMS, device=torch.device("cpu"), rank=rank,
              world=world, progress=False)
        torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def spawn(fn, world, tmp_path, *args):
    mp.spawn(fn, args=(world, f"file://{tmp_path}/rendezvous", str(tmp_path), *args),
             nprocs=world, join=True)


def comparable(name: str, value: torch.Tensor) -> torch.Tensor:
    """Which entries must agree to float tolerance. A bias added before a softmax (the
    attention keys' third of in_proj_bias; the pooling's score bias) has a gradient of zero
    in exact arithmetic, which Adam's normalisation scales up from rounding noise."""
    keep = torch.ones_like(value, dtype=torch.bool)
    if name.endswith("self_attn.in_proj_bias"):
        d = len(value) // 3
        keep[d:2 * d] = False
    if name == "pooling.score.2.bias":
        keep[:] = False
    return keep


def test_two_ranks_of_batch_b_train_as_one_process_of_batch_2b(tmp_path):
    spawn(_train_rank, 2, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    model = fresh_model()
    train(model, whole_batches(), no_validation(), PARAMS, device=torch.device("cpu"),
          progress=False)
    single = model.state_dict()
    start = fresh_model().state_dict()
    for k, v in single.items():
        assert torch.equal(ranks[0][k], ranks[1][k]), k  # the replicas did not drift apart
        keep = comparable(k, v)
        torch.testing.assert_close(ranks[0][k][keep], v[keep], rtol=0, atol=1e-6, msg=k)
    # Training moved the weights: the comparison is not between two untouched models.
    assert any(not torch.allclose(single[k], start[k], atol=1e-3) for k in single)
    # Each rank alone on its half would not give the same weights: the gradients were shared.
    alone = fresh_model()
    train(alone, [(x[0::2], m[0::2], y[0::2]) for x, m, y in whole_batches()], no_validation(),
          PARAMS, device=torch.device("cpu"), progress=False)
    assert any(not torch.allclose(alone.state_dict()[k], single[k], atol=1e-4) for k in single)


def _score_rank(rank, world, init, out):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        store, labels = toy_store()
        model = fresh_model().eval()
        scoring = Scoring(model, CONFIG, torch.device("cpu"), store, rank, world)
        views = views_for(store, labels)
        scored = scoring.embed(views, 200, labels=labels)
        validation = Validation(store, views, np.asarray(labels), 200, 50)
        accuracy = validation.accuracy(model, torch.device("cpu"), rank, world)
        torch.save({"embeddings": torch.from_numpy(scored.embeddings),
                    "predicted": torch.from_numpy(scored.predicted),
                    "true_rank": torch.from_numpy(scored.true_rank), "accuracy": accuracy},
                   f"{out}/scored{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_embed_shares_and_every_rank_gets_what_one_process_computes(tmp_path):
    spawn(_score_rank, 2, tmp_path)
    store, labels = toy_store()
    model = fresh_model().eval()
    views = views_for(store, labels)
    one = Scoring(model, CONFIG, torch.device("cpu"), store).embed(views, 200, labels=labels)
    accuracy = Validation(store, views, np.asarray(labels), 200, 50).accuracy(
        model, torch.device("cpu"))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"scored{rank}.pt", weights_only=True)
        np.testing.assert_array_equal(got["embeddings"].numpy(), one.embeddings)
        np.testing.assert_array_equal(got["predicted"].numpy(), one.predicted)
        np.testing.assert_array_equal(got["true_rank"].numpy(), one.true_rank)
        assert got["accuracy"] == accuracy
