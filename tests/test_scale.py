"""Catalog scale: streamed generator, memory-mapped data, sampled softmax, chunked evaluation,
the full-softmax guard, a 2-process torchrun run (c10d rendezvous, gloo), and the cost
measurements the benchmarks drive (``core.cost``)."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.batches import CausalDataset, is_memory_mapped
from core.data.sequences import SequenceData
from core.data.splits import item_popularity, leave_one_out
from core.data.synthetic_large import LargeSpec, fit_popularity_exponent, generate_large, repack_npz
from core.errors import ConfigError, DataError
from core.evaluation import Evaluator, popularity_score_fn, topk_items
from core.models import build_model
from core.models.sampled_softmax import check_full_softmax, draw_negatives, popularity_tables, sampled_softmax_loss
from core.seqrec import model_score_fn
from core.store import REPO_ROOT


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale") / "synthetic-200k"
    # small chunks so that the streamed path writes many pieces
    generate_large(out, LargeSpec(interactions=200_000, items=20_000, users=8_000, alpha=1.0, chunk=30_000, seed=3),
                   progress=False)
    return out


# --------------------------------------------------------------------------- generator
def test_generator_counts_and_layout(large):
    data = SequenceData.load(large)
    assert (data.n_users, data.n_items, data.n_interactions) == (8_000, 20_000, 200_000)
    assert data.lengths.min() >= 5
    assert is_memory_mapped(data.items) and is_memory_mapped(data.offsets)  # mapped, not read
    assert not (large / "sequences.npz").exists()
    assert data.meta["fingerprint"] == data.fingerprint()  # the streamed hash equals the whole-array one
    assert 1 <= int(data.items.min()) and int(data.items.max()) <= 20_000


@pytest.mark.parametrize("alpha", [0.8, 1.2])
def test_generator_popularity_exponent(tmp_path, alpha):
    out = tmp_path / f"a{alpha}"
    generate_large(out, LargeSpec(interactions=300_000, items=20_000, users=10_000, alpha=alpha, seed=1), progress=False)
    data = SequenceData.load(out)
    fitted = fit_popularity_exponent(data.items, data.n_items)
    assert abs(fitted - alpha) < 0.1, fitted


def test_generator_planted_successor(large):
    """The planted structure: the next item is the previous one's block successor far more
    often than chance (so a sequence model has something popularity cannot explain)."""
    data = SequenceData.load(large)
    spec = LargeSpec(**{k: v for k, v in data.meta["spec"].items()})
    rng = np.random.default_rng(spec.seed)
    rank_of = np.empty(spec.items + 1, dtype=np.int64)
    rank_of[rng.permutation(spec.items) + 1] = np.arange(spec.items)  # the generator's first draw
    items = np.asarray(data.items)
    same_user = np.ones(len(items) - 1, dtype=bool)
    same_user[data.offsets[1:-1] - 1] = False
    r0, r1 = rank_of[items[:-1]][same_user], rank_of[items[1:]][same_user]
    start = (r0 // spec.block) * spec.block
    succ = start + (r0 - start + 1) % np.minimum(spec.block, spec.items - start)
    share = float((r1 == succ).mean())
    assert share > spec.p_successor * 0.9, share


def test_generator_deterministic_and_streamed_chunks(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    spec = LargeSpec(interactions=50_000, items=5_000, users=2_000, chunk=7_000, seed=9)
    generate_large(a, spec, progress=False)
    generate_large(b, spec, progress=False)
    assert (a / "items.npy").read_bytes() == (b / "items.npy").read_bytes()


def test_generator_rejects_impossible_spec(tmp_path):
    with pytest.raises(DataError, match="--min-len"):
        generate_large(tmp_path / "x", LargeSpec(interactions=100, items=50, users=100, min_len=5), progress=False)


def test_prepare_cli_and_npy_roundtrip(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "core.data.prepare", "synthetic-large", "--interactions", "20000",
                        "--items", "3000", "--users", "1000", "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "1000 users, 3000 items, 20000 interactions" in r.stdout
    data = SequenceData.load(out)
    # save() in the npy layout reads back identically and is memory-mapped
    data2 = SequenceData(np.array(data.offsets), np.array(data.items), data.n_items, data.user_ids, data.item_ids)
    data2.save(tmp_path / "copy", layout="npy")
    back = SequenceData.load(tmp_path / "copy")
    assert is_memory_mapped(back.items) and back.fingerprint() == data.fingerprint()


def test_repack_npz_keeps_the_data_in_memory_layout(tmp_path):
    out = tmp_path / "small"
    generate_large(out, LargeSpec(interactions=20_000, items=500, users=800, seed=2), "small", progress=False)
    before = SequenceData.load(out)
    offsets, items, fingerprint = np.array(before.offsets), np.array(before.items), before.fingerprint()
    repack_npz(out)
    assert (out / "sequences.npz").is_file() and not list(out.glob("*.npy"))
    after = SequenceData.load(out)
    assert not is_memory_mapped(after.items) and after.meta["layout"] == "npz" and after.meta["name"] == "small"
    assert np.array_equal(after.offsets, offsets) and np.array_equal(after.items, items)
    assert after.fingerprint() == fingerprint == after.meta["fingerprint"]


def test_cost_measurements_on_a_small_model(tmp_path):
    from core.cost import fit_throughput, full_ranking_cost, peak_rss_gb, ranking_vs_limit, run_measured

    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 81, int(n))) for n in rng.integers(4, 15, 150)]
    split = leave_one_out(SequenceData.from_lists(seqs, 80, list(range(150)), list(range(80))))
    torch.manual_seed(0)
    model = build_model("sasrec", n_items=80, maxlen=10, hidden_units=16, num_blocks=1, num_heads=1, dropout_rate=0.0)
    train = CausalDataset(split, 10)
    res = fit_throughput(model, train, batch_size=32, steps=3)
    assert res["steps"] == 3 and res["rows"] == 96 and res["rows_per_sec"] == pytest.approx(96 / res["epoch_seconds"])
    assert math.isfinite(res["train_loss"]) and res["cpu_share"] > 0
    assert fit_throughput(model, train, batch_size=100, steps=10)["rows"] == len(train) == 150  # two batches: all rows
    model.eval()
    cost = full_ranking_cost(split, "test", 10, model_score_fn(model), sampled=(), max_users=100, batch_size=64)
    assert cost["users"] == 100 and cost["seconds"] > 0
    same = Evaluator(split, "test", 10, sampled=(), max_users=100).run(model_score_fn(model))
    assert cost["metrics"] == pytest.approx(same)  # the same users (fixed-seed subset), batching aside
    ev = Evaluator(split, "test", 10, sampled=())
    lim = ranking_vs_limit(ev, model_score_fn(model), model.item_weights(), repeats=2)
    assert (lim["users"], lim["items"], lim["dim"], lim["batch"]) == (150, 81, 16, ev.score_users)
    assert lim["seconds"] > 0 and lim["limit_seconds"] > 0
    assert peak_rss_gb() > 0.01
    assert run_measured([sys.executable, "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])"]) > 150
    with pytest.raises(subprocess.CalledProcessError):
        run_measured([sys.executable, "-c", "raise SystemExit(3)"], cwd=tmp_path)


def test_seqrec_ranking_vs_limit_on_a_prepared_folder(tmp_path):
    from types import SimpleNamespace

    from core.cost import seqrec_ranking_vs_limit
    from core.seqrec import ModelConfig

    rng = np.random.default_rng(1)
    seqs = [list(rng.integers(1, 61, int(n))) for n in rng.integers(4, 12, 90)]
    SequenceData.from_lists(seqs, 60, list(range(90)), list(range(60))).save(tmp_path / "small")
    cfg = SimpleNamespace(model=ModelConfig(maxlen=8, hidden_units=12, num_blocks=1, num_heads=1), eval=SimpleNamespace(batch_size=32))
    lim = seqrec_ranking_vs_limit(cfg, tmp_path / "small", repeats=1)
    # every user is a test user; the product: 90 users x (60 items + padding) x d=12, in one scoring
    # batch (the evaluator's score budget holds millions of scores)
    assert (lim["users"], lim["items"], lim["dim"]) == (90, 61, 12) and lim["batch"] >= 90
    assert lim["seconds"] > 0 and lim["limit_seconds"] > 0


def test_training_run_cost_reads_the_epochs_the_command_logs(tmp_path):
    from core.cost import training_run_cost

    # two epochs (1 s and 3 s of training; the first validated in 5.5 - 1 = 4.5 s) around other lines
    lines = [{"step": 1}, {"epoch": 1, "epoch_seconds": 1.0, "seconds": 5.5}, {"epoch": 2, "epoch_seconds": 3.0, "seconds": 9.0}]
    log = tmp_path / "run" / "metrics.jsonl"
    script = (f"import pathlib; p = pathlib.Path({str(log)!r}); p.parent.mkdir(); "
              f"p.write_text({chr(10).join(json.dumps(x) for x in lines) + chr(10) + chr(10)!r})")
    cost = training_run_cost([sys.executable, "-c", script], log, cwd=tmp_path)
    assert cost["sec_per_epoch"] == 2.0 and cost["sec_per_full_eval"] == 4.5 and cost["peak_rss_mb"] > 1


def test_catalog_scale_workloads_on_a_small_folder(tmp_path):
    from core.cost import generation_cost, sampled_training_cost, untrained_ranking_cost

    out = tmp_path / "tiny"
    gen = generation_cost(out, LargeSpec(interactions=20_000, items=500, users=800, seed=2))
    data = SequenceData.load(out)
    assert gen["fingerprint"] == data.fingerprint() and gen["seconds"] > 0 and gen["load_seconds"] > 0
    assert gen["fitted_alpha"] == fit_popularity_exponent(data.items, 500) and gen["peak_ram_gb"] > 0.01
    model = dict(maxlen=10, hidden_units=16, num_blocks=1, num_heads=1, dropout_rate=0.0)
    train = sampled_training_cost(out, model, batch_size=64, steps=3, negatives=20, sampler="popularity")
    # 3 batches of 64 user rows; full-softmax logits and gradient: 2 x 64 x 10 x 501 float32
    assert train["steps"] == 3 and train["rows"] == 192 and math.isfinite(train["train_loss"])
    assert train["full_softmax_logits_gb"] == 2 * 64 * 10 * 501 * 4 / 1e9
    whole, chunked = (untrained_ranking_cost(out, model, max_users=300, batch_size=100, item_chunk=c) for c in (0, 128))
    assert whole["users"] == chunked["users"] == 300 and whole["items"] == 500 and whole["peak_ram_gb"] > 0.01
    assert chunked["metrics"] == pytest.approx(whole["metrics"])  # 4 chunks of at most 128 items: the same ranks


def test_lazy_rows_equal_materialized(large):
    split = leave_one_out(SequenceData.load(large))
    lazy, full = CausalDataset(split, 20), CausalDataset(split, 20, materialize=True)
    assert lazy.rows is None and full.rows is not None  # memory-mapped data -> gathered per batch
    idx = torch.tensor([0, 17, 999, 4242, len(lazy) - 1])
    a, b = lazy.get_batch(idx), full.get_batch(idx)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(lazy.lengths, full.lengths)


# --------------------------------------------------------------------------- chunked evaluation
@pytest.mark.parametrize("kind", ["sasrec", "bert4rec"])
def test_chunked_metrics_equal_unchunked(large, kind):
    split = leave_one_out(SequenceData.load(large))
    torch.manual_seed(0)
    model = build_model(kind, n_items=split.data.n_items, maxlen=20, hidden_units=16, num_blocks=1, num_heads=1).eval()
    ref = Evaluator(split, "test", 20, sampled=(), max_users=600, batch_size=256).run(model_score_fn(model))
    for chunk in (997, 8192):
        got = Evaluator(split, "test", 20, sampled=(), max_users=600, batch_size=256, item_chunk=chunk).run(
            model_score_fn(model))
        assert got.keys() == ref.keys()
        for k in ref:
            assert got[k] == pytest.approx(ref[k], abs=1e-12), (chunk, k)


def test_score_budget_splits_batches_without_changing_metrics(large):
    """The evaluator's score budget (users x catalog per scoring batch) changes batching only:
    every metric, the sampled protocol's negatives included, stays what one big batch gives."""
    split = leave_one_out(SequenceData.load(large))
    torch.manual_seed(0)
    model = build_model("sasrec", n_items=split.data.n_items, maxlen=20, hidden_units=16, num_blocks=1, num_heads=1).eval()
    small = Evaluator(split, "test", 20, sampled=(50,), max_users=600, batch_size=256, score_budget=20_001 * 7)
    assert small.score_users == 7 and max(len(b) for b in small._scoring_batches()) == 7  # 20,000 items + padding
    ref = Evaluator(split, "test", 20, sampled=(50,), max_users=600, batch_size=256, score_budget=1 << 40).run(
        model_score_fn(model))
    got = small.run(model_score_fn(model))
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k


