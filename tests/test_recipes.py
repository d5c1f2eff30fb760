"""The training recipes of SASRec / BERT4Rec: loss identities, padding, the thread key, configs."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.config import load_config
from core.models import build_model
from core.models.sampled_softmax import draw_negatives, sampled_softmax_loss
from core.store import REPO_ROOT
from core.train import set_threads


def test_sampled_softmax_with_every_item_as_negative_equals_full_softmax():
    """Every item drawn once: the log-Q correction (log of one expected draw) is 0 and, with the
    positive's own draw masked as an accidental hit, the loss is the catalog's softmax exactly."""
    torch.manual_seed(0)
    n_items, rows = 30, 7
    h = torch.randn(rows, 8)
    emb = torch.randn(n_items + 1, 8)
    pos = torch.randint(1, n_items + 1, (rows,))
    logits = h @ emb.T
    full = F.cross_entropy(logits[:, 1:], pos - 1)
    negs = torch.arange(1, n_items + 1)
    # draws of items in proportion to p, num times: expected count num * p = 1 for each when p = 1/n, num = n
    logq = torch.log(torch.full((n_items,), n_items * (1.0 / n_items)))
    for q in (None, logq):
        got = sampled_softmax_loss(logits.gather(1, pos.view(-1, 1)), logits[:, negs], pos, negs, q)
        assert got.item() == pytest.approx(full.item(), rel=1e-6)
    # the in-batch sampler's law is corrected by the same rule: shares of the batch's targets
    batch_pos = torch.tensor([1, 1, 2, 3])
    expected = {1: math.log(4 * 0.5), 2: math.log(4 * 0.25), 3: math.log(4 * 0.25)}
    negs_ib, logq_ib = draw_negatives("in_batch", 4, n_items, batch_pos, torch.Generator().manual_seed(0))
    for item, lq in zip(negs_ib.tolist(), logq_ib.tolist()):
        assert lq == pytest.approx(expected[item])


@pytest.mark.parametrize("kind", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("loss", ["ce", "sampled_softmax"])
def test_padding_positions_add_no_loss(kind, loss):
    """Left padding (id 0 in input and target) changes neither the loss nor its gradient."""
    torch.manual_seed(1)
    model = build_model(kind, n_items=40, maxlen=12, hidden_units=16, num_blocks=1, num_heads=2, dropout_rate=0.0,
                        loss=loss, num_negatives=16)
    model.eval()  # no dropout: two forward passes must agree exactly
    inputs = torch.tensor([[0, 3, 5, 7, 9], [0, 0, 0, 2, 4]])
    targets = torch.tensor([[0, 5, 7, 9, 11], [0, 0, 0, 4, 6]])
    if kind == "bert4rec":  # cloze: targets only at masked positions
        mask = model.mask_token
        inputs = torch.tensor([[0, 3, mask, 7, mask], [0, 0, 0, mask, 4]])
        targets = torch.tensor([[0, 0, 5, 0, 9], [0, 0, 0, 2, 0]])
    pad = torch.zeros(2, 4, dtype=torch.long)
    losses, grads = [], []
    for extra in (0, 4):
        model.zero_grad()
        batch = {"input": torch.cat([pad[:, :extra], inputs], 1), "target": torch.cat([pad[:, :extra], targets], 1)}
        loss_value = model.training_loss(batch, torch.Generator().manual_seed(3))
        loss_value.backward()
        losses.append(loss_value.item())
        grads.append(model.item_emb.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    # and the loss counts exactly the real target positions: a padding target would change it
    model.zero_grad()
    if loss == "ce":
        h = model.project(model(inputs))
        sel = targets > 0
        hand = F.cross_entropy(model.logits_all(h[sel]), targets[sel])
        assert losses[0] == pytest.approx(hand.item(), rel=1e-5)


def test_set_threads_is_obeyed_in_process():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(0) == 1  # 0 leaves the count as it is
    finally:
        torch.set_num_threads(before)


def test_threads_flag_is_obeyed_and_recorded(tmp_path):
    """``--threads 1`` (= ``training.threads=1``) reaches torch and lands in results.json and config.yaml."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["RECSYS_HOME"] = str(tmp_path)
    over = f"device=cpu,data.data_root={tmp_path / 'data'},training.epochs=1,run_name=threads,eval.sampled=[]"
    proc = subprocess.run([sys.executable, "-m", "distillation.training", "--threads", "1", "--override", over],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "distillation" / "synthetic-a" / "threads"
    assert json.loads((run / "results.json").read_text())["threads"] == 1
    assert "threads: 1" in (run / "config.yaml").read_text()


def test_negative_threads_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "distillation.training", "--threads", "-1"], cwd=REPO_ROOT,
                          env={**os.environ, "RECSYS_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "training.threads" in proc.stderr


# training recipes; configs/distillation/profiles/ is distillation.profiles' (ProfilesConfig, tests/test_layout.py)
RECIPES = sorted(p for p in (REPO_ROOT / "configs" / "distillation").glob("*/*.yaml") if p.parent.name != "profiles")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_configs_load(path):
    from core.seqrec import SeqRecConfig
    from distillation.config import DistillConfig

    cls = DistillConfig if path.parent.name.endswith("_llm") else SeqRecConfig
    cfg = load_config(cls, path)
    assert cfg.model.model_type in ("sasrec", "bert4rec", "bsarec")
    assert path.read_text().startswith("#")  # every config opens with the command that runs it


def test_the_40_epoch_beauty_recipe_is_the_command_its_rows_ran():
    """beauty-ce-e40.yaml's rows (sasrec-ce-d96b3-e40) were trained as beauty-ce.yaml plus overrides;
    the file must stay exactly that, so the rows' commands and the config reproduce each other."""
    from dataclasses import asdict

    from core.seqrec import SeqRecConfig

    sas = REPO_ROOT / "configs" / "distillation" / "sasrec"
    rows_ran = load_config(SeqRecConfig, sas / "beauty-ce.yaml", "run_name=r,training.epochs=40,model.hidden_units=96,"
                           "model.num_blocks=3,model.dropout_rate=0.4763,training.learning_rate=0.001042,"
                           "training.weight_decay=0.08197")
    assert asdict(load_config(SeqRecConfig, sas / "beauty-ce-e40.yaml", "run_name=r")) == asdict(rows_ran)


PIPELINE_CONFIGS = [
    ("core.seqrec", "SeqRecConfig", "configs/distillation/sasrec/beauty.yaml"),
    ("distillation.config", "DistillConfig", "configs/distillation/sasrec_llm/ml-100k.yaml"),
    ("cross_domain.config", "CrossDomainConfig", "configs/cross_domain/food.yaml"),
    ("user_representation_module.config", "RepConfig", "configs/trigrec/rep/food.yaml"),
    ("recommendation_model.config", "RecConfig", "configs/trigrec/rec/food.yaml"),
]


@pytest.mark.parametrize("module,cls_name,path", PIPELINE_CONFIGS, ids=lambda v: str(v).split("/")[-1])
def test_every_sequential_pipeline_takes_the_same_loss_keys(module, cls_name, path):
    import importlib

    cls = getattr(importlib.import_module(module), cls_name)
    cfg = load_config(cls, REPO_ROOT / path, "model.loss=sampled_softmax,model.num_negatives=512,"
                                             "model.negative_sampler=popularity,training.threads=1")
    assert (cfg.model.loss, cfg.model.num_negatives, cfg.model.negative_sampler) == ("sampled_softmax", 512, "popularity")
    assert cfg.training.threads == 1


@pytest.mark.parametrize("kind", ["sasrec", "bert4rec"])
def test_micro_batches_give_the_whole_batch_gradient(kind):
    """``training.micro_batch_size``: pieces weighted by their share of the target positions
    accumulate exactly the gradient (and loss) of the whole batch under the full softmax."""
    from core.train import _default_loss, _LossModule, forward_backward

    torch.manual_seed(2)
    model = build_model(kind, n_items=30, maxlen=8, hidden_units=16, num_blocks=1, num_heads=2, dropout_rate=0.0)
    model.train()
    inputs = torch.randint(1, 31, (7, 6))
    inputs[:3, :2] = 0  # padding: rows with fewer targets weigh less
    targets = torch.randint(1, 31, (7, 6)).masked_fill(inputs == 0, 0)
    targets[5] = 0  # a row without targets
    batch = {"input": inputs, "target": targets, "users": torch.arange(7)}
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    module = _LossModule(model, _default_loss)
    results = []
    for micro in (0, 2, 3):
        model.zero_grad()
        loss, _ = forward_backward(module, batch, None, scaler, None, torch.device("cpu"), micro)
        results.append((loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    for loss, grads in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-5)
        for g, ref in zip(grads, results[0][1]):
            assert torch.allclose(g, ref, atol=1e-6)


def test_micro_batch_size_refused_where_batches_cannot_split():
    from core.errors import ConfigError
    from core.train import split_batch

    with pytest.raises(ConfigError, match="micro_batch_size"):
        split_batch({"A": {"input": torch.zeros(4, 3)}}, 2)
    assert split_batch({"A": {"input": torch.zeros(4, 3)}}, 0)[0][1] == 1.0


# --------------------------------------------------------------------------- prefix rows, BSARec
def test_prefix_rows_put_one_target_at_the_last_position():
    from core.data.batches import CausalDataset
    from core.data.sequences import SequenceData
    from core.data.splits import leave_one_out

    # u1 trains on 1 2 3 (4, 5 held out), u2 on 3 6 2 (7, 8 held out)
    data = SequenceData.from_lists([[1, 2, 3, 4, 5], [3, 6, 2, 7, 8]], 8, ["a", "b"], [str(i) for i in range(1, 9)])
    ds = CausalDataset(leave_one_out(data), maxlen=3, prefixes=True)
    assert len(ds) == 4 and ds.users.tolist() == [1, 1, 2, 2]
    b = ds.get_batch(torch.arange(4))
    assert b["input"].tolist() == [[0, 1], [1, 2], [0, 3], [3, 6]]
    assert b["target"].tolist() == [[0, 2], [0, 3], [0, 6], [0, 2]]
    assert b["last_target"] is True
    inp, tgt = ds[1]
    assert inp.tolist() == [0, 1, 2] and tgt.tolist() == [0, 0, 3]
    # the loss of a prefix batch is the loss at its rows' last positions
    torch.manual_seed(0)
    model = build_model("sasrec", n_items=8, maxlen=3, hidden_units=8, num_blocks=1, num_heads=1, dropout_rate=0.0)
    h = model(b["input"])[:, -1]
    expected = F.cross_entropy(model.logits_all(h), b["target"][:, -1])
    assert model.training_loss(b).item() == pytest.approx(expected.item(), rel=1e-6)


def test_low_pass_matrix_is_the_fourier_filter_and_survives_trimming():
    from core.models.transformer import low_pass_matrix

    torch.manual_seed(0)
    x = torch.randn(20, 3)
    x[:12] = 0  # left padding
    spectrum = torch.fft.rfft(x, dim=0, norm="ortho")
    spectrum[3:] = 0
    expected = torch.fft.irfft(spectrum, n=20, dim=0, norm="ortho")
    p = low_pass_matrix(20, 3)
    assert torch.allclose(p @ x, expected, atol=1e-5)
    assert torch.allclose(p[-8:, -8:] @ x[-8:], expected[-8:], atol=1e-5)
    assert torch.allclose(low_pass_matrix(20, 11) @ x, x, atol=1e-5)  # every component kept: identity


def test_bsarec_scores_do_not_depend_on_padding_width_and_rebuild_from_args():
    torch.manual_seed(0)
    model = build_model("bsarec", n_items=30, maxlen=12, hidden_units=16, num_blocks=2, num_heads=1,
                        dropout_rate=0.0, filter_alpha=0.6, filter_c=3).eval()
    rows = torch.tensor([[0] * 8 + [3, 4, 5, 6], [0] * 10 + [7, 8], list(range(1, 13))])
    with torch.no_grad():
        full = model.full_scores(rows)
        assert torch.allclose(full[:2, 1:], model.full_scores(rows[:2, -4:])[:, 1:], atol=1e-5)
        assert torch.allclose(model(rows, last_only=True)[:, 0], model(rows)[:, -1], atol=1e-5)
        # the filter mixes positions: the same items at another offset score differently
        shifted = torch.tensor([[0] * 7 + [3, 4, 5, 6, 9]])
        assert not torch.allclose(model.full_scores(shifted)[0], full[0])
    assert model.model_args["filter_alpha"] == 0.6 and model.model_args["filter_c"] == 3
    clone = build_model("bsarec", **model.model_args)
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(clone.eval().full_scores(rows), full)


def test_bsarec_position_padding_follows_the_authors_code():
    from core.models.transformer import attention_mask
    mask = attention_mask(torch.tensor([[0, 0, 3, 4]]), causal=True, empty_rows="all")[0, 0]
    # padded queries see no key, so (as with an additive -10000 mask) they attend to every one
    expected = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    torch.manual_seed(0)
    args = dict(n_items=30, maxlen=12, hidden_units=16, num_blocks=2, num_heads=1, dropout_rate=0.0)
    zero = build_model("bsarec", **args).eval()
    model = build_model("bsarec", padding="position", **args).eval()
    model.load_state_dict(zero.state_dict())
    rows = torch.tensor([[0] * 8 + [3, 4, 5, 6], list(range(1, 13))])
    with torch.no_grad():
        full = model.full_scores(rows)
        # a trimmed window is padded back to maxlen, so the width of the caller's batch is free
        assert torch.allclose(full[:1, 1:], model.full_scores(rows[:1, -4:])[:, 1:], atol=1e-5)
        assert model(rows[:, -4:]).shape == (2, 4, 16)
        # padded positions carry state into the short row only; a full window is the same in both
        assert not torch.allclose(full[0, 1:], zero.full_scores(rows)[0, 1:], atol=1e-3)
        assert torch.allclose(full[1, 1:], zero.full_scores(rows)[1, 1:], atol=1e-5)
    assert model.model_args["padding"] == "position" and "padding" not in zero.model_args
    with pytest.raises(ValueError, match="padding"):
        build_model("bsarec", padding="mirror", **args)
    from core.errors import ConfigError
    from core.seqrec import ModelConfig

    with pytest.raises(ConfigError, match="model.padding=position is a bsarec setting"):
        ModelConfig(model_type="sasrec", padding="position")
    # a config that asks for both position schemes is refused with one line, before any model exists
    with pytest.raises(ConfigError, match="model.position_from=oldest"):
        ModelConfig(model_type="bsarec", padding="position", position_from="oldest")
    with pytest.raises(ValueError, match="position_from"):
        build_model("bsarec", padding="position", position_from="oldest", **args)


def test_bsarec_learns_a_planted_successor():
    torch.manual_seed(0)
    n_items = 20
    succ = torch.randperm(n_items) + 1  # item i is always followed by succ[i - 1]
    seqs = torch.zeros(64, 6, dtype=torch.long)
    seqs[:, 0] = torch.randint(1, n_items + 1, (64,))
    for t in range(1, 6):
        seqs[:, t] = succ[seqs[:, t - 1] - 1]
    batch = {"input": seqs[:, :-1], "target": seqs[:, 1:]}
    model = build_model("bsarec", n_items=n_items, maxlen=5, hidden_units=32, num_blocks=1, num_heads=1,
                        dropout_rate=0.0, initializer_range=0.05)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        model.training_loss(batch).backward()
        opt.step()
    with torch.no_grad():
        top = model.eval().full_scores(batch["input"]).argmax(1)
    assert (top == seqs[:, -1]).float().mean() >= 0.9


@pytest.mark.parametrize("module,cls_name,path", PIPELINE_CONFIGS, ids=lambda v: str(v).split("/")[-1])
def test_new_cloze_keys_are_taken_or_refused_never_ignored(module, cls_name, path):
    """``model.ce_from_epoch`` works everywhere (``core.train.fit`` calls every module's
    ``set_epoch``); ``prefix_prob`` / ``cl_weight`` / ``repeat_padding`` only where the training
    rows honour them."""
    import importlib

    from core.errors import ConfigError

    cls = getattr(importlib.import_module(module), cls_name)
    cfg = load_config(cls, REPO_ROOT / path, "model.loss=sampled_softmax,model.ce_from_epoch=5")
    assert cfg.model.ce_from_epoch == 5
    takes_prefix = module in ("recommendation_model.config",) or cls_name == "SeqRecConfig"
    takes_repeat = cls_name in ("SeqRecConfig", "DistillConfig")  # causal rows built by core.seqrec
    for key, taken in (("model.prefix_prob=0.5", takes_prefix), ("model.end_mask_prob=0.5", takes_prefix),
                       ("model.cl_weight=0.1", cls_name == "SeqRecConfig"),
                       ("model.repeat_padding=plain", takes_repeat)):
        cloze = cls_name == "SeqRecConfig" and "repeat" not in key
        over = key + (",model.model_type=bert4rec" if cloze else "")
        if taken:
            load_config(cls, REPO_ROOT / path, over)
        else:
            with pytest.raises(ConfigError, match=key.split("=")[0].split(".")[1]):
                load_config(cls, REPO_ROOT / path, over)


def test_repeat_padding_is_refused_where_rows_are_not_causal_sequences():
    from core.errors import ConfigError
    from core.seqrec import SeqRecConfig

    path = REPO_ROOT / "configs/distillation/sasrec/beauty.yaml"
    assert load_config(SeqRecConfig, path, "model.repeat_padding=delimited").model.repeat_padding == "delimited"
    for over in ("model.repeat_padding=plain,model.model_type=bert4rec",
                 "model.repeat_padding=plain,model.train_samples=prefixes"):
        with pytest.raises(ConfigError, match="repeat_padding"):
            load_config(SeqRecConfig, path, over)
