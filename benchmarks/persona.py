"""Persona training (issue 7): known answers, a measured rerank on the real samples, planted structure,
training throughput and cache build time.

Pieces (``known``, ``rerank``, ``synthetic``, ``speed``, ``cache``, ``summarize``: see
benchmarks/README.md) merge their rows into ``benchmarks/results/persona_runs.json``. The
protocol itself (sample, folds, candidates, training pairs, baselines, ranks and metrics with
``core.metrics``' tie rule) is ``persona_training.evaluate``; this module drives it, trains the
fold encoders with ``persona_training.encoder.train_pairs`` and writes the tables: ``summarize``
pools the folds' per-user ranks and reports HR/MRR/NDCG@5/10/20 with 95% bootstrap intervals
over users (``ci_low``/``ci_high``).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, load_rows, machine, merge_rows, row
from persona_training.evaluate import METRICS, Sample, baseline_ranks, bootstrap_ci, known_answer, pooled_metrics, \
    scorer_ranks, stable_seed, synthetic_ranks, user_metrics

DATA = REPO.parent / "shared" / "data" / "persona4rec"
MODELS = ("random", "popularity", "zero-shot", "trained")
KNOWN_HR10 = {"amazon": (21, 46), "yelp": (14, 77)}  # counted from the example files (data README)
# merge keys of persona_runs.json: a rerun of the same piece replaces its rows ("piece" = the subcommand)
QUALITY_KEY = ("piece", "dataset", "model", "protocol", "metric", "seeds", "fold")
SPEED_KEY = ("piece", "dataset", "model", "protocol", "metric", "seeds", "device", "amp")


# --------------------------------------------------------------------------- helpers
def command_line() -> str:
    """This call, without ``--results-dir`` (where rows go is not part of what produced them)."""
    argv, out, skip = sys.argv[1:], [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--results-dir":
            skip = True
            continue
        if a.startswith("--results-dir="):
            continue
        out.append(shlex.quote(a))
    return "python -m benchmarks.persona " + " ".join(out)


def runs_file(args) -> Path:
    return Path(args.results_dir) / "persona_runs.json"


def device_of(args):
    from core.cli import resolve_device

    return resolve_device(args.device)


def device_label(args) -> str:
    """``machine()`` on CPU; the GPU's name and the AMP state on CUDA."""
    dev = device_of(args)
    if dev.type != "cuda":
        return machine()
    import torch

    from core.train import amp_dtype

    dtype = amp_dtype(dev, args.amp == "on")
    return f"{dev} {torch.cuda.get_device_name(dev)}, AMP {str(dtype).removeprefix('torch.') if dtype else 'off'}"


def xrow(dataset, model, protocol, metric, value, args, seeds=None, **extra) -> dict:
    r = row(dataset, model, protocol, metric, value, seeds=seeds, command=command_line(), piece=args.cmd, **extra)
    r["device"] = device_label(args)
    return r


def encoder_on(args, seq_len: int):
    from persona_training.encoder import load_encoder

    return load_encoder(args.model, str(device_of(args)), seq_len)


