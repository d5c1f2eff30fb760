"""Universal two-tower pipeline (universal/): every encoder on hand-made inputs, statistics from
training data only, negative sampling, the label-leak guard, train -> save -> inference round
trip, planted structure vs popularity (generated data always; correlated_dataset.json when
../shared/data is present), the upstream configs, CLI error paths, JSONL / CSV inputs, custom
encoders, and the universal-movielens preparer on generated ML-100K / ML-1M layout files.

One module fixture trains once on a small generated dataset; everything runs in this process."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import run
from core.config import load_config
from core.errors import CheckpointError, ConfigError, DataError
from core.store import atomic_write_json
from universal.config import UniversalConfig
from universal.data import load_dataset, validate
from universal.encoders import (CategoricalEncoder, ImageEncoder, LinearEncoder, TemporalItemsEncoder,
                                TextEncoder, VectorEncoder)
from universal.evaluate import HoldoutEvaluator, TEST, TRAIN, pairs_by_user, temporal_holdout
from universal.features import build_tables, fit_schema
from universal.model import UniversalModel
from universal.pipeline import PairKeys, Pipeline, TrainRows, sample_negatives
from universal.synthetic import UniversalSpec, generate

REPO = Path(__file__).resolve().parent.parent
YAML = REPO / "configs/universal/synthetic.yaml"
QUIET = lambda *a, **k: None  # noqa: E731


def _cfg(home: Path, extra: str = "", path=None) -> UniversalConfig:
    return load_config(UniversalConfig, path, f"home={home},device=cpu" + (f",{extra}" if extra else ""))


def _tiny_raw(**over) -> dict:
    """3 users, 4 items; user 1 has 4 interactions, so one valid and one test hold-out."""
    raw = {
        "user_data": [
            {"user_id": "a", "categorical": {"job": "chef"}, "temporal": {"liked": [1, 2, 3, 4], "visits": [1, 3, 5]}},
            {"user_id": "b", "categorical": {"job": "pilot"}, "temporal": {"liked": [], "visits": []}},
            {"user_id": "c", "categorical": {"job": "poet"}, "temporal": {"liked": [2], "visits": [2.0]}},
        ],
        "item_data": [
            {"item_id": 1, "continuous": {"price": 1.0}, "categorical": {"tags": ["x", "y"]}},
            {"item_id": 2, "continuous": {"price": 3.0}, "categorical": {"tags": "x"}},
            {"item_id": 3, "continuous": {"price": 1e6}},  # seen only in held-out interactions
            {"item_id": 4, "continuous": {"price": 1e6}, "categorical": {"tags": ["z"]}},
        ],
        "interactions": [
            {"user_id": "a", "item_id": 1, "timestamp": "2024-01-01T00:00:00"},
            {"user_id": "a", "item_id": 2, "timestamp": "2024-01-02T00:00:00"},
            {"user_id": "a", "item_id": 3, "timestamp": "2024-01-03T00:00:00"},
            {"user_id": "a", "item_id": 4, "timestamp": "2024-01-04T00:00:00"},
            {"user_id": "b", "item_id": 2, "timestamp": 1704153600},
            {"user_id": "c", "item_id": 1, "timestamp": 1704153600},
        ],
    }
    raw.update(over)
    return raw


def _tiny(tmp_path, cfg=None, **over):
    data = validate(_tiny_raw(**over), tmp_path / "tiny.json")
    part = temporal_holdout(data, 0.5)
    cfg = cfg or _cfg(tmp_path)
    schema = fit_schema(data, part == TRAIN, cfg, {}, log=QUIET)
    return data, part, schema, cfg


def _spec(schema: dict, tower: str, name: str) -> dict:
    return next(s for s in schema[tower] if s["name"] == name)


# =========================================================================== encoders
def test_split_holds_out_last_items_by_time(tmp_path):
    data, part, _, _ = _tiny(tmp_path)
    a = data.users.lookup("a")
    rows = data.user_idx == a
    assert part[rows].tolist() == [0, 0, 1, 2]  # 4 interactions: 2 train, then validation, then test
    assert (part[~rows] == TRAIN).all()  # fewer than 3 interactions: training only


def test_categorical_unknown_value_and_multi_valued(tmp_path):
    data, part, schema, cfg = _tiny(tmp_path)
    spec = _spec(schema, "item", "categorical")
    assert spec["vocab"]["tags"] == {"x": 1, "y": 2}  # 'z' only on item 4 (held out): not in the vocabulary
    t = build_tables(schema["item"], data.items, cfg, item_index=data.items.lookup, text_cache=None, source=data.source)
    idx, mask = t["categorical/idx"], t["categorical/mask"]
    assert idx[1, 0].tolist() == [1, 2] and mask[1, 0].tolist() == [True, True]  # multi-valued
    assert idx[4, 0, 0] == 0 and idx[3, 0, 0] == 0  # unseen value and missing field -> the unknown row
    enc = CategoricalEncoder([spec["rows"]["tags"]], 8, mean=False, hidden=[])
    out = enc({"idx": idx, "mask": mask}, {})
    assert out.shape == (5, 1, 8)
    assert torch.allclose(out[4, 0], enc.tables[0].weight[0]) and torch.allclose(out[1, 0], enc.tables[0].weight[1:3].mean(0))
    # hashed rows stay within the table and keep row 0 for unknown values
    hashed = fit_schema(data, part == TRAIN, _cfg(tmp_path, "hash_vocab_size=16"), {}, log=QUIET)
    vocab = _spec(hashed, "item", "categorical")["vocab"]["tags"]
    assert set(vocab) == {"x", "y"} and all(1 <= r <= 16 for r in vocab.values())


def test_continuous_statistics_come_from_training_data_only(tmp_path):
    data, part, schema, cfg = _tiny(tmp_path)
    spec = _spec(schema, "item", "continuous")
    # items 1 and 2 are in training interactions; 3 and 4 (price 1e6) only in held-out ones
    assert spec["mean"] == [2.0] and spec["std"] == [1.0]
    # new data at inference time is normalized with the stored statistics, never refitted
    t = build_tables(schema["item"], data.items, cfg, item_index=data.items.lookup, text_cache=None, source=data.source)
    assert t["continuous/x"][1:, 0].tolist() == [-1.0, 1.0, 1e6 - 2.0, 1e6 - 2.0]
    assert t["continuous/present"][0].tolist() == [False]  # row 0: all missing


def test_temporal_item_lists_series_and_empty_lists(tmp_path):
    data, part, schema, cfg = _tiny(tmp_path)
    kinds = {s["name"]: s["kind"] for s in schema["user"]}
    assert kinds["temporal.liked"] == "temporal_items" and kinds["temporal.visits"] == "temporal_series"
    t = build_tables(schema["user"], data.users, cfg, item_index=data.items.lookup, text_cache=None, source=data.source)
    assert not t["temporal.visits/present"][2] and t["temporal.visits/present"][1]
    items = torch.nn.Embedding(5, 4)
    enc = TemporalItemsEncoder(4, 4, "mean_pooling")
    out = enc({"ids": t["temporal.liked/ids"]}, {"item_table": items})[:, 0]
    assert torch.allclose(out[2], enc.empty)  # user b: empty list -> the learned empty vector
    assert torch.allclose(out[1], items.weight[1:5].mean(0))
    # the excluded item (the training target) is left out of the pooled list
    excl = enc({"ids": t["temporal.liked/ids"]}, {"item_table": items, "exclude_items": torch.tensor([0, 4, 0, 0])})[:, 0]
    assert torch.allclose(excl[1], items.weight[1:4].mean(0))
    series = VectorEncoder(6, 4)
    s = series({"x": t["temporal.visits/x"], "present": t["temporal.visits/present"]}, {})[:, 0]
    assert torch.allclose(s[2], series.missing)


def test_image_files_npy_vectors_and_missing_files(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "red.png")
    np.save(tmp_path / "v1.npy", np.arange(5, dtype=np.float32))
    raw = _tiny_raw()
    raw["item_data"][0]["image"] = {"photo": "red.png", "vec": "v1.npy"}
    raw["item_data"][1]["image"] = {"photo": "missing.jpg", "vec": "gone.npy"}
    lines: list[str] = []
    data, part, schema, cfg = _tiny(tmp_path, **{"item_data": raw["item_data"]})
    kinds = {s["name"]: s for s in schema["item"]}
    assert kinds["image.photo"]["kind"] == "image" and kinds["image.vec"] == {
        "name": "image.vec", "kind": "image_vector", "fields": ["vec"], "dim": 5}
    t = build_tables(schema["item"], data.items, cfg, item_index=data.items.lookup, text_cache=None,
                     source=data.source, log=lines.append)
    warnings = [x for x in lines if x.startswith("warning:")]
    assert len(warnings) == 2 and "1 of 2 files missing" in warnings[0] and "missing.jpg" in warnings[0]
    assert t["image.photo/present"].tolist() == [False, True, False, False, False]
    assert t["image.photo/x"][1, 0].float().mean() > 250 and t["image.photo/x"].shape[-2:] == (32, 32)
    assert t["image.vec/x"][1].tolist() == [0, 1, 2, 3, 4]
    enc = ImageEncoder([4, 8], 6)
    out = enc({"x": t["image.photo/x"], "present": t["image.photo/present"]}, {})[:, 0]
    assert torch.allclose(out[2], enc.missing) and not torch.allclose(out[1], enc.missing)


def test_text_fields_with_a_missing_value(tmp_path):
    raw = _tiny_raw()
    for n, rec in enumerate(raw["item_data"]):
        rec["text"] = {"title": f"item number {n}"} if n != 2 else {}
    data, part, schema, cfg = _tiny(tmp_path, item_data=raw["item_data"])
    t = build_tables(schema["item"], data.items, cfg, item_index=data.items.lookup, text_cache=tmp_path / "cache",
                     source=data.source)
    assert t["text/x"].shape == (5, 1, 384) and t["text/present"][:, 0].tolist() == [False, True, True, False, True]
    assert abs(float(t["text/x"][1, 0].norm()) - 1.0) < 1e-4
    assert (tmp_path / "cache").is_dir()  # embeddings are cached under the given folder
    enc = TextEncoder(1, 384, 8, mean=True)
    out = enc({"x": t["text/x"], "present": t["text/present"]}, {})
    assert torch.allclose(out[3, 0], enc.missing[0])


# =========================================================================== sampling and the leak guard
def test_negatives_never_include_training_items():
    n_items = 30
    users = torch.tensor([1] * 28 + [2] * 3 + [3])  # user 1 has seen all but items 29 and 30
    items = torch.tensor(list(range(1, 29)) + [1, 2, 3] + [5])
    seen = PairKeys(users, items, n_items)
    gen = torch.Generator().manual_seed(0)
    batch_users = torch.tensor([1, 2, 3] * 50)
    neg = sample_negatives(batch_users, 6, seen, n_items, gen)
    assert neg.min() >= 1 and neg.max() <= n_items
    assert not seen.contains(batch_users.view(-1, 1).expand(-1, 6), neg).any()
    assert set(neg[batch_users == 1].flatten().tolist()) == {29, 30}
    again = sample_negatives(batch_users, 6, seen, n_items, torch.Generator().manual_seed(0))
    assert torch.equal(neg, again)  # fixed seed, same draws


def test_fractional_ratio_and_in_batch_mask(tmp_path):
    data, part, schema, cfg = _tiny(tmp_path)
    cfg = _cfg(tmp_path, "negative_sampling_ratio=1.5,loss_type=bce+softmax")
    tables = {"user": {"_id": torch.arange(4)}, "item": {"_id": torch.arange(5)}}
    train = part == TRAIN
    rows = TrainRows(data.user_idx[train], data.item_idx[train], tables, data.n_items, cfg, "cpu")
    b = rows.get_batch(torch.arange(len(rows)), torch.Generator().manual_seed(1))
    assert b["neg_weight"].shape == (len(rows), 2) and (b["neg_weight"][:, 0] == 1).all()
    seen = pairs_by_user(data.user_idx[train], data.item_idx[train])
    for u, negs in zip(b["user"]["_id"].tolist(), b["neg"]["_id"].view(len(rows), 2).tolist()):
        assert not set(negs) & seen[u]
    # two rows of user a: each sees the other's item as already seen, not as a negative
    a_rows = torch.nonzero(b["user"]["_id"] == data.users.lookup("a")).flatten()
    assert b["inbatch_seen"][a_rows[0], a_rows[1]] and not b["inbatch_seen"].diagonal().any()


def test_held_out_items_never_reach_the_user_item_lists(tmp_path):
    path = tmp_path / "s.json"
    atomic_write_json(path, generate(UniversalSpec(n_users=60, n_items=30, seed=5)))
    data = load_dataset(path)
    part = temporal_holdout(data, 0.8)
    cfg = _cfg(tmp_path)
    schema = fit_schema(data, part == TRAIN, cfg, {}, log=QUIET)
    held = pairs_by_user(data.user_idx[part > TRAIN], data.item_idx[part > TRAIN])
    tables = build_tables([_spec(schema, "user", "temporal.recent_items")], data.users, cfg, item_index=data.items.lookup,
                          text_cache=None, source=data.source, drop_items=held)
    ids = tables["temporal.recent_items/ids"]
    train = pairs_by_user(data.user_idx[part == TRAIN], data.item_idx[part == TRAIN])
    for u in range(1, data.n_users + 1):
        listed = set(ids[u][ids[u] > 0].tolist())
        assert not listed & held.get(u, set())  # no held-out item in the feature
        assert listed == train[u]  # in this data the list equals the interactions: the training part remains
    assert any(held.values())
    # drop: the feature goes away with a notice
    notes: list[str] = []
    dropped = fit_schema(data, part == TRAIN, _cfg(tmp_path, "user_item_lists=drop"), {}, log=notes.append)
    assert "temporal.recent_items" not in [s["name"] for s in dropped["user"]] and any("dropped" in n for n in notes)



def test_drop_feature_types_leaves_a_type_out_of_both_towers(tmp_path):
    from universal.config import MODEL_KEYS

    _, _, full, _ = _tiny(tmp_path)
    names = lambda schema: {t: [s["name"] for s in schema[t]] for t in ("user", "item")}  # noqa: E731
    assert "categorical" in names(full)["user"] and "categorical" in names(full)["item"]
    notes: list[str] = []
    data, part, _, _ = _tiny(tmp_path)
    cfg = _cfg(tmp_path, "drop_feature_types=[categorical,temporal]")
    schema = fit_schema(data, part == TRAIN, cfg, {}, log=notes.append)
    assert names(schema) == {"user": [], "item": ["continuous"]}
    assert any("categorical, temporal" in n and "drop_feature_types" in n for n in notes)
    # the user tower is left without inputs unless it has an id embedding: the model says so
    with pytest.raises(ConfigError, match="user tower has no inputs"):
        UniversalModel(schema, cfg, data.n_users, data.n_items, 8)
    UniversalModel(schema, _cfg(tmp_path, "drop_feature_types=[categorical,temporal],user_use_id_embedding=true"),
                   data.n_users, data.n_items, 8)
    with pytest.raises(ConfigError, match="unknown feature type 'audio'"):
        fit_schema(data, part == TRAIN, _cfg(tmp_path, "drop_feature_types=[audio]"), {}, log=QUIET)
    assert fit_schema(data, part == TRAIN, _cfg(tmp_path, "drop_feature_types=[audio]"), {"audio": "linear"},
                      log=QUIET)["user"]  # a custom type can be dropped too
    assert "drop_feature_types" in MODEL_KEYS  # inference refuses a config that drops other types

# =========================================================================== training and inference
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("universal")
    path = root / "planted.json"
    atomic_write_json(path, generate(UniversalSpec(n_users=240, n_items=96, p_taste=0.85, seed=11)))
    cfg = _cfg(root / "home", "num_epochs=8,batch_size=128,learning_rate=0.005,patience=0", YAML)
    pipe = Pipeline(cfg, log=QUIET)
    return pipe, pipe.fit(path), path, root


def test_planted_generated_data_beats_popularity(trained):
    _, report, _, _ = trained
    test, pop = report["test"], report["popularity"]["test"]
    assert report["counts"]["test_users"] == 240
    assert test["NDCG@10"] > pop["NDCG@10"] + 0.05, (test, pop)
    assert test["HR@10"] > pop["HR@10"] and test["AUC"] > pop["AUC"] + 0.05
    run_dir = Path(report["run_dir"])
    assert {"best.pt", "last.pt", "config.yaml", "metrics.jsonl", "results.json"} <= {p.name for p in run_dir.iterdir()}
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8 and "AUC" in json.loads(lines[0])["valid"]
    assert json.loads((run_dir / "results.json").read_text())["best_epoch"] == report["best_epoch"]



def test_measure_fit_times_the_load_and_a_capped_epoch(tmp_path):
    from universal.pipeline import measure_fit

    path = tmp_path / "planted.json"
    atomic_write_json(path, generate(UniversalSpec(n_users=120, n_items=60, seed=4)))
    cfg = _cfg(tmp_path / "home", "num_epochs=1,batch_size=64,training.max_steps_per_epoch=2,"
                                  "training.save_checkpoints=false", YAML)
    lines = []
    out = measure_fit(cfg, path, log=lines.append)
    assert any(" interactions (train " in x for x in lines)  # the fit's own log goes through
    assert out["rows_timed"] == 128 and out["batches_timed"] == 2 and out["batch_size"] == 64
    assert out["interactions_per_s"] == pytest.approx(128 / out["train_seconds_timed"])
    assert out["sec_per_epoch"] == pytest.approx(out["train_interactions"] / out["interactions_per_s"])
    assert out["users"] == 120 and out["items"] == 60 and out["train_interactions"] < out["interactions"]
    assert 0 < out["load_seconds"] and 0 < out["peak_rss_after_load_mb"] <= out["peak_rss_mb"]
    assert math.isfinite(out["final_loss"]) and out["threads"] == torch.get_num_threads()


def test_auc_protocol_and_the_feature_types_present(tmp_path):
    from types import SimpleNamespace

    from universal.evaluate import auc_protocol

    full = SimpleNamespace(negatives=torch.tensor([[4, 5], [6, 7]]))
    some = SimpleNamespace(negatives=torch.tensor([[4, 5], [6, 0]]))
    none = SimpleNamespace(negatives=torch.tensor([[4, 0], [0, 0]]))
    assert auc_protocol(full) == ("sampled-2", {"auc_negatives_min": 2, "auc_negatives_mean": 2.0, "auc_negatives_max": 2})
    assert auc_protocol(some) == ("sampled-upto-2", {"auc_negatives_min": 1, "auc_negatives_mean": 1.5,
                                                     "auc_negatives_max": 2})
    assert auc_protocol(none)[0] == "all-unseen"
    data, *_ = _tiny(tmp_path)
    assert data.types_present() == {"categorical", "temporal", "continuous"}


def test_generate_scale_warm_encodes_the_titles_once(tmp_path, monkeypatch):
    import core.text
    from universal.synthetic import generate_scale_warm

    encoded = []
    monkeypatch.setattr(core.text, "encode_texts", lambda texts, show_progress=True: encoded.append(list(texts)))
    meta = generate_scale_warm(tmp_path / "s", interactions=400, users=40, items=30, seed=1)
    assert len(encoded) == 1 and len(encoded[0]) == 30 == meta["texts"] and len(set(encoded[0])) == 30
    assert (meta["interactions"], meta["users"], meta["items"]) == (400, 40, 30)
    assert meta["bytes"] == (tmp_path / "s" / "data.json").stat().st_size
    assert meta["generate_seconds"] >= 0 and meta["text_encode_seconds"] >= 0


def test_baselines_share_the_pipeline_split_and_evaluator(trained):
    from universal.baselines import MFSettings, holdout, popularity, train_mf

    pipe, report, path, root = trained
    split = holdout(pipe.cfg, path)
    assert popularity(split) == report["popularity"]  # same split, evaluator and AUC negatives as Pipeline.fit
    assert len(split.evals["test"]) == report["counts"]["test_users"]
    mf = train_mf(split, MFSettings(dim=16, epochs=3, batch_size=256, learning_rate=0.02, patience=0),
                  root / "mf", seed=3, log=QUIET)
    assert mf["epochs_run"] == 3 and 1 <= mf["best_epoch"] <= 3
    assert set(mf["test"]) >= {"NDCG@10", "HR@10", "Recall@10", "AUC"} and 0 <= mf["test"]["NDCG@10"] <= 1
    assert len((root / "mf" / "metrics.jsonl").read_text().splitlines()) == 3 and (root / "mf" / "best.pt").is_file()
    # negatives are never training items of the row's user
    from universal.baselines import MFRows

    train = split.part == TRAIN
    rows = MFRows(split.data.user_idx[train], split.data.item_idx[train], split.data.n_items, 4, "cpu")
    batch = rows.get_batch(torch.arange(len(rows)), torch.Generator().manual_seed(0))
    seen = pairs_by_user(split.data.user_idx[train], split.data.item_idx[train])
    assert all(not set(n) & seen[u] for u, n in zip(batch["user"].tolist(), batch["neg"].tolist()))

def test_round_trip_train_save_inference_gives_identical_scores(trained, capsys):
    from universal.inference import main

    pipe, report, path, root = trained
    in_memory = pipe.predict(path, top_k=5)
    loaded = Pipeline.load(report["checkpoint"], log=QUIET).predict(path, top_k=5)
    assert in_memory["scores"] == loaded["scores"] and in_memory["users"] == loaded["users"]
    out = root / "pred.json"
    with pytest.raises(SystemExit) as exc:
        run(main, ["--model_path", report["checkpoint"], "--config", str(YAML), "--data", str(path), "--top_k", "5",
                   "--output", str(out), "--override", f"home={root / 'home'},device=cpu"])
    assert exc.value.code == 0, capsys.readouterr().err
    written = json.loads(out.read_text())
    assert written["scores"] == json.loads(json.dumps(in_memory["scores"]))
    # raw ids out, seen items never recommended, top-K in score order
    data = load_dataset(path)
    seen = pairs_by_user(data.user_idx, data.item_idx)
    for n, uid in enumerate(data.users.ids[:20]):
        recs = written["users"][str(uid)]["top_k"]
        assert len(recs) == 5 and [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
        assert not {data.items.lookup(r["item_id"]) for r in recs} & seen[n + 1]
        best_unseen = max(s for i, s in written["scores"][str(uid)].items() if data.items.lookup(int(i)) not in seen[n + 1])
        assert recs[0]["score"] == best_unseen


def test_inference_refuses_a_config_of_another_model(trained, capsys):
    from universal.inference import main

    _, report, path, root = trained
    with pytest.raises(SystemExit) as exc:
        run(main, ["--model_path", report["checkpoint"], "--config", str(YAML), "--data", str(path),
                   "--override", "embedding_dim=32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "embedding_dim (32) differs from the checkpoint's (64)" in err[0]


def test_classifier_scorer_ranks_all_items_in_batches(tmp_path):
    data, part, schema, _ = _tiny(tmp_path)
    cfg = _cfg(tmp_path, "scorer=classifier,embedding_dim=16,classifier_hidden_dims=[8],"
                         "user_use_simple_fusion=false,user_num_attention_layers=1,user_num_heads=2,user_use_cls_token=true,"
                         "interaction_use_simple_fusion=false,interaction_num_attention_layers=1,interaction_num_heads=2")
    model = UniversalModel(schema, cfg, data.n_users, data.n_items, 0).eval()
    # the attention-fused user tower (CLS token) over real feature tables
    tables = build_tables(schema["user"], data.users, cfg, item_index=data.items.lookup, text_cache=None, source=data.source)
    tables["_id"] = torch.arange(data.n_users + 1)
    assert model.user_vectors(tables).shape == (data.n_users + 1, 16)
    u, i = torch.randn(3, 16), torch.randn(7, 16)
    full = model.score_matrix(u, i, pairs_per_chunk=4)  # forces several item chunks
    pairs = model.score_pairs(u.repeat_interleave(7, 0), i.repeat(3, 1)).view(3, 7)
    assert torch.allclose(full, pairs, atol=1e-5)
    ev = HoldoutEvaluator(data, part, TEST, ks=[1, 2], auc_negatives=5)
    res = ev.run(lambda users: torch.tensor([[-1e9, 4.0, 3.0, 2.0, 1.0]]).expand(len(users), -1))
    # user a's test item 4 scores lowest, but items 1-3 are known (excluded from the ranking): rank 1
    assert res["HR@1"] == 1.0
    assert res["AUC"] == 0.5  # user a has interacted with every item: no AUC negatives, chance by convention


def test_custom_encoders_in_python_and_by_config(tmp_path):
    raw = _tiny_raw()
    for n, rec in enumerate(raw["item_data"]):
        rec["audio"] = {"clip": [float(n), 1.0, 0.5, -1.0]}
    path = tmp_path / "audio.json"
    atomic_write_json(path, raw)
    with pytest.raises(DataError, match=r"audio\.json: item_data\[0\]: unknown feature type 'audio'.*add_encoder"):
        load_dataset(path)
    cfg = _cfg(tmp_path / "home", "num_epochs=1,train_split=0.5,embedding_dim=8,auc_negatives=2,text_encoder_config.embedding_dim=0")
    pipe = Pipeline(cfg, log=QUIET).add_encoder("audio", LinearEncoder(4, 6))
    report = pipe.fit(path)
    assert _spec(pipe.meta["schema"], "item", "audio.clip")["encoder"] == "python"
    with pytest.raises(CheckpointError, match="pipeline.add_encoder"):
        Pipeline.load(report["checkpoint"], log=QUIET)
    again = Pipeline.load(report["checkpoint"], custom={"audio": LinearEncoder(4, 6)}, log=QUIET)
    assert again.predict(path)["scores"] is not None
    # by config: a registered name or a module path the caller allowed, imported, never evaluated
    from universal.encoders import ALLOWED_MODULES, allow_encoder_module

    allow_encoder_module("universal.encoders")
    for spec in ("mlp", "universal.encoders:LinearEncoder"):
        c = _cfg(tmp_path / "home", f"num_epochs=1,train_split=0.5,embedding_dim=8,overwrite=true,"
                                    f"custom_encoders={{audio: '{spec}'}}")  # one folder, runs replace each other
        assert Pipeline(c, log=QUIET).fit(path)["epochs_run"] == 1
    allow_encoder_module("os")
    allow_encoder_module("no_such_pkg.x")
    for bad, msg in (("os:system", "not an nn.Module class"), ("__import__('os')", "not a registered encoder"),
                     ("no_such_pkg.x:Y", "cannot import"), ("json:JSONDecoder", "not allowed")):
        c = _cfg(tmp_path / "home", f"num_epochs=1,train_split=0.5,custom_encoders={{audio: \"{bad}\"}}")
        with pytest.raises(ConfigError, match=msg):
            Pipeline(c, log=QUIET).fit(path)
    ALLOWED_MODULES.clear()


# =========================================================================== inputs and errors
def test_jsonl_and_csv_inputs_match_json(tmp_path):
    import pandas as pd

    raw = _tiny_raw()
    js = validate(raw, tmp_path / "x.json")
    with open(tmp_path / "x.jsonl", "w") as fh:
        for kind, key in (("user", "user_data"), ("item", "item_data"), ("interaction", "interactions")):
            for rec in raw[key]:
                fh.write(json.dumps({"kind": kind, **rec}) + "\n")
    folder = tmp_path / "tables"
    folder.mkdir()
    pd.DataFrame([{"user_id": u["user_id"], "categorical.job": u["categorical"]["job"],
                   "temporal.liked": json.dumps(u["temporal"]["liked"]), "temporal.visits": json.dumps(u["temporal"]["visits"])}
                  for u in raw["user_data"]]).to_csv(folder / "users.csv", index=False)
    pd.DataFrame([{"item_id": i["item_id"], "continuous.price": i["continuous"]["price"],
                   "categorical.tags": json.dumps(i["categorical"]["tags"]) if "categorical" in i else None}
                  for i in raw["item_data"]]).to_csv(folder / "items.csv", index=False)
    pd.DataFrame(raw["interactions"]).assign(timestamp=[1704067200, 1704153600, 1704240000, 1704326400,
                                                        1704153600, 1704153600]).to_csv(folder / "interactions.csv", index=False)
    for other in (load_dataset(tmp_path / "x.jsonl"), load_dataset(folder)):
        assert [str(u) for u in other.users.ids] == [str(u) for u in js.users.ids]
        assert other.items.ids == js.items.ids
        assert other.user_idx.tolist() == js.user_idx.tolist() and other.item_idx.tolist() == js.item_idx.tolist()
        assert np.allclose(other.time, js.time)
    tables = load_dataset(folder)
    assert tables.users.features[0]["temporal"]["liked"] == [1, 2, 3, 4]
    assert tables.items.features[0]["categorical"]["tags"] == ["x", "y"] and "categorical" not in tables.items.features[2]


@pytest.mark.parametrize("change,message", [
    (lambda r: r["user_data"][0].update(audo={"x": 1}), r"user_data\[0\]: unknown feature type 'audo'; use one of"),
    (lambda r: r["interactions"].append({"user_id": "zz", "item_id": 1, "timestamp": 5}),
     r"interactions\[6\]: user_id 'zz' is not in user_data; add the user there or drop the interaction"),
    (lambda r: r["interactions"][1].update(timestamp="last tuesday"), r"interactions\[1\]: bad timestamp 'last tuesday'"),
    (lambda r: r["item_data"][1].pop("item_id"), r"item_data\[1\]: missing 'item_id'"),
    (lambda r: r["item_data"][1].update(continuous={"price": "cheap"}), r"item_data\[1\]\.continuous\.price: expected a number"),
    (lambda r: r["interactions"][2].pop("timestamp"), r"interactions\[2\]: missing timestamp while the first"),
])
def test_schema_errors_name_the_record_and_the_fix(tmp_path, change, message):
    raw = _tiny_raw()
    change(raw)
    with pytest.raises(DataError, match=message):
        validate(raw, tmp_path / "bad.json")


def _cli(argv, capsys) -> tuple[int, str]:
    from universal.train import main

    with pytest.raises(SystemExit) as exc:
        run(main, argv)
    return exc.value.code, capsys.readouterr().err


def test_cli_error_paths_exit_non_zero_with_one_line(tmp_path, capsys):
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text(json.dumps({"embedding_dim": 16, "user_num_attention_layer": 2}))
    raw = _tiny_raw()
    raw["interactions"].append({"user_id": "ghost", "item_id": 2, "timestamp": 9})
    atomic_write_json(tmp_path / "ghost.json", raw)
    cases = [
        (["--config", str(bad_cfg), "--data", str(tmp_path / "ghost.json")],
         f"{bad_cfg}: unknown config key 'user_num_attention_layer'; did you mean user_num_attention_layers"),
        (["--data", str(tmp_path / "ghost.json")], "interactions[6]: user_id 'ghost' is not in user_data"),
        (["--data", str(tmp_path / "nope.json")], f"{tmp_path / 'nope.json'}: data file not found"),
    ]
    for argv, expected in cases:
        code, err = _cli(argv + ["--override", f"home={tmp_path / 'home'}"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert expected in lines[0], (expected, lines[0])
    assert not (tmp_path / "home").exists()


# =========================================================================== real data (skipped without ../shared/data)
def _need(shared_data: Path, rel: str) -> Path:
    p = shared_data / rel
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


def test_upstream_configs_load_and_one_trains_on_a_subsample(shared_data, tmp_path):
    folder = _need(shared_data, "universal/sample_config_attention_fusion.json").parent
    simple = load_config(UniversalConfig, folder / "sample_config_simple_fusion.json")
    attn = load_config(UniversalConfig, folder / "sample_config_attention_fusion.json")
    assert simple.user.use_simple_fusion and simple.training.epochs == 3 and simple.run_name == "simple_baseline_model"
    assert not attn.user.use_simple_fusion and attn.user.num_attention_layers == 2 and attn.user.num_heads == 8
    assert attn.user.use_cls_token and attn.classifier.hidden_dims == [128, 64] and attn.training.lr_schedule == "cosine"
    assert attn.temporal_encoder_config.enable_item_lookup and attn.categorical_encoder_config.hash_vocab_size == 4096
    cfg = load_config(UniversalConfig, folder / "sample_config_attention_fusion.json",
                      f"home={tmp_path},device=cpu,num_epochs=1,max_users=120,eval.auc_negatives=20")
    lines: list[str] = []
    report = Pipeline(cfg, log=lines.append).fit(_need(shared_data, "universal/correlated_dataset.json"))
    assert report["counts"]["users"] == 120 and report["epochs_run"] == 1 and 0 <= report["test"]["NDCG@10"] <= 1
    assert any("glove-wiki-gigaword-50" in x and "all-MiniLM-L6-v2" in x for x in lines)
    assert any("previous_liked_items" in x and "removed" in x for x in lines)


def test_correlated_dataset_beats_popularity(shared_data, tmp_path):
    path = _need(shared_data, "universal/correlated_dataset.json")
    cfg = load_config(UniversalConfig, path.parent / "sample_config_simple_fusion.json",
                      f"home={tmp_path},device=cpu,num_epochs=2,batch_size=256,learning_rate=0.005")
    report = Pipeline(cfg, log=QUIET).fit(path)
    test, pop = report["test"], report["popularity"]["test"]
    assert test["NDCG@10"] > 2 * pop["NDCG@10"] and test["AUC"] > 0.9 > pop["AUC"], (test, pop)


# =========================================================================== preparer
def _write_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "u.data").write_text("1\t10\t5\t100\n1\t20\t3\t200\n2\t10\t2\t150\n2\t30\t4\t120\n1\t30\t1\t300\n")
    genres = "|".join(["0"] * 19)
    (folder / "u.item").write_bytes(
        f"10|Misérables, Les (1995)|01-Jan-1995||url|{genres[:-1]}1\n".encode("latin-1")
        + f"20|Toy Story (1995)|01-Jan-1995||url|0|0|0|1|1|1{'|0' * 13}\n".encode("latin-1")
        + f"30|No Year|||url|{genres}\n".encode("latin-1"))
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    return folder


def _write_ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text("1::10::5::100\n1::20::3::200\n2::10::4::150\n2::20::2::160\n2::40::5::170\n")
    (folder / "movies.dat").write_bytes("10::Misérables, Les (1995)::Drama|Musical\n20::Toy Story (1995)::Animation|Comedy\n"
                                        "40::Heat (1995)::Action\n".encode("latin-1"))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072-1234\n")
    return folder


def test_preparer_ml100k_and_ml1m_layouts(tmp_path, capsys):
    from core.data.prepare.__main__ import PREPARERS, main

    assert "universal-movielens" in PREPARERS
    src = _write_ml100k(tmp_path / "ml-100k")
    assert main(["universal-movielens", "--path", str(src), "--out", str(tmp_path / "o100")]) == 0
    assert capsys.readouterr().out.strip() == \
        f"prepared universal-ml-100k: 2 users, 3 items, 5 interactions -> {tmp_path / 'o100' / 'data.json'}"
    doc = json.loads((tmp_path / "o100" / "data.json").read_text())
    assert doc["user_data"][0] == {"user_id": 1, "categorical": {"gender": "M", "zip3": "857", "occupation": "technician"},
                                   "continuous": {"age": 24.0}}
    assert doc["item_data"][0] == {"item_id": 10, "text": {"title": "Misérables, Les"},
                                   "categorical": {"genres": ["Western"]}, "continuous": {"year": 1995.0}}
    assert doc["item_data"][1]["categorical"]["genres"] == ["Animation", "Children's", "Comedy"]
    assert "continuous" not in doc["item_data"][2]  # no year known
    assert doc["interactions"][0] == {"user_id": 1, "item_id": 10, "timestamp": 100, "rating": 5.0}
    assert load_dataset(tmp_path / "o100" / "data.json").n_items == 3  # valid universal data

    src = _write_ml1m(tmp_path / "ml-1m")
    assert main(["universal-movielens", "--path", str(src), "--out", str(tmp_path / "o1m"), "--min_rating", "3"]) == 0
    doc = json.loads((tmp_path / "o1m" / "data.json").read_text())
    assert doc["user_data"][1]["categorical"] == {"gender": "M", "zip3": "700", "occupation": "self-employed",
                                                  "age_group": "56"}
    assert doc["item_data"][2] == {"item_id": 40, "text": {"title": "Heat"}, "categorical": {"genres": ["Action"]},
                                   "continuous": {"year": 1995.0}}
    assert [(r["user_id"], r["item_id"]) for r in doc["interactions"]] == [(1, 10), (1, 20), (2, 10), (2, 40)]
    with pytest.raises(DataError, match="no rating is >= --min_rating 9"):
        from core.data.prepare import universal_movielens

        universal_movielens.load(src, min_rating=9)
