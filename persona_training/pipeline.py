"""The three stages as functions (the entry points are thin wrappers around them).

    run_training(cfg, dataset)  -> summary dict     (<out_root>/train/)
    build_caches(cfg, dataset)  -> (interactions, personas, info)   (<out_root>/cache/)
    run_rerank(cfg, dataset)    -> metrics dict     (<out_root>/rerank/)
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable

import torch

from core.candidates import candidate_metrics, read_ground_truth, read_scored_candidates
from core.cli import resolve_device
from core.config import save_config, to_dict
from core.dist import is_main
from core.errors import ConfigError
from core.store import atomic_write_json, atomic_write_text
from persona_training import synthetic
from persona_training.caches import Cache, build_cache
from persona_training.config import data_files, out_root
from persona_training.encoder import read_meta, train_pairs
from persona_training.schema import PersonaData, load_data
from persona_training.scoring import as_ranked, breakdown, rerank_lists, user_vector
from persona_training.texts import build_pairs, interaction_text, item_texts, parse_fields

Log = Callable[[str], None]


def load_stage_data(cfg, dataset: str, need: tuple[str, ...], with_selections: bool = False, log: Log = print) -> PersonaData:
    files = data_files(cfg)
    if cfg.data.generate:
        synthetic.ensure(files, log)
    return load_data(files, dataset, need=need, with_selections=with_selections)


# --------------------------------------------------------------------------- train
def run_training(cfg, dataset: str, log: Log = print) -> dict:
    t = cfg.train
    need = ("persona", "loo_history") + (("selected",) if t.pair_source == "selected" else ())
    data = load_stage_data(cfg, dataset, need, with_selections=True, log=log)
    pairs, stats = build_pairs(data, mode=t.mode, fields=t.fields, max_history=t.max_history,
                               source=t.pair_source, seed=t.seed)
    if stats["source"] == "next_item" and t.pair_source == "auto" and data.selections is not None:
        log(f"pairs: none of the {stats['selections']} selections has a user with a history in loo_history "
            "(the files do not join); using next-item pairs from the histories instead")
    log("pairs: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    out_dir = out_root(cfg, dataset) / "train"
    if is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    meta = {"dataset": dataset, "mode": t.mode, "fields": ",".join(parse_fields(t.fields)), "max_history": t.max_history,
            "pair_stats": stats}
    res = train_pairs(pairs, t, out_dir=out_dir, meta=meta, log=log)
    summary = {"dataset": dataset, "model_dir": str(res.model_dir), "steps": res.steps, "pairs": len(pairs),
               "pairs_seen": res.pairs_seen, "seconds": round(res.seconds, 3), "pairs_per_s": round(res.pairs_per_s, 2),
               "first_loss": res.first_loss, "last_loss": res.last_loss, "device": str(resolve_device(t.device)),
               "pair_stats": stats}
    if is_main():
        atomic_write_json(out_dir / "summary.json", summary)
    return summary


# --------------------------------------------------------------------------- caches
def resolve_model(spec: str, root: Path) -> str:
    """``trained`` -> ``<out_root>/train/model`` (which must exist); anything else as given."""
    if spec != "trained":
        return spec
    path = root / "train" / "model"
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(f"no trained model at {path}: run `python -m persona_training.train_encoder` with the same "
                          "--dataset/--data_cfg first, or pass --model_dir default (zero-shot MiniLM) or a model folder")
    return str(path)


def cache_devices(rerank) -> list[str]:
    """One device, or ``num_gpus`` GPUs when asked for and present."""
    dev = resolve_device(rerank.device)
    if dev.type == "cuda" and rerank.num_gpus > 1 and torch.cuda.device_count() > 1:
        return [f"cuda:{i}" for i in range(min(rerank.num_gpus, torch.cuda.device_count()))]
    return [str(dev)]


def build_caches(cfg, dataset: str, log: Log = print, data: PersonaData | None = None) -> tuple[Cache, Cache, dict]:
    """Interaction cache (a row per review of every history user) and persona cache (a row per
    persona of every item, plus fallback rows with ``item_fallback: summary``), reused when fresh."""
    r = cfg.rerank
    if data is None:
        data = load_stage_data(cfg, dataset, ("persona", "loo_history"), log=log)
    root = out_root(cfg, dataset)
    model = resolve_model(r.model, root)
    meta = read_meta(model) if Path(model).is_dir() else {}
    for key, want in (("mode", r.mode), ("fields", ",".join(parse_fields(r.fields)))):
        if meta.get(key) and meta[key] != want:
            log(f"note: the model was trained with {key}={meta[key]} but rerank uses {key}={want}")
    devices = cache_devices(r)
    users = [(u, [(rv.item_id, interaction_text(rv, r.mode)) for rv in reviews]) for u, reviews in data.history.items() if reviews]
    items = list(item_texts(data, r.fields, r.mode, r.item_fallback).items())
    common = {"batch_size": r.batch_size, "amp": r.amp, "devices": devices, "force": r.force, "log": log}
    inter, built_i = build_cache(root / "cache" / "interactions.json", users, model,
                                 settings={"kind": "interactions", "dataset": dataset, "mode": r.mode}, **common)
    pers, built_p = build_cache(root / "cache" / "personas.json", items, model,
                                settings={"kind": "personas", "dataset": dataset, "fields": list(parse_fields(r.fields)),
                                          "mode": r.mode, "fallback": r.item_fallback}, **common)
    info = {"model": model, "devices": devices, "interactions": {"rows": inter.vectors.shape[0], "users": len(inter.ids),
            "built": built_i, "seconds": inter.meta["seconds"]},
            "personas": {"rows": pers.vectors.shape[0], "items": len(pers.ids), "built": built_p,
                         "seconds": pers.meta["seconds"]}}
    return inter, pers, info


# --------------------------------------------------------------------------- rerank
def run_rerank(cfg, dataset: str, log: Log = print) -> dict:
    r = cfg.rerank
    data = load_stage_data(cfg, dataset, ("persona", "loo_history", "candidates", "gt"), log=log)
    # the rerank inputs are checked before the (slow) caches are built or written
    candidates = read_scored_candidates(data.files["candidates"])
    truth = read_ground_truth(data.files["gt"])
    inter, pers, cache_info = build_caches(cfg, dataset, log=log, data=data)
    reranked, counts = rerank_lists(candidates, lambda u: user_vector(inter.rows(u), r.max_history), pers.rows,
                                    agg=r.persona_agg, fusion_weight=r.fusion_weight, pad=r.pad)
    upstream = {u: [item for item, _s in rows] for u, rows in candidates.items()}
    lists = {"upstream": upstream, "reranked": as_ranked(reranked)}
    metrics = {label: candidate_metrics(ls, truth, r.ks) for label, ls in lists.items()}
    history_len = {u: len(v) for u, v in data.history.items()}
    if any(history_len.get(u, 0) for u in truth):
        item_counts = Counter(rv.item_id for reviews in data.history.values() for rv in reviews)
        split = breakdown(lists, truth, history_len, item_counts, k=10, cold_max=r.cold_max_interactions,
                          head_fraction=r.head_fraction)
    else:
        split = {"note": "no ground-truth user has a history in loo_history: no warm/cold or head/tail breakdown"}
    out_dir = out_root(cfg, dataset) / "rerank"
    result = {"dataset": dataset, "ks": list(r.ks), "metrics": metrics, "counts": counts, "breakdown_at_10": split,
              "caches": cache_info, "config": to_dict(cfg)}
    atomic_write_text(out_dir / "reranked.jsonl", "".join(
        json.dumps({"user_id": u, "results": es}, ensure_ascii=False) + "\n" for u, es in reranked.items()))
    atomic_write_json(out_dir / "metrics.json", result)
    save_config(cfg, out_dir / "config.yaml")
    result["out_dir"] = str(out_dir)
    return result


def format_rerank(result: dict) -> str:
    ks, m, c = result["ks"], result["metrics"], result["counts"]
    head = f"{'':10s}" + "".join(f"{f'{n}@{k}':>9s}" for k in ks for n in ("HR", "NDCG")) + f"{'MRR':>9s}"
    lines = [head] + [f"{label:10s}" + "".join(f"{m[label][f'{n}@{k}']:9.4f}" for k in ks for n in ("HR", "NDCG"))
                      + f"{m[label]['MRR']:9.4f}" for label in ("upstream", "reranked")]
    lines.append(f"users {c.get('users', 0)}: reranked {c.get('users_scored', 0)}, kept in upstream order "
                 f"{c.get('users_unchanged', 0)} (no history {c.get('users_without_history', 0)}); candidates "
                 f"{c.get('candidates', 0)}: scored {c.get('scored', 0)}, without personas {c.get('unknown_items', 0)}, "
                 f"[PAD] {c.get('pads', 0)}" + (f" (dropped {c['pads_dropped']})" if c.get("pads_dropped") else ""))
    groups = result["breakdown_at_10"].get("groups")
    if groups:
        lines.append("@10 by group: " + "; ".join(
            f"{g} ({v['users']}): HR {v['upstream']['HR@10']:.3f} -> {v['reranked']['HR@10']:.3f}"
            for g, v in groups.items()))
    else:
        lines.append(result["breakdown_at_10"].get("note", ""))
    return "\n".join(lines)