def test_chunked_metrics_with_ties_and_history(large):
    """The popularity baseline (integer scores, a plain ScoreFn) and a constant scorer (all
    ties, which must rank the target last among the non-history items)."""
    split = leave_one_out(SequenceData.load(large))
    for fn in (popularity_score_fn(split), lambda inputs, users: torch.zeros(len(inputs), split.data.n_items + 1)):
        ref = Evaluator(split, "test", 20, sampled=(), max_users=500).run(fn)
        got = Evaluator(split, "test", 20, sampled=(), max_users=500, item_chunk=3001).run(fn)
        assert got == pytest.approx(ref, abs=1e-12)
    ev = Evaluator(split, "test", 20, sampled=(), max_users=50, item_chunk=3001)
    ev.run(lambda inputs, users: torch.zeros(len(inputs), split.data.n_items + 1))
    users, ranks = ev.last_ranks
    data = split.data
    hist = [set(data.sequence(int(u))[:-1].tolist()) - {int(data.sequence(int(u))[-1])} for u in users]
    assert ranks.tolist() == [data.n_items - 1 - len(h) for h in hist]


def test_topk_chunked_equals_full():
    torch.manual_seed(1)
    n, b, k = 5000, 7, 25
    scores = torch.randn(b, n + 1)
    scores[:, 100:110] = 3.0  # ties across a chunk border (105): any of them may be chosen
    rows = torch.tensor([0, 0, 3, 6])
    items = torch.tensor([100, 4999, 105, 1])
    full = scores.clone()
    full[:, 0] = -math.inf
    full[rows, items] = -math.inf
    ref_v, ref_i = torch.sort(full, dim=1, descending=True, stable=True)
    for chunk in (105, 1024, n + 1):
        v, i = topk_items(lambda s, e: scores[:, s:e], b, n, k, chunk, rows, items)
        assert torch.equal(v, ref_v[:, :k]), chunk
        assert torch.equal(full.gather(1, i), v)  # each index carries its score: none excluded, none padding
        untied = v != 3.0
        assert torch.equal(i[untied], ref_i[:, :k][untied]), chunk