def train_section(args, seed: int):
    from persona_training.config import TrainSection

    return TrainSection(model=args.model, max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                        temperature=args.temperature, max_seq_length=args.train_max_seq_length,
                        train_layers=args.train_layers, warmup_steps=args.warmup_steps, amp=args.amp == "on",
                        device=str(device_of(args)), seed=seed, log_every=max(1, args.steps // 4 or 1))


def settings_of(args, names) -> dict:
    return {n: getattr(args, n) for n in names}


def print_table(title: str, ranks: dict[str, list], n_users: int) -> None:
    print(f"\n{title} ({n_users} users)")
    print(f"{'model':12s}" + "".join(f"{m:>9s}" for m in METRICS))
    for name, rs in ranks.items():
        m = {k: float(v.mean()) for k, v in user_metrics(rs).items()}
        print(f"{name:12s}" + "".join(f"{m[x]:9.4f}" for x in METRICS))


def sample_of(args) -> Sample:
    return Sample(args.data_dir, args.dataset, args.fields, args.pool, args.folds, args.fold_seed)


# --------------------------------------------------------------------------- 1. known answer
def cmd_known(args) -> None:
    """Upstream order of the example candidates (the known answer) and a rerank that can score
    only candidates with personas and users with a history: the rest keep their upstream slots."""
    from persona_training.scoring import Scorer

    ds, state = args.dataset, {}

    def scorer():  # the model is loaded only if something can be scored
        if "s" not in state:
            state["s"] = Scorer(encoder_on(args, args.eval_max_seq_length), amp=args.amp == "on")
        return state["s"]

    res = known_answer(args.data_dir, ds, scorer, args.fields, args.max_history)
    m_up, m_re, counts, moved = res["upstream"], res["reranked"], res["counts"], res["unscored_moved"]
    hits, users = KNOWN_HR10[ds]
    ok = abs(m_up["HR@10"] - hits / users) < 1e-9 and m_up["users"] == users
    extra = {"users": m_up["users"], "known_answer": f"HR@10 = {hits}/{users} = {hits / users:.3f}"}
    rows = [xrow(ds, "upstream", "candidates", m, float(m_up[m]), args, **extra,
                 **({"known_answer_reproduced": bool(ok)} if m == "HR@10" else {})) for m in METRICS]
    counted = {k: counts[k] for k in ("users", "users_scored", "users_unchanged", "users_without_history",
                                      "candidates", "scored", "unknown_items", "pads")}
    rows += [xrow(ds, "zero-shot", "candidates", m, float(m_re[m]), args, **counted, unscored_moved=moved,
                  model_loaded="s" in state) for m in METRICS]
    rows += [xrow(ds, "zero-shot", "candidates", "candidates_scored", counts["scored"], args, **counted),
             xrow(ds, "zero-shot", "candidates", "users_kept_upstream_order", counts["users_unchanged"], args, **counted)]
    merge_rows(runs_file(args), rows, key=QUALITY_KEY)
    print(f"{ds}: upstream HR@10 {m_up['HR@10']:.4f} ({round(m_up['HR@10'] * m_up['users'])}/{m_up['users']}); "
          f"known answer {hits}/{users} = {hits / users:.3f}: {'reproduced' if ok else 'NOT REPRODUCED'}")
    print(f"rerank: {counts['users']} users, {counts['users_scored']} reranked, {counts['users_unchanged']} kept in "
          f"upstream order ({counts['users_without_history']} without a history in the sample); {counts['candidates']} "
          f"candidates, {counts['scored']} scored, {counts['unknown_items']} without personas, {counts['pads']} [PAD]; "
          f"unscored entries moved: {moved}; HR@10 after the rerank {m_re['HR@10']:.4f}")
    if not ok or moved:
        raise SystemExit("known-answer check failed")


# --------------------------------------------------------------------------- 2. measured rerank
RERANK_SETTINGS = ("folds", "fold_seed", "sample_seed", "negatives", "pool", "fields", "max_history",
                   "eval_max_seq_length", "pair_positions", "train_max_history", "train_max_seq_length", "steps",
                   "batch_size", "lr", "temperature", "train_layers", "warmup_steps", "agg", "model", "amp", "limit")


def cmd_rerank(args) -> None:
    from persona_training.encoder import train_pairs
    from persona_training.scoring import Scorer

    sample, ds = sample_of(args), args.dataset
    folds = [args.fold] if args.fold is not None else list(range(args.folds))
    print(f"{ds}: {len(sample.users)} users, {len(sample.scorable)} with a target that has text; pool {len(sample.pool)} "
          f"items ({len(set(sample.pool) & sample.from_personas)} with personas), folds {folds} of {args.folds}")
    zs = Scorer(encoder_on(args, args.eval_max_seq_length), amp=args.amp == "on", agg=args.agg)  # one memo for all folds
    for fold in folds:
        t_fold = time.perf_counter()
        test, skipped, train_users = sample.fold(fold)
        test = test[: args.limit] if args.limit else test
        cands = {u: sample.candidates(u, args.negatives, args.sample_seed) for u in test}
        hist = sample.histories(test, args.max_history)
        ranks = baseline_ranks(sample, test, cands, args.sample_seed)
        t0 = time.perf_counter()
        ranks["zero-shot"] = scorer_ranks(zs, hist, sample.item_text, test, cands)
        zs_seconds = time.perf_counter() - t0
        # the trained encoder: a fresh copy of the base model, other folds' users only
        pairs = sample.training_pairs(train_users, args.seed, args.train_max_history, args.pair_positions)
        assert not {p.user_id for p in pairs} & set(test)
        model = encoder_on(args, args.eval_max_seq_length)
        res = train_pairs(pairs, train_section(args, args.seed), model=model, show_progress=False,
                          log=lambda s: print("  " + s))
        model.max_seq_length = args.eval_max_seq_length
        t0 = time.perf_counter()
        ranks["trained"] = scorer_ranks(Scorer(model, amp=args.amp == "on", agg=args.agg), hist, sample.item_text, test, cands)
        tr_seconds = time.perf_counter() - t0
        fold_seconds = time.perf_counter() - t_fold
        persona_cands = sum(i in sample.from_personas for u in test for i in cands[u])
        common = {"fold": fold, "folds": args.folds, "settings": settings_of(args, RERANK_SETTINGS)}
        rows = [xrow(ds, name, "sampled-100", "user_ranks", None, args, seeds=[args.seed], users=test,
                     ranks=[ranks[name][u] for u in test], skipped_users=skipped, candidates_with_personas=persona_cands,
                     **common) for name in MODELS]
        rows += [xrow(ds, "trained", "sampled-100", "pairs_per_s", res.pairs_per_s, args, seeds=[args.seed],
                      train_pairs=len(pairs), train_users=len(train_users), steps=res.steps, train_seconds=res.seconds,
                      first_loss=res.first_loss, last_loss=res.last_loss, **common),
                 xrow(ds, "trained", "sampled-100", "fold_seconds", fold_seconds, args, seeds=[args.seed],
                      zero_shot_eval_seconds=zs_seconds, trained_eval_seconds=tr_seconds, **common)]
        merge_rows(runs_file(args), rows, key=QUALITY_KEY)
        print_table(f"{ds} fold {fold}: sampled-100 ({args.negatives} negatives), {len(pairs)} training pairs from "
                    f"{len(train_users)} other users, {res.steps} steps, loss {res.first_loss:.3f} -> {res.last_loss:.3f}, "
                    f"{res.pairs_per_s:.1f} pairs/s; fold {fold_seconds:.0f}s (zero-shot eval {zs_seconds:.0f}s, "
                    f"training {res.seconds:.0f}s, trained eval {tr_seconds:.0f}s)",
                    {name: [ranks[name][u] for u in test] for name in MODELS}, len(test))
        if skipped:
            print(f"  not scored (target has no text in the sample): {len(skipped)} user(s)")


# --------------------------------------------------------------------------- 3. planted structure
SYNTHETIC_SETTINGS = ("data_seed", "fields", "max_history", "eval_max_seq_length", "train_max_seq_length", "steps",
                      "batch_size", "lr", "temperature", "train_layers", "warmup_steps", "agg", "model", "amp")


def cmd_synthetic(args) -> None:
    from core.candidates import read_ground_truth, read_scored_candidates
    from persona_training import schema, synthetic, texts
    from persona_training.encoder import train_pairs
    from persona_training.scoring import Scorer

    with tempfile.TemporaryDirectory(prefix="persona-syn-") as tmp:
        files = synthetic.generate(tmp, seed=args.data_seed)
        data = schema.load_data({k: files[k] for k in ("persona", "loo_history", "selected", "item_summary")},
                                "synthetic", with_selections=True)
        meta = json.loads(files["meta"].read_text())
        target = {u: next(iter(i)) for u, i in read_ground_truth(files["gt_loo"]).items()}
        candidates = read_scored_candidates(files["candidates"])
    test = sorted(u for u, m in meta["users"].items() if m["split"] == "test")
    pairs, stats = texts.build_pairs(data, fields=args.fields, max_history=args.max_history, source="selected",
                                     seed=args.seed)
    assert not {p.user_id for p in pairs} & set(test)
    items = sorted(data.personas)
    item_text = {i: [texts.persona_text(p, args.fields) for p in data.personas[i]] for i in items}
    popularity: dict[str, int] = {}
    for rs in data.history.values():
        for r in rs:
            popularity[r.item_id] = popularity.get(r.item_id, 0) + 1
    hist = {u: texts.history_texts(data.history[u], "summary", args.max_history) for u in test}

    model = encoder_on(args, args.eval_max_seq_length)
    scorers = {"zero-shot": Scorer(copy.deepcopy(model), amp=args.amp == "on", agg=args.agg)}
    res = train_pairs(pairs, train_section(args, args.seed), model=model, show_progress=False, log=lambda s: print("  " + s))
    model.max_seq_length = args.eval_max_seq_length
    scorers["trained"] = Scorer(model, amp=args.amp == "on", agg=args.agg)
    score_fns = {  # model -> (user, items) -> scores
        "random": lambda u, its: np.random.default_rng(stable_seed(args.seed, u, "random")).random(len(its)),
        "popularity": lambda u, its: np.array([popularity.get(i, 0) for i in its], float),
        **{name: (lambda s: lambda u, its: s.scores([hist[u]], [item_text[i] for i in its])[0])(s)
           for name, s in scorers.items()},
    }
    ranks = synthetic_ranks(score_fns, test, target, items, {u: {r.item_id for r in data.history[u]} for u in test},
                            candidates)
    settings = settings_of(args, SYNTHETIC_SETTINGS)
    rows = [xrow("synthetic", name, proto, "user_ranks", None, args, seeds=[args.seed], users=test,
                 ranks=[rk[u] for u in test], settings=settings, items=len(items)) for (proto, name), rk in ranks.items()]
    rows.append(xrow("synthetic", "trained", "full", "pairs_per_s", res.pairs_per_s, args, seeds=[args.seed],
                     train_pairs=len(pairs), steps=res.steps, train_seconds=res.seconds, first_loss=res.first_loss,
                     last_loss=res.last_loss, settings=settings))
    merge_rows(runs_file(args), rows, key=QUALITY_KEY)
    print(f"synthetic seed {args.seed}: {len(pairs)} training pairs ({stats['source']}), {res.steps} steps, loss "
          f"{res.first_loss:.3f} -> {res.last_loss:.3f}, {res.pairs_per_s:.1f} pairs/s")
    for proto in ("full", "candidates"):
        print_table(f"synthetic, protocol {proto}", {n: [rk[u] for u in test] for (p, n), rk in ranks.items() if p == proto},
                    len(test))


# --------------------------------------------------------------------------- speed and caches
def cmd_speed(args) -> None:
    """Training pairs/s on a fixed workload (all users' pairs of one dataset), after warm-up steps."""
    from persona_training.encoder import train_pairs

    if args.dataset == "synthetic":
        from persona_training import schema, synthetic, texts

        with tempfile.TemporaryDirectory(prefix="persona-syn-") as tmp:
            files = synthetic.generate(tmp, seed=args.data_seed)
            data = schema.load_data({k: files[k] for k in ("persona", "loo_history", "selected")}, "synthetic",
                                    with_selections=True)
        pairs, _ = texts.build_pairs(data, fields=args.fields, max_history=args.train_max_history, source="selected")
    else:
        sample = sample_of(args)
        pairs = sample.training_pairs(sample.users, args.seed, args.train_max_history, args.pair_positions)
    model = encoder_on(args, args.train_max_seq_length)
    warm = copy.copy(args)
    warm.steps = args.warmup
    if args.warmup:
        train_pairs(pairs, train_section(warm, args.seed), model=model, show_progress=False, log=lambda s: None)
    res = train_pairs(pairs, train_section(args, args.seed), model=model, show_progress=False, log=lambda s: print("  " + s))
    texts_per_pair = float(np.mean([len(p[0]) + 1 for p in pairs]))
    rows = [xrow(args.dataset, "trained", "full", "pairs_per_s", res.pairs_per_s, args, seeds=[args.seed],
                 amp=args.amp == "on" and device_of(args).type == "cuda", steps=res.steps, seconds=res.seconds,
                 batch_size=args.batch_size, max_seq_length=args.train_max_seq_length, train_layers=args.train_layers,
                 train_max_history=args.train_max_history, texts_per_pair=round(texts_per_pair, 2), pairs=len(pairs))]
    merge_rows(runs_file(args), rows, key=SPEED_KEY)
    print(f"{args.dataset}: {res.pairs_per_s:.2f} pairs/s ({res.steps} steps of {args.batch_size}, "
          f"{texts_per_pair:.1f} texts per pair, seq {args.train_max_seq_length}, top {args.train_layers} layer(s) "
          f"trained) on {device_label(args)}")


def cmd_cache(args) -> None:
    """Both caches of the pipeline (interactions, personas) built from scratch, then reused."""
    from persona_training.config import DataSection, RerankSection, RerankStage
    from persona_training.pipeline import build_caches

    with tempfile.TemporaryDirectory(prefix="persona-cache-") as tmp:
        if args.dataset == "synthetic":
            from persona_training import synthetic

            files = synthetic.generate(Path(tmp) / "data", seed=args.data_seed)
            persona, history = files["persona"], files["loo_history"]
        else:
            sample = Path(args.data_dir) / "sample" / args.dataset
            persona, history = sample / "3.5_persona_with_summary.jsonl", sample / "3.5_history_loo.jsonl"
        dev = device_of(args)
        section = RerankSection(model=args.model, fields=args.fields, device=str(dev), amp=args.amp == "on",
                                num_gpus=args.num_gpus, force=True, batch_size=args.cache_batch_size)
        cfg = RerankStage(data=DataSection(persona=str(persona), loo_history=str(history), out_root=str(Path(tmp) / "out")),
                          rerank=section)
        t0 = time.perf_counter()
        inter, pers, info = build_caches(cfg, args.dataset, log=lambda s: print("  " + s))
        build_s = time.perf_counter() - t0
        cfg = RerankStage(data=cfg.data, rerank=RerankSection(**{**section.__dict__, "force": False}))
        t0 = time.perf_counter()
        _i, _p, again = build_caches(cfg, args.dataset, log=lambda s: print("  " + s))
        reuse_s = time.perf_counter() - t0
        assert not again["interactions"]["built"] and not again["personas"]["built"]
    extra = {"interaction_rows": info["interactions"]["rows"], "persona_rows": info["personas"]["rows"],
             "interactions_s": info["interactions"]["seconds"], "personas_s": info["personas"]["seconds"],
             "devices": info["devices"], "amp": args.amp == "on" and dev.type == "cuda",
             "note": "wall time of pipeline.build_caches from scratch (model load, both caches, float16 memmaps)"}
    model_name = "zero-shot" if args.model in ("default", "all-MiniLM-L6-v2") else "trained"
    rows = [xrow(args.dataset, model_name, "full", "cache_build_s", build_s, args, seeds=[args.seed], **extra),
            xrow(args.dataset, model_name, "full", "cache_reuse_s", reuse_s, args, seeds=[args.seed], **extra)]
    merge_rows(runs_file(args), rows, key=SPEED_KEY)
    print(f"{args.dataset}: caches built in {build_s:.1f}s ({extra['interaction_rows']} interaction rows in "
          f"{extra['interactions_s']:.1f}s, {extra['persona_rows']} persona rows in {extra['personas_s']:.1f}s), "
          f"reused in {reuse_s:.2f}s, on {device_label(args)}")


# --------------------------------------------------------------------------- summary
def generic_command(command: str, seeds: bool = True) -> str:
    """A piece's command with its fold (and, over several seeds, its seed) written as ``<F>`` / ``<N>``."""
    parts = command.split(" ")
    for flag, name in (("--fold", "<F>"), ("--seed", "<N>")):
        if flag in parts and parts.index(flag) + 1 < len(parts) and (flag == "--fold" or seeds):
            parts[parts.index(flag) + 1] = name
    return " ".join(parts)


def pooled(runs: list[dict], dataset: str, protocol: str) -> dict:
    """Per model: users -> metric arrays averaged over the seeds that scored them, plus bookkeeping."""
    rank_rows = [r for r in runs if r["metric"] == "user_ranks" and r["dataset"] == dataset and r["protocol"] == protocol]
    out: dict = {}
    for model in sorted({r["model"] for r in rank_rows}):
        per_seed: dict[int, dict[str, object]] = {}
        folds, settings, devices, commands = set(), {}, set(), []
        for r in rank_rows:
            if r["model"] != model:
                continue
            seed = r["seeds"][0]
            got = per_seed.setdefault(seed, {})
            for u, k in zip(r["users"], r["ranks"]):
                if u in got:
                    raise SystemExit(f"{dataset}/{model} seed {seed}: user {u} scored by two folds; rerun with one fold layout")
                got[u] = k
            folds.add(r.get("fold"))
            key = json.dumps({k: v for k, v in (r.get("settings") or {}).items() if k != "limit"}, sort_keys=True)
            settings.setdefault(key, []).append(r.get("fold"))
            devices.add(r["device"])
            commands.append(r["command"])
        users, values, seed_means = pooled_metrics(per_seed)
        out[model] = {"users": users, "values": values, "seeds": sorted(per_seed),
                      "folds": sorted(f for f in folds if f is not None), "settings": settings, "devices": sorted(devices),
                      "command": generic_command(commands[0], len(per_seed) > 1) if commands else "", "seed_means": seed_means,
                      "limited": any(r.get("settings", {}).get("limit") for r in rank_rows if r["model"] == model)}
    return out


def quality_rows(runs, dataset, protocol, args) -> tuple[list[dict], dict]:
    data = pooled(runs, dataset, protocol)
    if not data:
        return [], {}
    users = sorted(set.intersection(*(set(d["users"]) for d in data.values())))
    idx = np.random.default_rng(args.bootstrap_seed).integers(0, len(users), size=(args.bootstrap, len(users)))
    rows = []
    vecs: dict[str, dict[str, np.ndarray]] = {}
    for model, d in data.items():
        pos = {u: j for j, u in enumerate(d["users"])}
        sel = np.array([pos[u] for u in users], dtype=int)
        vecs[model] = {m: d["values"][m][sel] for m in METRICS}
        note = f"{len(users)} users: a small sample, read the intervals"
        for m in METRICS:
            v, sm = vecs[model][m], d["seed_means"][m]
            low, high, boots = bootstrap_ci(v, idx)
            rows.append(row(dataset, model, protocol, m, float(v.mean()), float(np.std(sm, ddof=1)) if len(sm) > 1 else 0.0,
                            d["seeds"], d["command"], ci_low=low, ci_high=high, se_users=float(boots.std(ddof=1)), users=len(users),
                            folds=d["folds"], bootstrap=args.bootstrap, note=note)
                        | {"device": "; ".join(d["devices"])})
    # paired differences on NDCG@10 (same bootstrap resamples of users for both models)
    for a, b in (("trained", "zero-shot"), ("trained", "random"), ("zero-shot", "random"), ("trained", "popularity")):
        if a in vecs and b in vecs:
            diff = vecs[a]["NDCG@10"] - vecs[b]["NDCG@10"]
            low, high, boots = bootstrap_ci(diff, idx)
            rows.append(row(dataset, a, protocol, f"NDCG@10_minus_{b}", float(diff.mean()), 0.0, data[a]["seeds"],
                            "summarize", ci_low=low, ci_high=high,
                            p_boot=float((boots <= 0).mean()), users=len(users), bootstrap=args.bootstrap,
                            note="paired over users; p_boot = share of bootstrap resamples with difference <= 0")
                        | {"device": "; ".join(data[a]["devices"])})
    return rows, data


def speed_rows(runs) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r["metric"] in ("pairs_per_s", "cache_build_s", "cache_reuse_s", "fold_seconds") and r["value"] is not None:
            source = r.get("piece", "")
            groups.setdefault((r["dataset"], r["model"], r["protocol"], r["metric"], r["device"], r.get("amp"), source), []).append(r)
    out = []
    for (ds, model, proto, metric, device, amp, source), rs in sorted(groups.items(), key=lambda kv: [str(x) for x in kv[0]]):
        v = np.array([r["value"] for r in rs], float)
        keep = {k: rs[0][k] for k in ("batch_size", "max_seq_length", "train_layers", "train_max_history", "texts_per_pair",
                                       "interaction_rows", "persona_rows", "devices") if k in rs[0]}
        if rs[0].get("settings"):
            keep.update({k: rs[0]["settings"][k] for k in ("batch_size", "train_max_seq_length", "train_layers",
                                                          "train_max_history", "steps") if k in rs[0]["settings"]})
        out.append(row(ds, model, proto, metric, float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                       sorted({s for r in rs for s in r["seeds"]}), generic_command(rs[0]["command"], len(rs) > 1), amp=amp,
                       runs=len(rs), piece=source, **keep) | {"device": device})
    # AMP speed-up on the same GPU
    for r in [x for x in out if x["metric"] == "pairs_per_s" and x.get("amp") is True]:
        off = [x for x in out if x["metric"] == "pairs_per_s" and x.get("amp") is False and x["dataset"] == r["dataset"]
               and x["device"].split(", AMP")[0] == r["device"].split(", AMP")[0]]
        if off:
            out.append(row(r["dataset"], "trained", "full", "amp_speedup", r["value"] / off[0]["value"], 0.0, r["seeds"],
                           "summarize", amp=True) | {"device": r["device"].split(", AMP")[0]})
    return out


def fmt_ci(r) -> str:
    return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r else ""


def cmd_summarize(args) -> None:
    from core.report import format_table
    from core.store import atomic_write_json, atomic_write_text

    results = Path(args.results_dir)
    runs = load_rows(runs_file(args))
    known = [r for r in runs if r["protocol"] == "candidates" and r["dataset"] != "synthetic" and r["metric"] != "user_ranks"]
    out = list(known)
    lines = ["# Persona training: known answers, measured rerank, planted structure, speed", ""]
    # 1. known answer
    lines += ["## 1. Known answer on the example candidate files (protocol `candidates`)", "",
              "Upstream order of `evaluation/<dataset>/candidate.jsonl` scored by `core.candidates`; the rerank "
              "(zero-shot MiniLM through `scoring.rerank_lists`) can score only candidates with personas for users "
              "with a history in the sample, and the example files have neither, so every list keeps its upstream order.", ""]
    kt = []
    for ds in ("amazon", "yelp"):
        g = {(r["model"], r["metric"]): r for r in known if r["dataset"] == ds}
        up, re_ = g.get(("upstream", "HR@10")), g.get(("zero-shot", "HR@10"))
        if up:
            kt.append({"dataset": ds, "expected HR@10": up.get("known_answer", ""), "upstream HR@10": f"{up['value']:.4f}",
                       "reproduced": up.get("known_answer_reproduced"), "users": up.get("users"),
                       "after rerank HR@10": f"{re_['value']:.4f}" if re_ else "",
                       "candidates scored": re_.get("scored", "") if re_ else "",
                       "lists kept in upstream order": f"{re_.get('users_unchanged')}/{re_.get('users')}" if re_ else ""})
    lines += [format_table(kt, list(kt[0]) if kt else ["dataset"], markdown=True) if kt else "not run yet", ""]
    # 2. measured rerank
    lines += ["## 2. Measured rerank on the real samples (protocol `sampled-100`)", "",
              "Each user of `3.5_history_loo` ranks the held-out item of `3.5_gt` among 99 items of the same sample "
              "they never reviewed (fixed seed); item text = personas when the item has them, else the item summary "
              "its reviews carry. 5-fold cross-validation over users: the trained encoder of a fold never saw its "
              "users. Value [95% bootstrap interval over users]. **50 users is a small sample**: intervals of "
              "±0.1 on HR@10 are expected, and differences inside them are not evidence.", ""]
    cols = ["dataset", "model", "users", "folds", "seeds"] + METRICS
    verdicts = []
    for ds in ("amazon", "yelp"):
        rows, data = quality_rows(runs, ds, "sampled-100", args)
        out += rows
        if not rows:
            continue
        by = {(r["model"], r["metric"]): r for r in rows}
        table = []
        for model in MODELS:
            if (model, "NDCG@10") not in by:
                continue
            d = data[model]
            table.append({"dataset": ds, "model": model, "users": by[(model, "NDCG@10")]["users"],
                          "folds": f"{len(d['folds'])}/{args.folds}" + (" (limited)" if d["limited"] else ""),
                          "seeds": len(d["seeds"]), **{m: fmt_ci(by.get((model, m))) for m in METRICS}})
            if len(d["settings"]) > 1:
                lines.append(f"**Warning**: {ds}/{model} pools folds run with different settings: "
                             + "; ".join(f"folds {f}" for f in d["settings"].values()))
        lines += [format_table(table, cols, markdown=True), ""]
        diffs = [r for r in rows if r["metric"].startswith("NDCG@10_minus_")]
        if diffs:
            lines += [format_table([{"dataset": ds, "comparison": f"{r['model']} - {r['metric'].removeprefix('NDCG@10_minus_')}",
                                     "NDCG@10 difference": fmt_ci(r), "p (bootstrap, one-sided)": f"{r['p_boot']:.3f}"}
                                    for r in diffs], ["dataset", "comparison", "NDCG@10 difference", "p (bootstrap, one-sided)"],
                                   markdown=True), ""]
        verdicts.append(_verdict(ds, by))
    # 3. synthetic
    lines += ["## 3. Planted structure (synthetic persona-format default)", "",
              "Test users of `persona_training.synthetic` (never trained on): `full` ranks the target among all "
              "items outside the user's history; `candidates` reranks the 20 upstream candidates (random upstream "
              "scores, some `[PAD]`) with `scoring.rerank_lists`. Value [95% bootstrap interval over users].", ""]
    for proto in ("full", "candidates"):
        rows, data = quality_rows(runs, "synthetic", proto, args)
        out += rows
        if not rows:
            continue
        by = {(r["model"], r["metric"]): r for r in rows}
        table = [{"dataset": "synthetic", "model": f"{m} ({proto})", "users": by[(m, "NDCG@10")]["users"], "folds": "",
                  "seeds": len(data[m]["seeds"]), **{x: fmt_ci(by.get((m, x))) for x in METRICS}}
                 for m in ("upstream", *MODELS) if (m, "NDCG@10") in by]
        lines += [format_table(table, cols, markdown=True), ""]
        if proto == "full":
            verdicts.append(_verdict("synthetic", by, planted=True))
    if verdicts:
        lines += ["### Goal: trained beats zero-shot and random on NDCG@10", ""] + [f"- {v}" for v in verdicts] + [""]
    # speed
    sp = speed_rows(runs)
    out += sp
    lines += ["## Training throughput and cache build time", ""]
    if sp:
        lines += [format_table([{"dataset": r["dataset"], "piece": r.get("piece", ""), "metric": r["metric"], "protocol": r["protocol"],
                                 "value": f"{r['value']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] else ""), "runs": r.get("runs", ""),
                                 "setting": ", ".join(f"{k} {r[k]}" for k in ("batch_size", "max_seq_length", "train_max_seq_length",
                                                                              "train_layers", "train_max_history") if k in r),
                                 "device": r["device"]} for r in sp],
                               ["dataset", "piece", "metric", "protocol", "value", "runs", "setting", "device"], markdown=True)]
    else:
        lines.append("not run yet")
    lines += ["", "`pairs_per_s` (protocol `full`): `speed` on a fixed workload after warm-up steps; (protocol "
              "`sampled-100`): the training of the rerank folds, mean ± std over folds. `fold_seconds`: wall time of "
              "one fold (zero-shot scoring, training, trained scoring). `cache_build_s`: `pipeline.build_caches` "
              "from scratch; `cache_reuse_s`: the same call when both caches are fresh.", "",
              f"Commands: the `command` field of each row in `persona.json`. Devices: "
              f"{'; '.join(sorted({r['device'] for r in runs})) or 'none yet'}.", ""]
    atomic_write_json(results / "persona.json", out)
    atomic_write_text(results / "persona.md", "\n".join(lines))
    print("\n".join(lines))


def _verdict(dataset: str, by: dict, planted: bool = False) -> str:
    t, z, r = (by.get((m, "NDCG@10")) for m in ("trained", "zero-shot", "random"))
    if not (t and z and r):
        return f"{dataset}: incomplete"
    dz, dr = by.get(("trained", "NDCG@10_minus_zero-shot")), by.get(("trained", "NDCG@10_minus_random"))
    beats = t["value"] > z["value"] and t["value"] > r["value"]
    sure = dz and dr and dz["ci_low"] > 0 and dr["ci_low"] > 0
    text = (f"{dataset}: trained {t['value']:.3f}, zero-shot {z['value']:.3f}, random {r['value']:.3f}: "
            + ("met" if beats else "NOT met") + (" (both paired differences' 95% intervals exclude 0)" if sure else
                                                 " on the point estimates only (a paired difference's 95% interval "
                                                 "includes 0)" if beats else ""))
    if planted:
        zr = by.get(("zero-shot", "NDCG@10_minus_random"))
        text += f"; zero-shot > random: {'yes' if z['value'] > r['value'] else 'no'}" + (
            f" (interval [{zr['ci_low']:.3f}, {zr['ci_high']:.3f}])" if zr else "")
    return text


# --------------------------------------------------------------------------- command line
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(s, real: bool, train: bool, synthetic_defaults: bool = False, with_synthetic: bool = False):
        s.add_argument("--results-dir", default=str(RESULTS), help="where persona_runs.json (and the summary) go")
        s.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
        s.add_argument("--amp", choices=["on", "off"], default="on", help="autocast on CUDA (no effect on CPU)")
        s.add_argument("--seed", type=int, default=1, help="training seed (recorded in `seeds`)")
        s.add_argument("--model", default="default", help="base encoder: default = the offline MiniLM, or a folder")
        s.add_argument("--fields", default="N,D,I", help="persona fields (N,D,I,P)")
        s.add_argument("--data-seed", type=int, default=0, help="synthetic generator seed (0 = the default files)")
        if real:
            s.add_argument("--dataset", required=True, choices=["amazon", "yelp"] + (["synthetic"] if with_synthetic else []))
            s.add_argument("--data-dir", default=str(DATA), help="the persona4rec folder (sample/, evaluation/)")
            s.add_argument("--pool", choices=["reviewed", "all"], default="reviewed",
                           help="items negatives come from: reviewed in the sample's histories (default) or also "
                                "items known only from the persona / 2_summary files")
            s.add_argument("--fold-seed", type=int, default=0)
            s.add_argument("--folds", type=int, default=5)
            s.add_argument("--pair-positions", choices=["all", "last"], default="all",
                           help="all: every history prefix -> next item, plus history -> held-out item; last: only the latter")
        s.add_argument("--max-history", type=int, default=20, help="interactions averaged into a user at scoring time")
        s.add_argument("--eval-max-seq-length", type=int, default=128, help="tokens per text at scoring time (both encoders)")
        s.add_argument("--agg", choices=["max", "mean"], default="max", help="over an item's personas")
        if train:
            s.add_argument("--steps", type=int, default=30 if synthetic_defaults else 60)
            s.add_argument("--batch-size", type=int, default=16)
            s.add_argument("--lr", type=float, default=5e-4 if synthetic_defaults else 2e-4)
            s.add_argument("--temperature", type=float, default=0.05)
            s.add_argument("--train-layers", type=int, default=2 if synthetic_defaults else 1,
                           help="train only the top N transformer layers (0 = all)")
            s.add_argument("--train-max-seq-length", type=int, default=64, help="tokens per text while training")
            s.add_argument("--train-max-history", type=int, default=4, help="interactions per user while training")
            s.add_argument("--warmup-steps", type=int, default=0, help="learning-rate warm-up")

    s = sub.add_parser("known", help="1. known answer on the example candidates + a rerank that can score nothing")
    common(s, real=True, train=False)
    s = sub.add_parser("rerank", help="2. sampled-100 on the real sample, 5-fold CV over users (one fold or all)")
    common(s, real=True, train=True)
    s.add_argument("--fold", type=int, default=None, help="0..folds-1 (default: every fold, one after the other)")
    s.add_argument("--sample-seed", type=int, default=0, help="negative sampling and tie-breaking")
    s.add_argument("--negatives", type=int, default=99)
    s.add_argument("--limit", type=int, default=0, help="smoke runs only: score at most N users of the fold")
    s = sub.add_parser("synthetic", help="3. planted structure: trained > zero-shot > random")
    common(s, real=False, train=True, synthetic_defaults=True)
    s = sub.add_parser("speed", help="training pairs/s on a fixed workload")
    common(s, real=True, train=True, with_synthetic=True)
    s.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    s.set_defaults(steps=20)
    s = sub.add_parser("cache", help="cache build (and reuse) time of pipeline.build_caches")
    common(s, real=True, train=False, with_synthetic=True)
    s.add_argument("--num-gpus", type=int, default=1)
    s.add_argument("--cache-batch-size", type=int, default=64)
    s = sub.add_parser("summarize", help="persona.json / persona.md")
    s.add_argument("--results-dir", default=str(RESULTS))
    s.add_argument("--folds", type=int, default=5)
    s.add_argument("--bootstrap", type=int, default=10000, help="resamples of users")
    s.add_argument("--bootstrap-seed", type=int, default=0)
    args = p.parse_args()
    if getattr(args, "fold", None) is not None and not 0 <= args.fold < args.folds:
        p.error(f"--fold must be in 0..{args.folds - 1}")
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from core.cli import run

    fn = {"known": cmd_known, "rerank": cmd_rerank, "synthetic": cmd_synthetic, "speed": cmd_speed, "cache": cmd_cache,
          "summarize": cmd_summarize}[args.cmd]
    run(lambda _argv=None: fn(args) or 0, [])


if __name__ == "__main__":
    main()
