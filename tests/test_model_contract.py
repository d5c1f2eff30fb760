"""The model contract (``core.models.base.Recommender``, issue 22): every model class of the
repository, built small, has a ``kind`` and ``model_args`` that rebuild it, a training loss
over a batch that carries its side inputs (user vectors, source histories), and full-ranking
scores whose columns equal its candidate scores."""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from core.models.base import Recommender

REPO = Path(__file__).resolve().parent.parent
N_ITEMS = 12
SEQ = dict(maxlen=7, hidden_units=8, num_blocks=1, num_heads=2, dropout_rate=0.1)
ROWS = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8], [0, 0, 0, 0, 9]])
NEXT = torch.tensor([[0, 0, 2, 3, 4], [5, 6, 7, 8, 10], [0, 0, 0, 0, 11]])
CANDIDATES = torch.tensor([[1, 5, 9, 12], [2, 3, 4, 11], [12, 1, 2, 3]])


def _jitter(model: nn.Module) -> nn.Module:
    """Nudge every weight (zero-initialised bridges included) so side inputs change the scores."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


# --------------------------------------------------------------------------- the models, small
# each case: (model, scoring inputs, side inputs by their batch names, training batch without them,
# candidate items per scored row)
def _sequential(kind):
    from core.models import build_model

    torch.manual_seed(0)
    return _jitter(build_model(kind, n_items=N_ITEMS, **SEQ)), ROWS, {}, {"input": ROWS, "target": NEXT}, CANDIDATES


def _cross_domain(bridge):
    from cross_domain.model import CrossDomainSASRec

    torch.manual_seed(0)
    extra = {} if bridge is None else dict(source_dim=6, bridge=bridge, bridge_hidden=8, meta_hidden=8, n_source_items=9)
    model = _jitter(CrossDomainSASRec(N_ITEMS, **extra, **SEQ))
    inputs = model.with_bos(ROWS)
    side = {} if bridge is None else {"source": torch.randn(3, 6, generator=torch.Generator().manual_seed(1))}
    if bridge == "ptupcdr":
        side["source_history"] = torch.tensor([[0, 1, 2], [3, 4, 9], [0, 0, 0]])
    # [BOS, i1 .. in] predicts [i1 .. in, next]
    return model, inputs, side, {"input": inputs, "target": torch.cat([ROWS, NEXT[:, -1:]], 1)}, CANDIDATES


def _trigrec_rec():
    from recommendation_model.model import TriGRecRecommender

    torch.manual_seed(0)
    model = _jitter(TriGRecRecommender(N_ITEMS, spe_dim=4, cross_dim=5, memory_tokens=2, **SEQ))
    gen = torch.Generator().manual_seed(1)
    side = {"spe": torch.randn(3, 4, generator=gen), "cross": torch.randn(3, 5, generator=gen)}
    held = (ROWS % 3 == 0) & (ROWS > 0)  # one masked item per row
    return model, ROWS, side, {"input": ROWS.masked_fill(held, model.mask_token), "target": ROWS * held}, CANDIDATES


def _trigrec_rep():
    from user_representation_module.model import TriGRecRep

    torch.manual_seed(0)
    model = _jitter(TriGRecRep(N_ITEMS, disc_hidden=8, **SEQ))
    view = {"input": ROWS.masked_fill(ROWS % 2 == 1, model.mask_token), "target": ROWS * (ROWS % 2 == 1)}
    return model, ROWS, {"part": "spe_A"}, {"A": view, "B": view, "cross": view, "users": torch.tensor([1, 2, 3])}, \
        CANDIDATES


def _universal_setup(scorer):
    from core.config import load_config
    from universal.config import UniversalConfig
    from universal.data import validate
    from universal.evaluate import TRAIN, temporal_holdout
    from universal.features import build_tables, fit_schema

    raw = {"user_data": [{"user_id": u, "categorical": {"job": j}, "temporal": {"liked": liked}}
                         for u, j, liked in (("a", "chef", [1, 2]), ("b", "pilot", []), ("c", "poet", [3]))],
           "item_data": [{"item_id": i, "continuous": {"price": float(i)}, "categorical": {"tags": t}}
                         for i, t in ((1, "x"), (2, ["x", "y"]), (3, "z"), (4, "y"))],
           "interactions": [{"user_id": u, "item_id": i, "timestamp": t}
                            for t, (u, i) in enumerate((("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 2), ("c", 1),
                                                        ("c", 3), ("c", 4)))]}
    data = validate(raw, Path("contract.json"))
    cfg = load_config(UniversalConfig, None, f"device=cpu,embedding_dim=8,scorer={scorer},classifier_hidden_dims=[8]")
    train = temporal_holdout(data, 0.5) == TRAIN
    schema = fit_schema(data, train, cfg, {}, log=lambda *a, **k: None)
    schema.pop("notes")
    kw = dict(item_index=data.items.lookup, text_cache=None, source=data.source)
    tables = {"user": build_tables(schema["user"], data.users, cfg, **kw), "item": build_tables(schema["item"], data.items, cfg, **kw)}
    tables["user"]["_id"] = torch.arange(data.n_users + 1)
    tables["item"]["_id"] = torch.arange(data.n_items + 1)
    return data, cfg, schema, tables, train


def _universal(scorer):
    from universal.model import UniversalModel
    from universal.pipeline import TrainRows

    data, cfg, schema, tables, train = _universal_setup(scorer)
    torch.manual_seed(0)
    model = _jitter(UniversalModel(schema, cfg, data.n_users, data.n_items, 0))
    users = {k: v[torch.tensor([1, 2, 3])] for k, v in tables["user"].items()}
    rows = TrainRows(data.user_idx[train], data.item_idx[train], tables, data.n_items, cfg, "cpu")
    batch = rows.get_batch(torch.arange(len(rows)), torch.Generator().manual_seed(0))
    return model, users, {"items": tables["item"]}, batch, torch.tensor([[1, 2, 4], [3, 4, 1], [2, 3, 1]])


def _mf():
    from universal.baselines import MatrixFactorization

    torch.manual_seed(0)
    model = _jitter(MatrixFactorization(3, 4, dim=4))
    batch = {"user": torch.tensor([1, 2]), "pos": torch.tensor([3, 4]), "neg": torch.tensor([[1, 2], [1, 3]])}
    return model, torch.tensor([1, 2, 3]), {}, batch, torch.tensor([[1, 2, 4], [3, 4, 1], [2, 3, 1]])


CASES = {
    "sasrec": lambda: _sequential("sasrec"),
    "bert4rec": lambda: _sequential("bert4rec"),
    "bsarec": lambda: _sequential("bsarec"),
    "cross-domain-sasrec": lambda: _cross_domain(None),
    "cross-domain-sasrec/mlp": lambda: _cross_domain("mlp"),
    "cross-domain-sasrec/ptupcdr": lambda: _cross_domain("ptupcdr"),
    "trigrec-rec": _trigrec_rec,
    "trigrec-rep": _trigrec_rep,
    "universal": lambda: _universal("dot"),
    "universal/classifier": lambda: _universal("classifier"),
    "universal-mf": _mf,
}


def _loss(value) -> torch.Tensor:
    return value["loss"] if isinstance(value, dict) else value


# --------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("case", list(CASES))
def test_each_model_satisfies_the_contract(case):
    model, inputs, side, batch, cand = CASES[case]()
    assert isinstance(model, Recommender)
    assert isinstance(model.kind, str) and model.kind == type(model).kind and isinstance(model.model_args, dict)
    with torch.no_grad():
        full = model.full_scores(inputs, **side)
        assert full.shape[0] == len(cand) and torch.isinf(full[:, 0]).all()  # column 0 is never an item
        # the candidates' scores are the full ranking's columns
        scores = model.candidate_scores(inputs, cand, **side)
        assert scores.shape == cand.shape
        assert torch.allclose(scores, full.gather(1, cand), atol=1e-5), (scores, full.gather(1, cand))
        # rebuilt from its constructor arguments, with the weights: the same scores
        clone = type(model)(**model.model_args)
        clone.load_state_dict(model.state_dict())
        assert torch.equal(clone.eval().full_scores(inputs, **side), full)
        # the training loss reads everything, side inputs included, from the batch
        loss = _loss(model.training_loss({**batch, **side}, torch.Generator().manual_seed(3)))
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("case", ["cross-domain-sasrec/mlp", "cross-domain-sasrec/ptupcdr", "trigrec-rec"])
def test_side_inputs_travel_in_the_batch(case):
    """User vectors and source histories are batch entries: the loss reads them from there, and
    gives what the keyword route (the recipes' closures) gives; other users' vectors change it."""
    model, inputs, side, batch, _ = CASES[case]()
    other = {k: v.flip(0) for k, v in side.items()}  # each user gets another user's side inputs
    with torch.no_grad():
        def loss(b, **kw):
            return float(_loss(model.training_loss(b, torch.Generator().manual_seed(3), **kw)))

        in_batch = loss({**batch, **side})
        assert in_batch == loss(batch, **side)
        assert in_batch != pytest.approx(loss({**batch, **other}), abs=1e-7)
        assert not torch.allclose(model.full_scores(inputs, **side), model.full_scores(inputs, **other))


def test_every_model_class_is_covered():
    """A model class (an ``nn.Module`` with a ``kind``) in a model module joins this test."""
    covered = {case.split("/")[0] for case in CASES}
    parts = {"domain-discriminator"}  # TriGRec stage 1's discriminator: a part of TriGRecRep, never scored alone
    files = [*sorted((REPO / "core" / "models").glob("*.py")), *sorted(REPO.glob("*/model.py")), REPO / "universal" / "baselines.py"]
    found = {}
    for f in files:
        name = ".".join(f.relative_to(REPO).with_suffix("").parts)
        mod = importlib.import_module(name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, nn.Module) and isinstance(getattr(cls, "kind", None), str):
                found[cls.kind] = cls
    found.pop("base", None)  # SequentialRecommender: the base class, never built
    missing = set(found) - covered - parts
    assert not missing, f"model classes outside the contract test: {sorted(missing)}"


def test_trigrec_training_rows_carry_the_user_vectors():
    """``UserVectorRows``: stage-2 batches hold each row's user vectors, so the default loss of
    ``core.train.fit`` trains TriGRec as the recipe's closure over the vector tables does."""
    from core.data.batches import ClozeDataset
    from core.data.sequences import SequenceData
    from core.data.splits import leave_one_out
    from recommendation_model.data import HoldoutClozeDataset, UserVectorRows
    from recommendation_model.model import TriGRecRecommender

    data = SequenceData.from_lists([[1, 2, 3, 4, 5], [2, 3, 4], [5, 4, 3, 2]], 5, list("xyz"), list("abcde"))
    split = leave_one_out(data)
    spe = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))  # row u: user u (row 0 unused)
    torch.manual_seed(0)
    model = _jitter(TriGRecRecommender(5, spe_dim=3, memory_tokens=2, **SEQ))
    for rows in (ClozeDataset(split, 5, 0.5), HoldoutClozeDataset(split, 5, 0.5, holdout=1)):
        wrapped = UserVectorRows(rows, {"spe": spe, "cross": None})
        assert len(wrapped) == len(rows) and torch.equal(wrapped.lengths, rows.lengths)
        index = torch.arange(len(rows))
        plain = rows.get_batch(index, torch.Generator().manual_seed(1))
        batch = wrapped.get_batch(index, torch.Generator().manual_seed(1))
        assert "cross" not in batch and torch.equal(batch["spe"], spe[plain["users"]])
        assert all(torch.equal(batch[k], v) for k, v in plain.items())
        with torch.no_grad():
            closure = model.training_loss(plain, torch.Generator().manual_seed(2), spe[plain["users"]])
            assert torch.equal(model.training_loss(batch, torch.Generator().manual_seed(2)), closure)
