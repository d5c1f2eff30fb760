"""persona_training: strict loaders, InfoNCE, training on the planted synthetic data, memmap caches,
reranking, the command-line front, and a short run on the Amazon sample (skipped without ../shared)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.candidates import candidate_metrics, read_ground_truth, read_scored_candidates
from core.errors import DataError
from core.text import default_model_path
from persona_training import caches, encoder, schema, synthetic, texts
from persona_training.config import TrainSection
from persona_training.scoring import Scorer, as_ranked, rerank_lists

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    """The synthetic default, generated once for the module."""
    return synthetic.generate(tmp_path_factory.mktemp("syn"))


@pytest.fixture(scope="module")
def base_model():
    torch.set_num_threads(1)
    return encoder.load_encoder()


# --------------------------------------------------------------------------- loaders
PERSONA = {"ID": "P1", "Name": "N", "Description": "D", "Preference_Rationale": "R", "Item_Summary": "S",
           "unique_persona_id": "i1_P1"}
REVIEW = {"user_id": "u1", "item_id": "i9", "review_title": "t", "summary": "s",
          "extracted": {"category_preference": "x", "usage_context": None}, "timestamp": 1600000000000, "rating": 4.0}
SELECTION = {"user_id": "u1", "target_item_id": "i1", "selected_persona_id": "P1"}


@pytest.mark.parametrize("key", ["unique_persona_id", "Name", "Description", "Item_Summary", "Preference_Rationale"])
def test_persona_loader_names_file_line_and_missing_key(tmp_path, key):
    bad = {k: v for k, v in PERSONA.items() if k != key}
    path = _write(tmp_path / "p.jsonl", [{"item_id": "i0", "personas": [dict(PERSONA, unique_persona_id="i0_P1")]},
                                         {"item_id": "i1", "personas": [bad]}])
    with pytest.raises(DataError) as err:
        schema.load_personas(path)
    assert f"{path}:2:" in str(err.value) and f"personas[0].{key}" in str(err.value)


@pytest.mark.parametrize("key", ["user_id", "item_id", "review_title", "summary", "extracted", "rating", "timestamp"])
def test_history_loader_names_file_line_and_missing_key(tmp_path, key):
    bad = {k: v for k, v in REVIEW.items() if k != key}
    path = _write(tmp_path / "h.jsonl", [{"user_id": "u0", "reviews": [dict(REVIEW, user_id="u0")]},
                                         {"user_id": "u1", "reviews": [REVIEW, bad]}])
    with pytest.raises(DataError) as err:
        schema.load_history(path, "amazon")
    assert f"{path}:2:" in str(err.value) and f"reviews[1].{key}" in str(err.value)


@pytest.mark.parametrize("key", ["user_id", "target_item_id", "selected_persona_id"])
def test_selection_loader_names_file_line_and_missing_key(tmp_path, key):
    path = _write(tmp_path / "s.jsonl", [SELECTION, {k: v for k, v in SELECTION.items() if k != key}])
    with pytest.raises(DataError) as err:
        schema.load_selections(path, {"i1": [schema.Persona("i1_P1", "i1", "P1", "N", "D", "S", "R")]})
    assert f"{path}:2:" in str(err.value) and repr(key) in str(err.value)


def test_loader_rejects_wrong_types_bad_lines_and_unknown_personas(tmp_path):
    personas = {"i1": [schema.Persona("i1_P1", "i1", "P1", "N", "D", "S", "R")]}
    cases = [
        ("h.jsonl", [{"user_id": "u1", "reviews": [dict(REVIEW, rating="4")]}], "history", "reviews[0].rating' should be int or float"),
        ("h.jsonl", [{"user_id": "u1", "reviews": [dict(REVIEW, timestamp="2020-01-01")]}], "history", "reviews[0].timestamp' should be int"),
        ("h.jsonl", ['{"user_id": "u1", "reviews": [}'], "history", ":1: malformed JSON"),
        ("s.jsonl", [dict(SELECTION, selected_persona_id="P7")], "select", "persona 'P7' does not exist for item 'i1'"),
        ("s.jsonl", [dict(SELECTION, target_item_id="i5")], "select", "item 'i5' has no personas"),
    ]
    for name, rows, kind, expected in cases:
        path = _write(tmp_path / name, rows)
        with pytest.raises(DataError, match=None) as err:
            schema.load_history(path, "amazon") if kind == "history" else schema.load_selections(path, personas)
        assert expected in str(err.value) and str(path) in str(err.value), (expected, str(err.value))
    # Yelp: business_id (or item_id) and text timestamps; a wrong one is named
    yelp = dict(REVIEW, timestamp="2017-10-09 04:08:23")
    yelp["business_id"] = yelp.pop("item_id")
    ok = schema.load_history(_write(tmp_path / "y.jsonl", [{"user_id": "u1", "reviews": [yelp]}]), "yelp")
    assert ok["u1"][0].item_id == "i9"
    del yelp["business_id"]
    with pytest.raises(DataError, match=r"reviews\[0\].business_id' \(or 'item_id'\)"):
        schema.load_history(_write(tmp_path / "y.jsonl", [{"user_id": "u1", "reviews": [yelp]}]), "yelp")
    # a selection whose item is absent from the persona file falls back on the persona it carries
    emb = dict(SELECTION, target_item_id="i5", selected_persona={k: PERSONA[k] for k in ("ID", "Name", "Description", "Preference_Rationale")})
    sel = schema.load_selections(_write(tmp_path / "s.jsonl", [emb]), personas)
    assert sel[0].source == "embedded" and sel[0].persona.uid == "i5_P1"


def test_text_builders_and_pairs_keep_the_target_out(syn, tmp_path):
    data = schema.load_data({k: syn[k] for k in ("persona", "loo_history", "selected")}, "synthetic", with_selections=True)
    p = data.personas[next(iter(data.personas))][0]
    assert texts.persona_text(p, "N,D") == f"{p.name}. {p.description}"
    assert texts.persona_text(p, ["Preference_Rationale"]) == f"Why: {p.rationale}"
    r = next(iter(data.history.values()))[0]
    assert texts.interaction_text(r, "aspects").startswith(f"{r.title}. category preference: ")
    assert texts.interaction_text(r, "summary") == f"{r.title}. {r.summary} Rating: {r.rating:g}/5."
    pairs, stats = texts.build_pairs(data, fields="N,D,I")
    assert stats["source"] == "selected" and stats["pairs"] == len(pairs) == 240
    assert all(sel.persona.name in pair.target and pair.group == sel.item_id for pair, sel in zip(pairs, data.selections))
    # a review of the target item in the history never reaches the pair; a history of only that is skipped
    hist = _write(tmp_path / "h.jsonl", [{"user_id": "u1", "reviews": [REVIEW, dict(REVIEW, item_id="i1", summary="TARGET")]},
                                         {"user_id": "u2", "reviews": [dict(REVIEW, user_id="u2", item_id="i1")]}])
    sel = _write(tmp_path / "s.jsonl", [SELECTION, dict(SELECTION, user_id="u2"), dict(SELECTION, user_id="u3")])
    small = schema.load_data({"persona": _write(tmp_path / "p.jsonl", [{"item_id": "i1", "personas": [PERSONA]}]),
                              "loo_history": hist, "selected": sel}, "amazon", with_selections=True)
    pairs, stats = texts.build_pairs(small, max_history=5)
    assert [p.history for p in pairs] == [["t. s Rating: 4/5."]] and pairs[0].target == "N. D Item: S"
    assert stats["empty_history"] == 1 and stats["users_without_history"] == 1


# --------------------------------------------------------------------------- loss and training
def test_info_nce_equals_hand_computed_value():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits / 0.5: row 0 = [2.0, 1.2], row 1 = [0.0, 1.6]
    row0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2)))
    row1 = -math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(1.6)))
    assert encoder.info_nce(u, t, 0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    col0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0)))
    col1 = -math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))
    assert encoder.info_nce(u, t, 0.5, symmetric=True).item() == pytest.approx(((row0 + row1) / 2 + (col0 + col1) / 2) / 2, rel=1e-6)
    # two rows of the same target item are not each other's negatives: nothing left to contrast
    assert encoder.info_nce(u, t, 0.5, groups=["i", "i"]).item() == pytest.approx(0.0, abs=1e-7)


def _persona_ranks(model, data, held, fields="N,D,I"):
    personas = [p for ps in data.personas.values() for p in ps]
    index = {p.uid: i for i, p in enumerate(personas)}
    scorer = Scorer(model)
    sims = scorer.user_vectors([texts.history_texts(data.history[s.user_id]) for s in held]) @ \
        scorer.embed([texts.persona_text(p, fields) for p in personas]).T
    right = np.array([index[s.persona.uid] for s in held])
    return (sims > sims[np.arange(len(held)), right][:, None]).sum(1)  # 0 = best of all 144 personas


def test_training_on_synthetic_default_raises_rank_of_right_persona(syn, base_model, tmp_path):
    data = schema.load_data({k: syn[k] for k in ("persona", "loo_history", "selected")}, "synthetic", with_selections=True)
    held = schema.load_selections(syn["heldout_selected"], data.personas, "synthetic")  # users never trained on
    before = _persona_ranks(base_model, data, held)
    pairs, _ = texts.build_pairs(data)
    cfg = TrainSection(max_steps=6, batch_size=16, learning_rate=1e-3, train_layers=1, device="cpu", log_every=3)
    model = copy.deepcopy(base_model)
    res = encoder.train_pairs(pairs, cfg, model=model, out_dir=tmp_path, meta={"fields": "N,D,I"}, show_progress=False)
    after = _persona_ranks(model, data, held)
    mrr_before, mrr_after = float(np.mean(1 / (before + 1))), float(np.mean(1 / (after + 1)))
    assert mrr_after > mrr_before + 0.04 and after.mean() < before.mean() - 8, (mrr_before, mrr_after, before.mean(), after.mean())
    assert res.steps == 6 and res.last_loss < res.first_loss
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [3, 6] and all(row["pairs_per_s"] > 0 for row in log)
    assert encoder.read_meta(tmp_path / "model")["steps"] == 6
    # the saved folder is a model of its own: it reproduces the trained embeddings
    again = encoder.load_encoder(tmp_path / "model")
    probe = [texts.persona_text(held[0].persona)]
    np.testing.assert_allclose(encoder.embed_texts(again, probe), encoder.embed_texts(model, probe), atol=1e-5)


# --------------------------------------------------------------------------- caches
def test_memmap_cache_round_trip_reuse_and_rebuild(base_model, tmp_path):
    groups = [("u1", [("a", "a quiet book about tea"), ("b", "a loud thriller")]), ("u2", [("c", "space ships")])]
    index = tmp_path / "cache" / "interactions.json"
    logs = []
    cache, built = caches.build_cache(index, groups, None, settings={"mode": "summary"}, log=logs.append)
    assert built and cache.vectors.dtype == np.float16 and cache.vectors.shape == (3, 384)
    meta = json.loads(index.read_text())
    assert meta["ids"] == ["u1", "u2"] and meta["offsets"] == [0, 2, 3] and meta["row_ids"] == ["a", "b", "c"]
    assert meta["model"].startswith("all-MiniLM-L6-v2-") and meta["shape"] == [3, 384]
    expected = encoder.embed_texts(base_model, [t for _k, rows in groups for _r, t in rows])
    reopened = caches.open_cache(index)
    np.testing.assert_allclose(reopened.rows("u1").astype(np.float32), expected[:2], atol=2e-3)
    assert reopened.rows("nobody") is None
    data_file = tmp_path / "cache" / meta["data"]
    stamp = data_file.stat().st_mtime_ns
    _, built = caches.build_cache(index, groups, None, settings={"mode": "summary"}, log=logs.append)
    assert not built and data_file.stat().st_mtime_ns == stamp and "reused" in logs[-1]
    # changed inputs: rebuilt, and the superseded data file is gone
    changed = [groups[0], ("u2", [("c", "space ships and aliens")])]
    cache2, built = caches.build_cache(index, changed, None, settings={"mode": "summary"}, log=logs.append)
    assert built and not data_file.exists() and "inputs changed" in logs[-2]
    # the per-device worker of a multi-GPU build writes its shard in place: two shards = one pass
    shape = (3, 384)
    sharded = tmp_path / "sharded.f16"
    np.memmap(sharded, dtype=np.float16, mode="w+", shape=shape).flush()
    texts_ = [t for _k, rows in changed for _r, t in rows]
    for a, b in ((0, 2), (2, 3)):
        caches._encode_shard(str(default_model_path()), "cpu", texts_[a:b], str(sharded), a, shape, 64, True)
    np.testing.assert_allclose(np.memmap(sharded, dtype=np.float16, mode="r", shape=shape), cache2.vectors, atol=2e-3)
    # changed model (same weights, shorter max_seq_length): rebuilt
    other = tmp_path / "model2"
    shutil.copytree(default_model_path(), other)
    cfg = json.loads((other / "sentence_bert_config.json").read_text())
    (other / "sentence_bert_config.json").write_text(json.dumps(dict(cfg, max_seq_length=128)))
    _, built = caches.build_cache(index, changed, other, settings={"mode": "summary"}, log=logs.append)
    assert built and "built with model" in logs[-2]


# --------------------------------------------------------------------------- rerank
def test_rerank_metrics_on_hand_made_candidates(tmp_path):
    cand = _write(tmp_path / "cand.jsonl", [
        {"user_id": "u1", "results": [{"item_id": "A", "score": 0.9}, {"item_id": "[PAD]", "score": 0.8},
                                      {"item_id": "X", "score": 0.7}, {"item_id": "B", "score": 0.6}]},
        {"user_id": "u2", "results": [{"item_id": "A", "score": 0.5}, {"item_id": "B", "score": 0.4}]},
        {"user_id": "u3", "results": [{"item_id": "B", "score": 0.3}, {"item_id": "A", "score": 0.2}]},
    ])
    gt = _write(tmp_path / "gt.jsonl", [{"user_id": "u1", "item_id": "B"}, {"user_id": "u2", "item_id": "A"},
                                        {"user_id": "u3", "item_id": "A"}])
    users = {"u1": np.array([0.0, 1.0], np.float32), "u2": np.array([0.6, 0.8], np.float32)}  # u3: no history
    items = {"A": np.array([[1.0, 0.0]]), "B": np.array([[0.0, 1.0], [1.0, 0.0]])}  # X: no personas
    candidates, truth = read_scored_candidates(cand), read_ground_truth(gt)
    out, counts = rerank_lists(candidates, users.get, items.get, agg="max")
    # u1: B (1.0) moves to A's slot; [PAD] and X keep theirs. u2: A 0.6 vs B max(0.8, 0.6) -> B first.
    assert [e["item_id"] for e in out["u1"]] == ["B", "[PAD]", "X", "A"]
    assert [e["item_id"] for e in out["u2"]] == ["B", "A"] and [e["item_id"] for e in out["u3"]] == ["B", "A"]
    assert counts == {"users": 3, "candidates": 8, "pads": 1, "users_without_history": 1, "unknown_items": 1,
                      "users_scored": 2, "scored": 4, "users_unchanged": 1, "users_without_upstream_scores": 0,
                      "pads_dropped": 0}
    res = candidate_metrics(as_ranked(out), truth, [1, 2])
    assert res["HR@1"] == pytest.approx(1 / 3) and res["HR@2"] == pytest.approx(1.0)
    assert res["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(3)) / 3)
    assert res["MRR"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # mean over personas: B = 0.7 for u2 -> still first; pad=drop removes the slot and counts it
    out, counts = rerank_lists(candidates, users.get, items.get, agg="mean", pad="drop")
    assert [e["item_id"] for e in out["u1"]] == ["B", "X", "A"] and counts["pads_dropped"] == 1
    # full weight on the upstream score gives back the upstream order of the scored items
    out, _ = rerank_lists(candidates, users.get, items.get, fusion_weight=1.0)
    assert [e["item_id"] for e in out["u2"]] == ["A", "B"]


# --------------------------------------------------------------------------- command line
def _cli(module, argv, capsys):
    from core.cli import run

    with pytest.raises(SystemExit) as exc:
        run(module.main, argv)
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    from persona_training import build_cache, train_encoder
    from persona_training.config import RerankStage, load_stage

    code, _out, err = _cli(train_encoder, ["--override", "max_stepz=3"], capsys)
    assert code == 2 and err.count("\n") == 1 and "max_stepz" in err and "max_steps" in err
    bad = _write(tmp_path / "h.jsonl", [{"user_id": "u1", "reviews": [{k: v for k, v in REVIEW.items() if k != "rating"}]}])
    _write(tmp_path / "p.jsonl", [{"item_id": "i1", "personas": [PERSONA]}])
    data_cfg = _write(tmp_path / "data.yaml", ["persona: p.jsonl", "loo_history: h.jsonl", f"out_root: {tmp_path}"])
    code, _out, err = _cli(build_cache, ["--data_cfg", str(data_cfg), "--model_dir", "default"], capsys)
    assert code == 2 and err.startswith("error: ") and f"{bad}:1: missing key 'reviews[0].rating'" in err
    assert not (tmp_path / "cache").exists()  # nothing half-written
    # data paths resolve against the YAML's folder; the old key name 'component' still works
    (tmp_path / "cfg").mkdir()
    _write(tmp_path / "cfg" / "data.yaml", ["persona: files/p.jsonl"])
    _write(tmp_path / "cfg" / "rerank.yaml", ["component: aspects"])
    cfg = load_stage(RerankStage, {"data": tmp_path / "cfg" / "data.yaml", "rerank": tmp_path / "cfg" / "rerank.yaml"})
    assert cfg.data.persona == str(tmp_path / "cfg" / "files" / "p.jsonl") and cfg.rerank.mode == "aspects"


# --------------------------------------------------------------------------- real data
def test_amazon_sample_loads_trains_and_reranks(shared_data, tmp_path, capsys):
    from persona_training import rerank, train_encoder

    sample = shared_data / "persona4rec" / "sample"
    for ds, reviews, embedded in (("amazon", 573, 50), ("yelp", 1539, 49)):
        data = schema.load_data({"persona": sample / ds / "3.5_persona_with_summary.jsonl",
                                 "loo_history": sample / ds / "3.5_history_loo.jsonl",
                                 "selected": sample / ds / "4_selected_personas.jsonl"}, ds, with_selections=True)
        assert len(data.history) == 50 and sum(map(len, data.history.values())) == reviews
        # the files barely join: most selected targets have no personas in the persona sample
        assert len(data.selections) == 50 and sum(s.source == "embedded" for s in data.selections) == embedded
    # a short run: 6 users' histories and 6 items' personas keep the caches small
    for name in ("3.5_history_loo.jsonl", "3.5_persona_with_summary.jsonl"):
        lines = (sample / "amazon" / name).read_text().splitlines()[:6]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    over = (f"out_root={tmp_path / 'out'},loo_history={tmp_path / '3.5_history_loo.jsonl'},"
            f"persona={tmp_path / '3.5_persona_with_summary.jsonl'},device=cpu")
    code, out, _err = _cli(train_encoder, ["--dataset", "amazon", "--override",
                                           over + ",max_steps=1,batch_size=2,max_history=2,max_seq_length=32,train_layers=1"], capsys)
    assert code == 0 and "trained 1 steps" in out and (tmp_path / "out" / "train" / "model" / "modules.json").is_file()
    code, out, _err = _cli(rerank, ["--dataset", "amazon", "--ks", "5,10,20", "--override", over], capsys)
    assert code == 0, out
    res = json.loads((tmp_path / "out" / "rerank" / "metrics.json").read_text())
    # the known answer: 21 of 46 upstream lists hold the target in the top 10; none of these users
    # has a history here, so every list keeps its upstream order and says so
    assert res["metrics"]["upstream"]["HR@10"] == pytest.approx(21 / 46)
    assert res["metrics"]["reranked"] == res["metrics"]["upstream"]
    assert res["counts"]["users"] == 46 and res["counts"]["users_without_history"] == 46 and res["counts"]["scored"] == 0
    assert len((tmp_path / "out" / "rerank" / "reranked.jsonl").read_text().splitlines()) == 46
