"""Persona training (issue 7): known answers, a measured rerank on the real samples, planted structure,
training throughput and cache build time.

Pieces and their rows: benchmarks/README.md, "Persona training"; they merge into ``persona_runs.json``. The
protocol, the pooled folds, the bootstrap intervals and the speed rows are ``persona_training.evaluate``'s.
"""
from __future__ import annotations

import os
import shlex
import sys
from functools import cache, partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO, RESULTS, cli, devices, load_rows, machine, merge_rows, opt, row, \
    with_placeholders, write_json, write_md
from core.cli import resolve_device, run
from core.errors import DataError
from core.train import amp_dtype
from persona_training.evaluate import METRICS, Encoders, PlantedSample, Sample, cache_timings, evaluate_fold, \
    goal_verdict, known_answer, speed_rows, summary_rows, user_metrics

DATA = REPO.parent / "shared" / "data" / "persona4rec"
MODELS = ("random", "popularity", "zero-shot", "trained")
indented = partial(print, " ")  # a log line, indented by two spaces
KNOWN_HR10 = {"amazon": (21, 46), "yelp": (14, 77)}  # counted from the example files (data README)
# merge keys of persona_runs.json: a rerun of the same piece replaces its rows ("piece" = the subcommand)
QUALITY_KEY = ("piece", "dataset", "model", "protocol", "metric", "seeds", "fold")
SPEED_KEY = ("piece", "dataset", "model", "protocol", "metric", "seeds", "device", "amp")
# the flags a rerank / synthetic row records in its ``settings``
RERANK_SETTINGS = ("folds", "fold_seed", "sample_seed", "negatives", "pool", "fields", "max_history",
                   "eval_max_seq_length", "pair_positions", "train_max_history", "train_max_seq_length", "steps",
                   "batch_size", "lr", "temperature", "train_layers", "warmup_steps", "agg", "model", "amp", "limit")
SYNTHETIC_SETTINGS = ("data_seed", "fields", "max_history", "eval_max_seq_length", "train_max_seq_length", "steps",
                      "batch_size", "lr", "temperature", "train_layers", "warmup_steps", "agg", "model", "amp")


# --------------------------------------------------------------------------- helpers
def command_line() -> str:
    """This call, without ``--results-dir`` (where rows go is not part of what produced them)."""
    argv, flag = sys.argv[1:], "--results-dir"
    keep = [a for i, a in enumerate(argv) if not (a.split("=")[0] == flag or argv[i - 1:i] == [flag])]
    return "python -m benchmarks.persona " + " ".join(map(shlex.quote, keep))


def device_label(args) -> str:
    """``machine()`` on CPU; the GPU's name and the AMP state on CUDA."""
    if args.device.type != "cuda":
        return machine()
    dtype = amp_dtype(args.device, args.amp == "on")
    amp = str(dtype).removeprefix("torch.") if dtype else "off"
    return f"{args.device} {torch.cuda.get_device_name(args.device)}, AMP {amp}"


def xrow(args, dataset, model, protocol, metric, value, seeds=True, **extra) -> dict:
    """A row of this call (``seeds``: this call's seed, or none)."""
    return row(dataset, model, protocol, metric, value, seeds=[args.seed] if seeds else None, command=command_line(),
               piece=args.cmd, **extra) | {"device": device_label(args)}