def test_evaluator_recommend_excludes_history(large):
    split = leave_one_out(SequenceData.load(large))
    torch.manual_seed(0)
    model = build_model("sasrec", n_items=split.data.n_items, maxlen=20, hidden_units=16, num_blocks=1, num_heads=1).eval()
    ev = Evaluator(split, "test", 20, sampled=(), max_users=40, item_chunk=4096)
    users, items, scores = ev.recommend(model_score_fn(model), k=10)
    full_ev = Evaluator(split, "test", 20, sampled=(), max_users=40)
    users2, items2, _ = full_ev.recommend(model_score_fn(model), k=10)
    assert np.array_equal(users, users2) and np.array_equal(items, items2)
    for u, row, hl in zip(users, items, ev.part.hist_len):
        assert not set(row.tolist()) & set(split.data.sequence(int(u))[:hl].tolist())
    assert np.all(np.diff(scores, axis=1) <= 0)


# --------------------------------------------------------------------------- sampled softmax
def test_logq_corrected_sampled_softmax_estimates_full_softmax():
    """With log-Q correction, popularity- or batch-drawn negatives give a loss close to full
    softmax; without it the same draws are biased (the test can tell them apart)."""
    torch.manual_seed(0)
    n_items, d, n = 2000, 16, 64
    emb = torch.randn(n_items + 1, d) * 0.5
    h = torch.randn(n, d)
    counts = np.zeros(n_items + 1)
    counts[1:] = 1000.0 / np.arange(1, n_items + 1) ** 1.1
    pos = torch.as_tensor(np.random.default_rng(0).choice(np.arange(1, n_items + 1), n, p=counts[1:] / counts[1:].sum()))
    logits = h @ emb[1:].T
    full = torch.nn.functional.cross_entropy(logits, pos - 1).item()
    gen = torch.Generator().manual_seed(0)
    tables = popularity_tables(counts, smoothing=0.0)
    est, raw = [], []
    for _ in range(20):
        negs, logq = draw_negatives("popularity", 4000, n_items, pos, gen, tables)
        pl, nl = (h * emb[pos]).sum(-1, keepdim=True), h @ emb[negs].T
        est.append(sampled_softmax_loss(pl, nl, pos, negs, logq).item())
        raw.append(sampled_softmax_loss(pl, nl, pos, negs, None).item())
    # the corrected estimate omits the positive's own term from the negatives: close, not exact
    assert abs(np.mean(est) - full) < 0.1 * full, (np.mean(est), full)
    assert abs(np.mean(raw) - full) > 2 * abs(np.mean(est) - full)


