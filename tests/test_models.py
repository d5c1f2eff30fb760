"""SASRec: causality, padding invariance, scoring consistency, losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from core.models import MODELS, build_model
from core.models.sasrec import SASRec
from core.models.transformer import attention_mask

N_ITEMS = 30


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threading only adds contention (it is 10-100x slower on busy CPUs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(maxlen=8, loss="ce", dropout=0.0, seed=0, **kw):
    torch.manual_seed(seed)
    m = SASRec(n_items=N_ITEMS, maxlen=maxlen, hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=dropout,
               initializer_range=0.2, loss=loss, **kw)
    return m


def test_attention_mask():
    ids = torch.tensor([[0, 0, 3, 4]])
    m = attention_mask(ids, causal=True)[0, 0]
    # query rows, key columns; padding keys hidden, causal, diagonal always allowed
    assert m.int().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    m = attention_mask(ids, causal=False)[0, 0]
    assert m.int().tolist() == [[1, 0, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]


def test_causal_attention():
    model = make(maxlen=8, dropout=0.3).eval()  # eval: dropout off even though configured
    torch.manual_seed(1)
    x = torch.randint(1, N_ITEMS + 1, (4, 8))
    with torch.no_grad():
        base = model(x)
        for t in range(8):
            y = x.clone()
            y[:, t] = (y[:, t] % N_ITEMS) + 1  # a different real item
            out = model(y)
            if t > 0:
                assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6), t
            # and the change is visible from t on (the test would be vacuous otherwise)
            assert not torch.allclose(out[:, t:], base[:, t:], atol=1e-4), t


def test_padding_does_not_change_real_positions():
    model = make(maxlen=10).eval()
    seq = [5, 9, 2, 17]
    short = torch.tensor([[0, 0] + seq])  # 6 wide
    long = torch.tensor([[0] * 6 + seq])  # 10 wide, more padding
    with torch.no_grad():
        h_short = model(short)
        h_long = model(long)
        assert torch.allclose(h_short[:, -4:], h_long[:, -4:], atol=1e-6)
        assert torch.allclose(model.last_hidden(short), model.last_hidden(long), atol=1e-6)
        # padded positions are zero
        assert (h_long[:, :6] == 0).all() and (h_short[:, :2] == 0).all()
        # changing the padding embeddings (position and item-0 rows) leaves real positions alone
        before = model(long)
        model.pos_emb.weight[:6] += torch.randn(6, 16)
        model.item_emb.weight[0] += torch.randn(16)
        after = model(long)
        assert torch.allclose(after[:, -4:], before[:, -4:], atol=1e-6)
        # in a batch, another row's padding amount does not matter either
        batch = torch.tensor([[0] * 6 + seq, [1, 2, 3, 4, 5, 6] + seq])
        assert torch.allclose(model(batch)[0, -4:], after[0, -4:], atol=1e-6)


def test_inputs_longer_than_maxlen_are_cut_to_the_last_maxlen():
    model = make(maxlen=5).eval()
    x = torch.randint(1, N_ITEMS + 1, (2, 9))
    with torch.no_grad():
        assert torch.allclose(model(x), model(x[:, -5:]))


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_last_position_only_forward_equals_the_full_forward(name):
    """Scoring runs the final block for the last position alone; it must read what the full pass gives."""
    torch.manual_seed(0)
    model = build_model(name, n_items=N_ITEMS, maxlen=8, hidden_units=16, num_blocks=2, num_heads=2,
                        dropout_rate=0.0, initializer_range=0.2).eval()
    x = torch.tensor([[0, 0, 0, 4, 8, 15, 16, 23], [1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 9]])
    with torch.no_grad():
        full = model(x)
        last = model(x, last_only=True)
        assert last.shape == (3, 1, 16)
        assert torch.allclose(last[:, 0], full[:, -1], atol=1e-6)
        if name == "bert4rec":
            masked = torch.cat([x, torch.full_like(x[:, :1], model.mask_token)], dim=1)
            expected = model.project(model(masked)[:, -1])
        else:
            expected = full[:, -1]
        assert torch.allclose(model.last_hidden(x), expected, atol=1e-6)


def test_full_and_candidate_scores():
    model = make().eval()
    x = torch.tensor([[0, 0, 0, 4, 8, 15, 16, 23], [1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        full = model.full_scores(x)
        assert full.shape == (2, N_ITEMS + 1)
        assert torch.isneginf(full[:, 0]).all()
        assert torch.isfinite(full[:, 1:]).all()
        cand = torch.tensor([[3, 1, 30, 7], [2, 2, 9, 11]])
        cs = model.candidate_scores(x, cand)
        assert torch.allclose(cs, full.gather(1, cand), atol=1e-5)
        # by hand: last hidden state dotted with the tied item embedding
        h = model(x)[:, -1]
        assert torch.allclose(full[:, 1:], h @ model.item_emb.weight[1:N_ITEMS + 1].T, atol=1e-5)


def test_ce_loss_matches_hand_computation():
    model = make(maxlen=6, seed=3).eval()
    inp = torch.tensor([[0, 0, 3, 7, 1, 12], [4, 5, 6, 7, 8, 9]])
    tgt = torch.tensor([[0, 0, 7, 1, 12, 20], [5, 6, 7, 8, 9, 10]])
    loss = model.training_loss({"input": inp, "target": tgt})
    with torch.no_grad():
        h = model(inp)
        w = model.item_emb.weight[1:N_ITEMS + 1]  # real items only: padding is never a class
        terms = []
        for b in range(2):
            for t in range(6):
                if tgt[b, t] > 0:
                    logits = h[b, t] @ w.T
                    terms.append(-(logits[tgt[b, t] - 1] - torch.logsumexp(logits, 0)))
        expected = torch.stack(terms).mean()
        # the same through F.cross_entropy on the 1-based classes shifted to 0-based
        sel = tgt > 0
        ce = F.cross_entropy(h[sel] @ w.T, tgt[sel] - 1)
    assert len(terms) == 10
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(ce.item(), rel=1e-5)
    # an untrained model is near uniform: loss close to log(N_ITEMS)
    assert abs(loss.item() - math.log(N_ITEMS)) < 2.0


def _planted_batch():
    """Every user walks the cycle i -> i % 12 + 1 from a different start; left padding."""
    rows = []
    for start in range(1, 13):
        seq = [((start - 1 + k) % 12) + 1 for k in range(7)]
        pad = start % 3
        rows.append([0] * pad + seq[pad:])
    x = torch.tensor(rows)
    inputs = x[:, :-1]
    target = x[:, 1:].masked_fill(inputs == 0, 0)
    return {"input": inputs, "target": target, "users": torch.arange(1, 13)}


@pytest.mark.parametrize("loss", ["ce", "sampled_softmax", "bce"])
def test_training_loss_decreases(loss):
    torch.manual_seed(0)
    model = SASRec(n_items=N_ITEMS, maxlen=6, hidden_units=32, num_blocks=1, num_heads=2, dropout_rate=0.0,
                   initializer_range=0.05, loss=loss, num_negatives=10)
    model.train()
    batch = _planted_batch()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def eval_loss():
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return torch.stack([model.training_loss(batch, g) for _ in range(5)]).mean().item()

    first = eval_loss()
    assert math.isfinite(first)
    for _ in range(30):
        opt.zero_grad()
        loss_v = model.training_loss(batch, gen)
        assert torch.isfinite(loss_v)
        loss_v.backward()
        opt.step()
    last = eval_loss()
    assert math.isfinite(last)
    assert last < 0.7 * first, (loss, first, last)
    # padding row of the item table stays zero-gradient (padding_idx)
    assert torch.count_nonzero(model.item_emb.weight[0]) == 0


def test_trained_model_ranks_the_planted_successor_first():
    torch.manual_seed(0)
    model = SASRec(n_items=N_ITEMS, maxlen=6, hidden_units=32, num_blocks=1, num_heads=2, dropout_rate=0.0,
                   initializer_range=0.05, loss="ce")
    batch = _planted_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        model.training_loss(batch).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        top = model.full_scores(batch["input"]).argmax(1)
    expected = batch["target"][:, -1]
    assert (top == expected).float().mean() >= 0.9


def test_model_args_rebuild_and_registry():
    model = make(maxlen=7, loss="bce", num_negatives=5)
    args = model.model_args
    assert args == dict(n_items=N_ITEMS, maxlen=7, hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0,
                        initializer_range=0.2, loss="bce", num_negatives=5)
    args["maxlen"] = 99  # a copy
    assert model.model_args["maxlen"] == 7
    clone = build_model("sasrec", **model.model_args)
    clone.load_state_dict(model.state_dict())
    x = torch.randint(1, N_ITEMS + 1, (2, 7))
    model.eval(), clone.eval()
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))
    assert MODELS["sasrec"] is SASRec and model.kind == "sasrec" and model.causal
    with pytest.raises(ConfigError):
        build_model("gru4rec", n_items=3)
    with pytest.raises(ValueError):
        SASRec(n_items=3, loss="hinge")
    with pytest.raises(ValueError):
        SASRec(n_items=3, hidden_units=10, num_heads=3)


def test_bert4rec_without_output_bias_keeps_pure_dot_product_scores():
    torch.manual_seed(0)
    model = build_model("bert4rec", n_items=N_ITEMS, hidden_units=16, num_heads=2, output_bias=False)
    assert model.model_args["output_bias"] is False
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    seqs = torch.randint(1, N_ITEMS + 1, (4, 8))
    labels = torch.where(torch.rand(4, 8) < 0.5, seqs, torch.zeros_like(seqs))
    labels[:, -1] = seqs[:, -1]
    masked = torch.where(labels > 0, torch.full_like(seqs, model.mask_token), seqs)
    model.training_loss({"input": masked, "target": labels}).backward()
    opt.step()
    assert not model.out_bias.any()  # never trained
    model.eval()
    x = torch.randint(1, N_ITEMS + 1, (2, 6))
    with torch.no_grad():
        h = model.last_hidden(x)
        assert torch.allclose(model.full_scores(x)[:, 1:], (h @ model.item_weights().T)[:, 1:], atol=1e-5)
    clone = build_model("bert4rec", **model.model_args)
    clone.load_state_dict(model.state_dict())
    assert clone.model_args["output_bias"] is False


def test_return_layers():
    model = make().eval()
    x = torch.randint(1, N_ITEMS + 1, (2, 8))
    with torch.no_grad():
        h, layers = model(x, return_layers=True)
    assert len(layers) == 2 and layers[-1].shape == h.shape == (2, 8, 16)


def test_trimming_batch_padding_changes_no_score():
    from core.data.batches import trim_padding

    torch.manual_seed(0)
    model = SASRec(n_items=20, maxlen=12, hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0).eval()
    rows = torch.tensor([[0] * 8 + [3, 4, 5, 6], [0] * 10 + [7, 8]])
    trimmed = trim_padding(rows)
    assert trimmed.shape[1] == 4
    assert torch.allclose(model.full_scores(rows)[:, 1:], model.full_scores(trimmed)[:, 1:], atol=1e-5)


@pytest.mark.parametrize("kind", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("ce_impl", ["fused", "checkpointed"])
def test_chunked_cross_entropy_matches_plain_loss_and_gradients(kind, ce_impl):
    torch.manual_seed(0)
    model = build_model(kind, n_items=500, maxlen=10, hidden_units=16, num_blocks=1, num_heads=1, dropout_rate=0.0,
                        ce_impl=ce_impl)
    if kind == "bert4rec":  # its per-item output bias gets its gradient too
        model.out_bias.data.normal_()
    h = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(1, 501, (300,))
    plain = F.cross_entropy(model.logits_all(h).float(), targets)
    plain.backward()
    params = [model.item_emb.weight] + ([model.out_bias] if kind == "bert4rec" else [])
    grads = [h.grad.clone()] + [p.grad.clone() for p in params]
    h.grad = None
    model.zero_grad()
    model.ce_chunk_elements, model.ce_min_rows = 501 * 64, 1  # 64 rows per chunk -> 5 chunks
    chunked = model.chunked_cross_entropy(h, targets)
    chunked.backward()
    assert torch.allclose(plain, chunked, atol=1e-6)
    for expected, got in zip(grads, [h.grad] + [p.grad for p in params]):
        assert torch.allclose(expected, got, atol=1e-6)
    assert model.item_emb.weight.grad[0].abs().max() == 0  # the padding column takes no gradient
    assert ("ce_impl" in model.model_args) == (ce_impl != "fused")  # old checkpoints keep their exact args


def test_fused_full_softmax_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = build_model("sasrec", n_items=200, maxlen=10, hidden_units=16, num_blocks=1, num_heads=1, dropout_rate=0.0)
    h = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(1, 201, (50,))
    reference = F.cross_entropy(model.logits_all(h), targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = model.chunked_cross_entropy(h.bfloat16(), targets)
    assert fused.dtype == torch.float32
    assert abs(fused.item() - reference.item()) < 0.05  # only the bf16 rounding of h differs


def test_bert4rec_contrastive_views_loss_matches_hand_computation():
    """``cl_weight``: the cloze loss over both maskings plus weight x InfoNCE between each row's two
    last-position states, the other 2B - 2 states of the batch as negatives."""
    torch.manual_seed(0)
    model = build_model("bert4rec", n_items=N_ITEMS, hidden_units=16, num_heads=2, dropout_rate=0.0,
                        cl_weight=0.3, cl_temperature=0.5)
    assert (model.model_args["cl_weight"], model.model_args["cl_temperature"]) == (0.3, 0.5)
    assert "cl_weight" not in build_model("bert4rec", n_items=N_ITEMS, hidden_units=16, num_heads=2).model_args
    seqs = torch.randint(1, N_ITEMS + 1, (5, 7))
    views = []
    for _ in range(2):
        labels = torch.where(torch.rand(5, 7) < 0.4, seqs, torch.zeros_like(seqs))
        labels[:, 2] = seqs[:, 2]
        views.append((torch.where(labels > 0, torch.full_like(seqs, model.mask_token), seqs), labels))
    batch = {"input": views[0][0], "target": views[0][1], "input_b": views[1][0], "target_b": views[1][1]}
    out = model.training_loss(batch)
    with torch.no_grad():
        states, cloze_sum, count = [], 0.0, 0
        for inputs, labels in views:
            hidden = model.project(model(inputs))
            states.append(hidden[:, -1])
            logits = model.logits_all(hidden[labels > 0])
            cloze_sum += F.cross_entropy(logits, labels[labels > 0], reduction="sum").item()
            count += int((labels > 0).sum())
        z = torch.cat(states)
        terms = []
        for i in range(10):
            partner = (i + 5) % 10
            others = [j for j in range(10) if j != i]
            sims = torch.stack([z[i] @ z[j] / 0.5 for j in others])
            terms.append(-(z[i] @ z[partner] / 0.5 - torch.logsumexp(sims, 0)))
        contrast = torch.stack(terms).mean().item()
    assert out["cloze"].item() == pytest.approx(cloze_sum / count, rel=1e-4)
    assert out["contrast"].item() == pytest.approx(contrast, rel=1e-4)
    assert out["loss"].item() == pytest.approx(cloze_sum / count + 0.3 * contrast, rel=1e-4)
    out["loss"].backward()
    assert model.item_emb.weight.grad is not None


def test_cloze_views_mask_the_same_rows_twice_and_cl_is_bert4rec_only():
    from core.config import load_config
    from core.data.batches import ClozeDataset
    from core.data.sequences import SequenceData
    from core.data.splits import leave_one_out
    from core.seqrec import SeqRecConfig

    d = SequenceData.from_lists([list(range(1, 13))] * 30, 12, [str(u) for u in range(30)], [str(i) for i in range(12)])
    ds = ClozeDataset(leave_one_out(d), maxlen=20, mask_prob=0.4, views=2)
    b = ds.get_batch(torch.arange(30), torch.Generator().manual_seed(0))
    one = torch.where(b["target"] > 0, b["target"], b["input"])
    two = torch.where(b["target_b"] > 0, b["target_b"], b["input_b"])
    assert torch.equal(one, two)  # the same rows...
    assert not torch.equal(b["input"], b["input_b"])  # ...masked independently
    with pytest.raises(ConfigError, match="cl_weight"):
        load_config(SeqRecConfig, overrides="model.model_type=sasrec,model.cl_weight=0.1")