def encoders(args) -> Encoders:
    """This call's encoders: the base model on its device, trained (pieces with ``--steps``) as the flags say."""
    from persona_training.config import TrainSection

    device, amp = str(args.device), args.amp == "on"
    train = TrainSection(model=args.model, max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                         temperature=args.temperature, max_seq_length=args.train_max_seq_length,
                         train_layers=args.train_layers, warmup_steps=args.warmup_steps, amp=amp, device=device,
                         seed=args.seed, log_every=max(1, args.steps // 4)) if hasattr(args, "steps") else None
    return Encoders(args.model, device, amp, args.agg, args.eval_max_seq_length, train)


def print_table(title: str, ranks: dict[str, dict], users: list) -> None:
    """Each model's mean metrics over ``users`` (``ranks``: model -> {user: rank})."""
    print(f"\n{title} ({len(users)} users)\n{'model':12s}" + "".join(f"{m:>9s}" for m in METRICS))
    for name, rs in ranks.items():
        m = {k: float(v.mean()) for k, v in user_metrics([rs[u] for u in users]).items()}
        print(f"{name:12s}" + "".join(f"{m[x]:9.4f}" for x in METRICS))


# --------------------------------------------------------------------------- 1. known answer
def cmd_known(args) -> None:
    """1. known answer on the example candidates + a rerank that can score nothing"""
    ds = args.dataset

    @cache
    def zero_shot():  # the model is loaded only if something can be scored
        enc = encoders(args)
        return enc.scorer(enc.base(), agg=False)

    res = known_answer(args.data_dir, ds, zero_shot, args.fields, args.max_history)
    m_up, m_re, counts, moved = res["upstream"], res["reranked"], res["counts"], res["unscored_moved"]
    hits, users = KNOWN_HR10[ds]
    ok = abs(m_up["HR@10"] - hits / users) < 1e-9 and m_up["users"] == users
    r = partial(xrow, args, ds, seeds=False)
    rows = [r("upstream", "candidates", m, float(m_up[m]), users=m_up["users"],
              known_answer=f"HR@10 = {hits}/{users} = {hits / users:.3f}",
              **({"known_answer_reproduced": bool(ok)} if m == "HR@10" else {})) for m in METRICS]
    counted = {k: counts[k] for k in ("users", "users_scored", "users_unchanged", "users_without_history",
                                      "candidates", "scored", "unknown_items", "pads")}
    loaded = zero_shot.cache_info().currsize > 0
    rows += [r("zero-shot", "candidates", m, float(m_re[m]), **counted, unscored_moved=moved, model_loaded=loaded)
             for m in METRICS]
    rows += [r("zero-shot", "candidates", metric, counts[k], **counted)
             for metric, k in (("candidates_scored", "scored"), ("users_kept_upstream_order", "users_unchanged"))]
    merge_rows(args.runs_file, rows, key=QUALITY_KEY)
    print(f"{ds}: upstream HR@10 {m_up['HR@10']:.4f}, known answer {hits}/{users} = {hits / users:.3f}: "
          f"{'reproduced' if ok else 'NOT REPRODUCED'}\nrerank: " + ", ".join(f"{k} {v}" for k, v in counted.items())
          + f"; unscored entries moved: {moved}; HR@10 after the rerank {m_re['HR@10']:.4f}")
    if not ok or moved:
        raise SystemExit("known-answer check failed")


# --------------------------------------------------------------------------- 2. measured rerank
def cmd_rerank(args) -> None:
    """2. sampled-100 on the real sample, 5-fold CV over users (one fold or all)"""
    if args.fold is not None and not 0 <= args.fold < args.folds:
        raise SystemExit(f"error: --fold must be in 0..{args.folds - 1}")
    sample, ds = Sample(args.data_dir, args.dataset, args.fields, args.pool, args.folds, args.fold_seed), args.dataset
    folds = [args.fold] if args.fold is not None else list(range(args.folds))
    print(f"{ds}: {len(sample.users)} users, {len(sample.scorable)} with a target that has text; pool {len(sample.pool)} "
          f"items ({len(set(sample.pool) & sample.from_personas)} with personas), folds {folds} of {args.folds}")
    enc = encoders(args)
    zs = enc.scorer(enc.base())  # one memo for all folds
    for fold in folds:
        f = evaluate_fold(sample, fold, enc, zs, negatives=args.negatives, sample_seed=args.sample_seed,
                          max_history=args.max_history, seed=args.seed, train_max_history=args.train_max_history,
                          pair_positions=args.pair_positions, limit=args.limit, log=indented)
        test, ranks, res = f["test"], f["ranks"], f["train"]
        persona_cands = sum(i in sample.from_personas for u in test for i in f["candidates"][u])
        common = {"fold": fold, "folds": args.folds, "settings": {n: getattr(args, n) for n in RERANK_SETTINGS}}
        rows = [xrow(args, ds, name, "sampled-100", "user_ranks", None, users=test, ranks=[ranks[name][u] for u in test],
                     skipped_users=f["skipped"], candidates_with_personas=persona_cands, **common) for name in MODELS]
        rows += [xrow(args, ds, "trained", "sampled-100", "pairs_per_s", res.pairs_per_s, train_pairs=len(f["pairs"]),
                      train_users=len(f["train_users"]), **train_info(res), **common),
                 xrow(args, ds, "trained", "sampled-100", "fold_seconds", f["fold_seconds"],
                      zero_shot_eval_seconds=f["zero_shot_seconds"], trained_eval_seconds=f["trained_seconds"], **common)]
        merge_rows(args.runs_file, rows, key=QUALITY_KEY)
        print_table(f"{ds} fold {fold}: sampled-100 ({args.negatives} negatives), {len(f['pairs'])} training pairs, "
                    f"{res.steps} steps, loss {res.first_loss:.3f} -> {res.last_loss:.3f}, {res.pairs_per_s:.1f} "
                    f"pairs/s; fold {f['fold_seconds']:.0f}s", {name: ranks[name] for name in MODELS}, test)
        if f["skipped"]:
            print(f"  not scored (target has no text in the sample): {len(f['skipped'])} user(s)")


def train_info(res) -> dict:
    return {"steps": res.steps, "train_seconds": res.seconds, "first_loss": res.first_loss, "last_loss": res.last_loss}


# --------------------------------------------------------------------------- 3. planted structure
def cmd_synthetic(args) -> None:
    """3. planted structure: trained > zero-shot > random"""
    planted = PlantedSample(args.data_seed, args.fields, args.max_history)
    test, items = planted.test, planted.items
    pairs, stats = planted.training_pairs(args.seed)
    enc = encoders(args)
    zero_shot = enc.scorer(enc.base())
    model, res = enc.trained(pairs, log=indented)
    ranks = planted.ranks({"zero-shot": zero_shot, "trained": enc.scorer(model)}, args.seed)
    settings = {n: getattr(args, n) for n in SYNTHETIC_SETTINGS}
    rows = [xrow(args, "synthetic", name, proto, "user_ranks", None, users=test, ranks=[rk[u] for u in test],
                 settings=settings, items=len(items)) for (proto, name), rk in ranks.items()]
    rows.append(xrow(args, "synthetic", "trained", "full", "pairs_per_s", res.pairs_per_s, train_pairs=len(pairs),
                     **train_info(res), settings=settings))
    merge_rows(args.runs_file, rows, key=QUALITY_KEY)
    print(f"synthetic seed {args.seed}: {len(pairs)} training pairs ({stats['source']}), {res.steps} steps, loss "
          f"{res.first_loss:.3f} -> {res.last_loss:.3f}, {res.pairs_per_s:.1f} pairs/s")
    for proto in ("full", "candidates"):
        print_table(f"synthetic, protocol {proto}", {n: rk for (p, n), rk in ranks.items() if p == proto}, test)


# --------------------------------------------------------------------------- speed and caches
def cmd_speed(args) -> None:
    """training pairs/s on a fixed workload (all users' pairs of one dataset), after warm-up steps"""
    if args.dataset == "synthetic":  # the synthetic default's selection pairs (seed 0 = build_pairs' default)
        pairs, _ = PlantedSample(args.data_seed, args.fields, args.train_max_history).training_pairs(0)
    else:
        sample = Sample(args.data_dir, args.dataset, args.fields, args.pool, args.folds, args.fold_seed)
        pairs = sample.training_pairs(sample.users, args.seed, args.train_max_history, args.pair_positions)
    _, res = encoders(args).trained(pairs, warmup=args.warmup, log=indented)
    texts_per_pair = float(np.mean([len(p[0]) + 1 for p in pairs]))
    merge_rows(args.runs_file, [xrow(
        args, args.dataset, "trained", "full", "pairs_per_s", res.pairs_per_s, amp=args.amp == "on" and
        args.device.type == "cuda", steps=res.steps, seconds=res.seconds, batch_size=args.batch_size,
        max_seq_length=args.train_max_seq_length, train_layers=args.train_layers, train_max_history=args.train_max_history,
        texts_per_pair=round(texts_per_pair, 2), pairs=len(pairs))], key=SPEED_KEY)
    print(f"{args.dataset}: {res.pairs_per_s:.2f} pairs/s ({res.steps} steps of {args.batch_size}, "
          f"{texts_per_pair:.1f} texts per pair) on {device_label(args)}")


def cmd_cache(args) -> None:
    """cache build (and reuse) time of pipeline.build_caches (interactions, personas)"""
    info, build_s, reuse_s = cache_timings(args.dataset, args.data_dir, args.data_seed, log=indented, model=args.model,
                                           fields=args.fields, device=str(args.device), amp=args.amp == "on",
                                           num_gpus=args.num_gpus, batch_size=args.cache_batch_size)
    extra = {"interaction_rows": info["interactions"]["rows"], "persona_rows": info["personas"]["rows"],
             "interactions_s": info["interactions"]["seconds"], "personas_s": info["personas"]["seconds"],
             "devices": info["devices"], "amp": args.amp == "on" and args.device.type == "cuda",
             "note": "wall time of pipeline.build_caches from scratch (model load, both caches, float16 memmaps)"}
    model_name = "zero-shot" if args.model in ("default", "all-MiniLM-L6-v2") else "trained"
    merge_rows(args.runs_file, [xrow(args, args.dataset, model_name, "full", metric, value, **extra) for metric, value
                                in (("cache_build_s", build_s), ("cache_reuse_s", reuse_s))], key=SPEED_KEY)
    print(f"{args.dataset}: caches built in {build_s:.1f}s ({extra['interaction_rows']} interaction rows, "
          f"{extra['persona_rows']} persona rows), reused in {reuse_s:.2f}s, on {device_label(args)}")


# --------------------------------------------------------------------------- summary
SECTIONS = {("amazon", "sampled-100"): [
    "## 2. Measured rerank on the real samples (protocol `sampled-100`)", "",
    "Each user of `3.5_history_loo` ranks the held-out item of `3.5_gt` among 99 items of the same sample "
    "they never reviewed (fixed seed); item text = personas when the item has them, else the item summary "
    "its reviews carry. 5-fold cross-validation over users: the trained encoder of a fold never saw its "
    "users. Value [95% bootstrap interval over users]. **50 users is a small sample**: intervals of "
    "±0.1 on HR@10 are expected, and differences inside them are not evidence.", ""], ("synthetic", "full"): [
    "## 3. Planted structure (synthetic persona-format default)", "",
    "Test users of `persona_training.synthetic` (never trained on): `full` ranks the target among all "
    "items outside the user's history; `candidates` reranks the 20 upstream candidates (random upstream "
    "scores, some `[PAD]`) with `scoring.rerank_lists`. Value [95% bootstrap interval over users].", ""]}


def generic_command(command: str, seeds: bool = True) -> str:
    """A piece's command with its fold (and, over several seeds, its seed) written as ``<F>`` / ``<N>``."""
    return with_placeholders(command, {"--fold": "<F>", **({"--seed": "<N>"} if seeds else {})})


def fmt_ci(r) -> str:
    return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r else ""


def cmd_summarize(args) -> None:
    """persona.json / persona.md: pooled folds, bootstrap intervals over users, paired differences"""
    from core.report import format_table

    md = partial(format_table, markdown=True)  # column-aligned, unlike md_table
    runs = load_rows(args.runs_file)
    known = [r for r in runs if r["protocol"] == "candidates" and r["dataset"] != "synthetic" and r["metric"] != "user_ranks"]
    out = list(known)
    lines = ["# Persona training: known answers, measured rerank, planted structure, speed", "",
             "## 1. Known answer on the example candidate files (protocol `candidates`)", "",
             "Upstream order of `evaluation/<dataset>/candidate.jsonl` scored by `core.candidates`; the rerank "
             "(zero-shot MiniLM through `scoring.rerank_lists`) can score only candidates with personas for users "
             "with a history in the sample, and the example files have neither, so every list keeps its upstream "
             "order.", ""]
    hr10 = {(r["dataset"], r["model"]): r for r in known if r["metric"] == "HR@10"}  # ``known`` writes both models
    kt = [{"dataset": ds, "expected HR@10": up["known_answer"], "upstream HR@10": f"{up['value']:.4f}",
           "reproduced": up["known_answer_reproduced"], "users": up["users"],
           "after rerank HR@10": f"{re_['value']:.4f}", "candidates scored": re_["scored"],
           "lists kept in upstream order": f"{re_['users_unchanged']}/{re_['users']}"}
          for ds in KNOWN_HR10 if (up := hr10.get((ds, "upstream"))) and (re_ := hr10[(ds, "zero-shot")])]
    lines += [md(kt, list(kt[0])) if kt else "not run yet", ""]
    verdicts = []
    for ds, proto in (("amazon", "sampled-100"), ("yelp", "sampled-100"), ("synthetic", "full"), ("synthetic", "candidates")):
        lines += SECTIONS.get((ds, proto), [])
        try:  # the pooled folds of this dataset's and protocol's ``user_ranks`` rows
            rows, data = summary_rows([r for r in runs if r["metric"] == "user_ranks" and r["dataset"] == ds
                                       and r["protocol"] == proto], args.bootstrap, args.bootstrap_seed,
                                      lambda d: generic_command(d["records"][0]["command"], len(d["seeds"]) > 1))
        except DataError as exc:
            raise SystemExit(f"{ds}/{exc}") from None
        out += rows
        if not rows:
            continue
        by, real, table = {(r["model"], r["metric"]): r for r in rows}, ds != "synthetic", []
        for m in (m for m in ("upstream", *MODELS) if (m, "NDCG@10") in by):
            d = data[m]
            table.append({"dataset": ds, "model": m if real else f"{m} ({proto})", "users": by[(m, "NDCG@10")]["users"],
                          "folds": f"{len(d['folds'])}/{args.folds}" + (" (limited)" if d["limited"] else "") if real else "",
                          "seeds": len(d["seeds"]), **{x: fmt_ci(by.get((m, x))) for x in METRICS}})
            if real and len(d["settings"]) > 1:
                lines.append(f"**Warning**: {ds}/{m} pools folds run with different settings: "
                             + "; ".join(f"folds {f}" for f in d["settings"].values()))
        lines += [md(table, ["dataset", "model", "users", "folds", "seeds"] + METRICS), ""]
        diffs = [r for r in rows if r["metric"].startswith("NDCG@10_minus_")]
        if real and diffs:
            lines += [md([{"dataset": ds, "comparison": f"{r['model']} - {r['metric'].removeprefix('NDCG@10_minus_')}",
                           "NDCG@10 difference": fmt_ci(r), "p (bootstrap, one-sided)": f"{r['p_boot']:.3f}"} for r in diffs],
                         ["dataset", "comparison", "NDCG@10 difference", "p (bootstrap, one-sided)"]), ""]
        if proto != "candidates":
            verdicts.append(goal_verdict(ds, by, planted=not real))
    if verdicts:
        lines += ["### Goal: trained beats zero-shot and random on NDCG@10", ""] + [f"- {v}" for v in verdicts] + [""]
    sp = speed_rows(runs, generic_command)
    out += sp
    settings = ("batch_size", "max_seq_length", "train_max_seq_length", "train_layers", "train_max_history")
    speed_table = [{**r, "value": f"{r['value']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] else ""),
                    "setting": ", ".join(f"{k} {r[k]}" for k in settings if k in r)} for r in sp]
    lines += ["## Training throughput and cache build time", "",
              md(speed_table, ["dataset", "piece", "metric", "protocol", "value", "runs", "setting", "device"])
              if sp else "not run yet",
              "", "`pairs_per_s` (protocol `full`): `speed` on a fixed workload after warm-up steps; (protocol "
              "`sampled-100`): the training of the rerank folds, mean ± std over folds. `fold_seconds`: wall time of "
              "one fold (zero-shot scoring, training, trained scoring). `cache_build_s`: `pipeline.build_caches` "
              "from scratch; `cache_reuse_s`: the same call when both caches are fresh.", "",
              f"Commands: the `command` field of each row in `persona.json`. Devices: {devices(runs) or 'none yet'}."]
    write_json(Path(args.results_dir) / "persona.json", out)
    write_md(Path(args.results_dir) / "persona.md", lines)


# --------------------------------------------------------------------------- command line
def options(real: bool, train: bool, synthetic: bool = False, with_synthetic: bool = False, steps=None) -> list:
    """The options of a piece: on the real samples (``real``) or the synthetic files, training or not."""
    out = [opt("--results-dir", default=str(RESULTS), help="where persona_runs.json (and the summary) go"),
           opt("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)"),
           opt("--amp", choices=["on", "off"], default="on", help="autocast on CUDA (no effect on CPU)"),
           opt("--seed", type=int, default=1, help="training seed (recorded in `seeds`)"),
           opt("--model", default="default", help="base encoder: default = the offline MiniLM, or a folder"),
           opt("--fields", default="N,D,I", help="persona fields (N,D,I,P)"),
           opt("--data-seed", type=int, default=0, help="synthetic generator seed (0 = the default files)"),
           opt("--max-history", type=int, default=20, help="interactions averaged into a user at scoring time"),
           opt("--eval-max-seq-length", type=int, default=128, help="tokens per text at scoring time (both encoders)"),
           opt("--agg", choices=["max", "mean"], default="max", help="over an item's personas")]
    if real:
        out += [opt("--dataset", required=True, choices=["amazon", "yelp"] + (["synthetic"] if with_synthetic else [])),
                opt("--data-dir", default=str(DATA), help="the persona4rec folder (sample/, evaluation/)"),
                opt("--pool", choices=["reviewed", "all"], default="reviewed",
                    help="items negatives come from: reviewed in the sample's histories (default) or also "
                         "items known only from the persona / 2_summary files"),
                opt("--fold-seed", type=int, default=0), opt("--folds", type=int, default=5),
                opt("--pair-positions", choices=["all", "last"], default="all",
                    help="all: every history prefix -> next item, plus history -> held-out item; last: only the latter")]
    if train:
        out += [opt("--steps", type=int, default=steps or (30 if synthetic else 60)),
                opt("--batch-size", type=int, default=16), opt("--lr", type=float, default=5e-4 if synthetic else 2e-4),
                opt("--temperature", type=float, default=0.05),
                opt("--train-layers", type=int, default=2 if synthetic else 1,
                    help="train only the top N transformer layers (0 = all)"),
                opt("--train-max-seq-length", type=int, default=64, help="tokens per text while training"),
                opt("--train-max-history", type=int, default=4, help="interactions per user while training"),
                opt("--warmup-steps", type=int, default=0, help="learning-rate warm-up")]
    return out


def main() -> None:
    args = cli(__doc__, {
        "known": (cmd_known, options(real=True, train=False)),
        "rerank": (cmd_rerank, options(real=True, train=True) + [
            opt("--fold", type=int, default=None, help="0..folds-1 (default: every fold, one after the other)"),
            opt("--sample-seed", type=int, default=0, help="negative sampling and tie-breaking"),
            opt("--negatives", type=int, default=99),
            opt("--limit", type=int, default=0, help="smoke runs only: score at most N users of the fold")]),
        "synthetic": (cmd_synthetic, options(real=False, train=True, synthetic=True)),
        "speed": (cmd_speed, options(real=True, train=True, with_synthetic=True, steps=20)
                  + [opt("--warmup", type=int, default=2, help="untimed steps first")]),
        "cache": (cmd_cache, options(real=True, train=False, with_synthetic=True)
                  + [opt("--num-gpus", type=int, default=1), opt("--cache-batch-size", type=int, default=64)]),
        "summarize": (cmd_summarize, [opt("--results-dir", default=str(RESULTS)), opt("--folds", type=int, default=5),
                                      opt("--bootstrap", type=int, default=10000, help="resamples of users"),
                                      opt("--bootstrap-seed", type=int, default=0)])}, call=False)
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    args.runs_file = Path(args.results_dir) / "persona_runs.json"  # where every piece merges its rows
    for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(offline, "1")

    def piece(_argv=None) -> int:
        if hasattr(args, "device"):
            args.device = resolve_device(args.device)  # a torch.device from here on (errors: one line, exit 2)
        return args.fn(args) or 0

    run(piece, [])


if __name__ == "__main__":
    main()