@pytest.mark.parametrize("sampler", ["uniform", "popularity", "in_batch"])
def test_sasrec_sampled_softmax_trains(large, sampler):
    split = leave_one_out(SequenceData.load(large))
    torch.manual_seed(0)
    model = build_model("sasrec", n_items=split.data.n_items, maxlen=20, hidden_units=16, num_blocks=1, num_heads=1,
                        loss="sampled", num_negatives=128, negative_sampler=sampler)
    assert model.loss_name == "sampled_softmax"
    if sampler == "popularity":
        model.set_item_counts(item_popularity(split.data, split.train_len))
    ds = CausalDataset(split, 20)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(30):
        batch = ds.get_batch(torch.arange(step * 64, step * 64 + 64) % len(ds), gen)
        loss = model.training_loss(batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert ("negative_sampler" in model.model_args) == (sampler != "uniform")


def test_popularity_sampler_without_counts_is_a_clear_error():
    model = build_model("sasrec", n_items=50, maxlen=5, hidden_units=8, num_blocks=1, num_heads=1,
                        loss="sampled_softmax", num_negatives=8, negative_sampler="popularity")
    batch = {"input": torch.tensor([[1, 2, 3]]), "target": torch.tensor([[2, 3, 4]])}
    with pytest.raises(ConfigError, match="set_item_counts"):
        model.training_loss(batch)


# --------------------------------------------------------------------------- full-softmax guard
def test_full_softmax_guard_message():
    with pytest.raises(ConfigError) as info:
        check_full_softmax("ce", 256, 50, 1_000_000, available=8 * 2**30)
    msg = str(info.value)
    assert "\n" not in msg and "model.loss=sampled_softmax" in msg and "GiB" in msg and "1000000 items" in msg
    check_full_softmax("ce", 256, 50, 12_000, available=8 * 2**30)  # Beauty-sized: fine
    check_full_softmax("sampled_softmax", 256, 50, 10**9, available=1)  # sampled never refused


def test_full_softmax_guard_stops_a_run_before_training(tmp_path):
    """A 1M-item catalog with the default loss=ce: one error line, exit 2, no training."""
    data_dir = tmp_path / "big-catalog"
    generate_large(data_dir, LargeSpec(interactions=30_000, items=1_000_000, users=3_000, seed=0), progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECSYS_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "distillation.training", "--config", "configs/distillation/sasrec.yaml",
                        "--override", f"data.dataset={data_dir},training.batch_size=4096,epochs=1"],
                       capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "model.loss=sampled_softmax" in last and "full softmax" in last
    assert "epoch   1/" not in r.stdout  # refused before the first batch


# --------------------------------------------------------------------------- torchrun
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_c10d_gloo(tmp_path):
    """2 ranks through torchrun's c10d rendezvous: disjoint shards, identical parameters."""
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{_free_port()}",
           "-m", "core.dist_check", "--out", str(out), "--users", "201", "--epochs", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=240,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world"] == 2 and summary["backend"] == "gloo"
    assert summary["disjoint"] and summary["covered"] and summary["identical_params"] and summary["params_changed"]
    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]
    for epoch in ("1", "2"):
        a, b = set(ranks[0]["rows"][epoch]), set(ranks[1]["rows"][epoch])
        assert len(a & b) <= summary["padding"] and len(a | b) == summary["rows"]
    assert ranks[0]["epoch_params"] == ranks[1]["epoch_params"]


# --------------------------------------------------------------------------- universal two-tower
def test_universal_inbatch_softmax_logq_correction():
    """The correction subtracts log(training share) per column: equal to a hand-built softmax."""
    from core.config import load_config
    from universal.config import UniversalConfig
    from universal.model import UniversalModel

    cfg = load_config(UniversalConfig, overrides="loss_type=softmax,logq_correction=true,"
                                                 "user.use_id_embedding=true,item.use_id_embedding=true")
    torch.manual_seed(0)
    model = UniversalModel({"user": [], "item": []}, cfg, 20, 30, 0)
    assert "item_logq" not in model.state_dict()  # checkpoints stay as they were
    counts = np.arange(31, dtype=np.float64) * 3
    model.set_item_counts(counts)
    pos = torch.tensor([1, 7, 29, 29])
    seen = torch.zeros(4, 4, dtype=torch.bool)
    seen[2, 3] = seen[3, 2] = True  # the same item twice: not a negative of each other
    batch = {"user": {"_id": torch.tensor([1, 2, 3, 4])}, "pos": {"_id": pos}, "inbatch_seen": seen}
    loss = model.training_loss(batch)["loss"]
    u, i = model.user_vectors(batch["user"], exclude_items=pos), model.item_vectors(batch["pos"])
    logq = torch.log(torch.as_tensor(counts + 1.0) / (counts + 1.0).sum()).float()
    logits = (u @ i.T - logq[pos].view(1, -1)).masked_fill(seen, -math.inf)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.arange(4)).item(), rel=1e-5)
    plain = (u @ i.T).masked_fill(seen, -math.inf)
    assert abs(loss.item() - torch.nn.functional.cross_entropy(plain, torch.arange(4)).item()) > 1e-4


def test_chunked_mode_sampled_negatives_are_valid(large):
    """At catalog scale the sampled protocol's negatives are drawn by rejection: distinct,
    never the target or a history item, and fixed by the seed."""
    split = leave_one_out(SequenceData.load(large))
    ev = Evaluator(split, "test", 20, sampled=(100,), max_users=300, item_chunk=4096)
    again = Evaluator(split, "test", 20, sampled=(100,), max_users=300, item_chunk=4096)
    negs = ev.negatives[100]
    assert torch.equal(negs, again.negatives[100])
    assert negs.min() >= 1 and negs.max() <= split.data.n_items
    for row, u, hl, t in zip(negs.tolist(), ev.part.users, ev.part.hist_len, ev.part.targets):
        assert len(set(row)) == 100
        assert not set(row) & (set(split.data.sequence(int(u))[:hl].tolist()) | {int(t)})


def test_universal_mixed_sampled_softmax_matches_hand_computation():
    """loss_type=sampled_softmax: one softmax over in-batch items and each row's uniform
    negatives, both log-Q corrected on one scale (B x share, k / n_items)."""
    from core.config import load_config
    from universal.config import UniversalConfig
    from universal.model import UniversalModel

    cfg = load_config(UniversalConfig, overrides="loss_type=sampled_softmax,logq_correction=true,"
                                                 "user.use_id_embedding=true,item.use_id_embedding=true")
    torch.manual_seed(0)
    model = UniversalModel({"user": [], "item": []}, cfg, 20, 30, 0)
    counts = np.arange(31, dtype=np.float64)
    model.set_item_counts(counts)
    pos, negs = torch.tensor([1, 7, 29]), torch.tensor([[3, 4], [5, 6], [8, 9]])
    weight = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # row 1 drew one negative only
    batch = {"user": {"_id": torch.tensor([1, 2, 3])}, "pos": {"_id": pos}, "neg": {"_id": negs.flatten()},
             "neg_weight": weight, "inbatch_seen": torch.zeros(3, 3, dtype=torch.bool)}
    loss = model.training_loss(batch)["loss"]
    u, i = model.user_vectors(batch["user"]), model.item_vectors(batch["pos"])
    n = model.item_vectors({"_id": negs.flatten()}).view(3, 2, -1)
    logq = torch.log(torch.as_tensor(counts + 1.0) / (counts + 1.0).sum()).float()
    inb = u @ i.T - (logq[pos] + math.log(3)).view(1, -1)
    neg = (u.unsqueeze(1) * n).sum(-1) - math.log(2 / 30)
    neg[1, 1] = -math.inf
    want = torch.nn.functional.cross_entropy(torch.cat([inb, neg], 1), torch.arange(3))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_universal_pipeline_trains_with_sampled_softmax(tmp_path):
    from core.config import load_config
    from core.store import atomic_write_json
    from universal.config import UniversalConfig
    from universal.pipeline import Pipeline
    from universal.synthetic import UniversalSpec, generate

    path = tmp_path / "planted.json"
    atomic_write_json(path, generate(UniversalSpec(n_users=120, n_items=60, seed=3)))
    cfg = load_config(UniversalConfig, REPO_ROOT / "configs/universal/synthetic.yaml",
                      f"home={tmp_path / 'home'},device=cpu,num_epochs=2,batch_size=64,loss_type=sampled_softmax,"
                      "logq_correction=true,negative_sampling_ratio=4")
    report = Pipeline(cfg, log=lambda *a, **k: None).fit(path)
    assert math.isfinite(report["test"]["NDCG@10"]) and report["epochs_run"] == 2
