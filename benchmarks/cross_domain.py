"""Cross-domain transfer for cold-start users (issue 8): transfer vs baseline vs PTUPCDR-style bridge.

Pieces (``run --dataset D --seed N``, ``peer --dataset D --seed N``, ``summarize``: benchmarks/README.md, "Cross-domain
transfer"). A ``run`` calls ``python -m cross_domain`` stage by stage (``train-source``,
``train-target-baseline``, ``train-target-transfer`` with ``transfer.bridge`` mlp and ptupcdr,
``eval-compare``) under ``run_name=bench-seed<N>``, reusing a stage whose ``results.json``
exists (``--retrain``: train it again), and merges its rows into ``cross_domain_runs.json``;
``summarize`` adds a Wilcoxon test over the users' NDCG@10 averaged across seeds when the runs'
``test_ranks.npz`` are still on disk.
"""
from __future__ import annotations

import functools
import json
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, aggregate, cli, devices, load_rows, machine, md_table, merge_rows, opt, \
    overrides, pm, row, run_module, write_json, write_md

RUNS_FILE = RESULTS / "cross_domain_runs.json"
DATASETS = {  # benchmark name -> (config, row label, folder under state_dict/cross_domain, source, target)
    "synthetic": ("configs/cross_domain/synthetic.yaml", "synthetic", "synthetic", "B", "A"),
    "food": ("configs/cross_domain/food.yaml", "Food-Kitchen/Food", "food-kitchen", "kitchen", "food"),
    "kitchen": ("configs/cross_domain/kitchen.yaml", "Food-Kitchen/Kitchen", "food-kitchen", "food", "kitchen"),
}
KINDS = ("baseline", "transfer", "ptupcdr")
METRICS = ("NDCG@10", "HR@10", "MRR", "NDCG@20", "HR@20")
SUBSETS = ("all", "cold", "warm", "cold-none", "leak-controlled", "cold-leak-controlled")  # evaluate.subset_masks
KEY = ("dataset", "model", "protocol", "subset", "metric", "seeds")


def protocol_label(name: str) -> str:
    """The pipeline's ``sampled-99`` (99 negatives) is the issue's ``sampled-100`` (100 candidates)."""
    return f"sampled-{int(name.split('-')[1]) + 1}" if name.startswith("sampled-") else name


def stage_folder(dataset: str, kind: str) -> str:
    _, _, _, s, t = DATASETS[dataset]
    return {"source": f"source-{s}", "baseline": f"baseline-{t}", "compare": f"compare-{s}-{t}"}.get(kind, f"{kind}-{s}-{t}")


def run_dir(dataset: str, seed: int) -> Path:
    return REPO / "state_dict" / "cross_domain" / DATASETS[dataset][2] / f"bench-seed{seed}"


def cmd_run(args) -> None:
    """one dataset and seed: source, baseline, transfer, ptupcdr, compare"""
    _, label, _, source, target = DATASETS[args.dataset]
    src, tgt = ["--source", source], ["--target", target]
    home = run_dir(args.dataset, args.seed)
    commands = run_stages(args, f"run_name=bench-seed{args.seed},overwrite=true", {  # stage -> subcommand, flags, override
        "source": ("train-source", src, ""), "baseline": ("train-target-baseline", tgt, ""),
        "transfer": ("train-target-transfer", src + tgt, ",transfer.bridge=mlp"),
        "ptupcdr": ("train-target-transfer", src + tgt, ",transfer.bridge=ptupcdr"),
        "compare": ("eval-compare", src + tgt, "")}, home, always=("compare",))
    comp = json.loads((home / stage_folder(args.dataset, "compare") / "compare.json").read_text())
    r = partial(row, label, seeds=[args.seed], command=commands["compare"])
    rows = []
    for kind in KINDS:
        stage = json.loads((home / stage_folder(args.dataset, kind) / "results.json").read_text())
        extra = {"best_epoch": stage["best_epoch"], "epochs_run": stage["epochs_run"],
                 "train_command": commands[kind], "run_dir": str((home / stage_folder(args.dataset, kind)).relative_to(REPO))}
        for proto, by_subset in comp["test"][kind].items():
            for subset in ("all", "cold", "warm"):
                users = comp["users"][subset]
                rows += [r(kind, protocol_label(proto), metric, by_subset[subset][metric], subset=subset, users=users,
                           **extra) for metric in METRICS if metric in by_subset.get(subset, {})]
                if test := comp["paired_vs_baseline"].get(kind, {}).get(proto, {}).get(subset):
                    rows.append(p_row(r, kind, protocol_label(proto), test, subset, users))
        rows.append(r(kind, "full", "sec_per_epoch", stage["sec_per_epoch"], command=commands[kind], subset="all", unit="s",
                      **extra))
    src = json.loads((home / stage_folder(args.dataset, "source") / "results.json").read_text())
    # the source stage serves both transfer models; its time is filed under the MLP transfer row
    rows.append(r("transfer", "full", "source_sec_per_epoch", src["sec_per_epoch"], command=commands["source"],
                  subset="all", unit="s", best_epoch=src["best_epoch"], epochs_run=src["epochs_run"]))
    rows += [r("popularity", protocol_label(proto), "NDCG@10", by_subset[subset]["NDCG@10"], subset=subset,
               users=comp["users"][subset]) for proto, by_subset in comp["test"]["popularity"].items()
             for subset in ("all", "cold", "warm") if "NDCG@10" in by_subset.get(subset, {})]
    rows.append(r("protocol", "full", "users", None, subset="all", counts=comp["protocol"]))
    # the finer subsets, from the runs' test_ranks.npz: cold-none (the cold users cut to no target history at all,
    # where only the source can say anything about the user) and the leak-controlled view
    cfg, ranks, masks = stage_ranks(args, home, KINDS)
    rows += [x for subset in SUBSETS[3:] for x in subset_rows(r, ranks, masks[subset], cfg.eval.ks, subset)]
    merge_rows(RUNS_FILE, rows, key=KEY)
    t = comp["test"]
    print(f"{label} seed {args.seed}, full NDCG@10 (cold / warm): " + "; ".join(
        f"{k} {t[k]['full']['cold']['NDCG@10']:.4f} / {t[k]['full']['warm']['NDCG@10']:.4f}" for k in KINDS))


def run_stages(args, run: str, stages: dict, home: Path, always=()) -> dict[str, str]:
    """``python -m cross_domain`` stage by stage (stage -> its subcommand, flags and extra override;
    every stage gets ``--config``, this seed and ``run`` and ``--override``), each unless its
    ``results.json`` exists (``--retrain``, or a stage in ``always``: in any case); the command lines."""
    over = overrides(f"seed={args.seed},{run}", args.override)
    return {stage: run_module(f"cross_domain {sub}", DATASETS[args.dataset][0], over + extra, *flags, run=stage in always
                              or args.retrain or not (home / stage_folder(args.dataset, stage) / "results.json").is_file())
            for stage, (sub, flags, extra) in stages.items()}


def stage_ranks(args, home: Path, kinds) -> tuple:
    """The dataset's config (this call's source and target), the stages' ``test_ranks.npz`` and
    ``cross_domain.evaluate.subset_masks`` over the baseline's test users."""
    from cross_domain.evaluate import subset_masks

    config, _, _, source, target = DATASETS[args.dataset]
    cfg = load_cfg(config, overrides(args.override, f"data.source={source},data.target={target}"))
    ranks = {k: np.load(home / stage_folder(args.dataset, k) / "test_ranks.npz") for k in kinds}
    return cfg, ranks, subset_masks(cfg, ranks["baseline"]["users"], ranks["baseline"]["cold"])


def subset_rows(r, ranks: dict, mask, ks, subset: str, model=lambda kind: kind, extra=lambda kind: {}) -> list[dict]:
    """The metric and paired-test rows of ``cross_domain.evaluate.masked_reports`` on one subset
    (``r``: the run's ``row``; ``model`` and ``extra``: a stage's row name and fields)."""
    from cross_domain.evaluate import masked_reports

    users, rows = int(mask.sum()), []
    for kind, by_protocol in masked_reports(ranks, mask, ks).items():
        name, rk = model(kind), partial(r, subset=subset, users=users, **extra(kind))
        for proto, (m, test) in by_protocol.items():
            rows += [rk(name, protocol_label(proto), metric, m[metric]) for metric in METRICS if metric in m]
            if test:
                rows.append(p_row(rk, name, protocol_label(proto), test, subset, users))
    return rows


def p_row(r, kind: str, proto: str, test: dict, subset: str, users: int) -> dict:
    """The row of a paired test of ``kind`` against the baseline (``r``: the run's ``row``)."""
    return r(kind, proto, "p_wilcoxon_vs_baseline", test["p_wilcoxon"], subset=subset, users=users,
             mean_ndcg10_diff=test["mean_diff"], better=test["better"], worse=test["worse"])


def load_cfg(config: str, over: str = ""):
    from core.config import load_config
    from cross_domain.config import CrossDomainConfig

    return load_config(CrossDomainConfig, str(REPO / config), over)


@functools.lru_cache
def user_masks_of(label: str) -> dict[str, np.ndarray]:
    """``cross_domain.evaluate.user_masks`` of a row label's config (the cold split does not
    depend on the seed)."""
    from cross_domain.evaluate import user_masks

    return user_masks(load_cfg(next(v[0] for v in DATASETS.values() if v[1] == label)))


def cmd_peer(args) -> None:
    """one dataset and seed (issue 23): the target-only baseline and the merged-domain SASRec
    (model sasrec-merged), both on the cold protocol, with the leak-controlled view"""
    from cross_domain.evaluate import popularity_ranks, subset_metrics

    _, label, _, source, target = DATASETS[args.dataset]
    name = f"bench-{args.tag}-seed{args.seed}" if args.tag else f"bench-seed{args.seed}"
    suffix = f"-{args.tag}" if args.tag else ""
    home = run_dir(args.dataset, args.seed).with_name(name)
    both = ["--source", source, "--target", target]
    stages = {"baseline": ("train-target-baseline", ["--target", target], ""), "merged": ("train-target-merged", both, "")}
    if args.fuse:  # no training: the two models above, fused (and the target-only ensemble control)
        stages["fusion"] = ("fuse", both, "")
        if args.partner_seed:
            partner = name.removesuffix(f"seed{args.seed}") + f"seed{args.partner_seed}"
            stages["ensemble"] = ("fuse", both + ["--partner-run", partner], "")
    commands = run_stages(args, f"run_name={name}", stages, home)
    cfg, ranks, masks = stage_ranks(args, home, commands)
    users = ranks["baseline"]["users"]

    def extra(kind):
        stage = json.loads((home / stage_folder(args.dataset, kind) / "results.json").read_text())
        fields = {"best_epoch": stage["best_epoch"], "epochs_run": stage["epochs_run"]} if "best_epoch" in stage else {
            "w_cold": stage["choice"]["w_cold"], "w_warm": stage["choice"]["w_warm"]}
        return {"command": commands[kind], **fields, "device": machine(stage.get("threads") or stage["run"]["threads"]),
                "run_dir": str((home / stage_folder(args.dataset, kind)).relative_to(REPO))}

    rows = [x for subset, mask in masks.items() for x in subset_rows(
        partial(row, label, seeds=[args.seed]), ranks, mask, cfg.eval.ks, subset,
        lambda kind: ("sasrec-merged" if kind == "merged" else kind) + suffix, extra) if x["protocol"] == "full"]
    # full ranking only: the peer's table and goals are full-ranking ones (the `run` piece keeps
    # the sampled protocol), and sampled rows doubled the runs file
    get = {(x["model"].removesuffix(suffix), x["protocol"], x["subset"], x["metric"]): x["value"] for x in rows}
    # popularity over the same training data, for scale: the leak-controlled events are the hard ones
    pop = popularity_ranks(cfg)
    if not np.array_equal(pop["users"], users):
        raise SystemExit("popularity scored other users than the baseline's test_ranks.npz")
    for subset, mask in masks.items():
        if subset not in ("all", "cold", "warm") and mask.any():  # those three are the `run` piece's rows
            m = subset_metrics(pop["full"], mask, cfg.eval.ks)
            rows.append(row(label, "popularity", "full", "NDCG@10", m["NDCG@10"], seeds=[args.seed], subset=subset,
                            users=int(mask.sum()), command=commands["baseline"], device=machine(1)))
    # untagged, the baseline's all / cold / warm / cold-none rows are the `run` piece's (same seed
    # and run folder): only its leak-controlled subsets are new here
    merge_rows(RUNS_FILE, [x for x in rows if suffix or x["model"] not in ("baseline", "popularity")
                           or x["subset"] not in ("all", "cold", "warm", "cold-none")], key=KEY)
    for subset, mask in masks.items():
        if mask.any():
            print(f"{label} seed {args.seed} {subset} ({int(mask.sum())} users), full NDCG@10: popularity "
                  f"{subset_metrics(pop['full'], mask, cfg.eval.ks)['NDCG@10']:.4f}, baseline "
                  f"{get[('baseline', 'full', subset, 'NDCG@10')]:.4f}, sasrec-merged "
                  f"{get[('sasrec-merged', 'full', subset, 'NDCG@10')]:.4f} "
                  f"(p={get[('sasrec-merged', 'full', subset, 'p_wilcoxon_vs_baseline')]:.2g})"
                  + "".join(f", {k} {get[(k, 'full', subset, 'NDCG@10')]:.4f}" for k in ("fusion", "ensemble") if k in stages))


# --------------------------------------------------------------------------- summary
def budget_tag(kind: str) -> str:
    """The training budget's suffix of a row's model (``sasrec-merged-e60`` -> ``-e60``)."""
    return next((kind.removeprefix(k) for k in ("sasrec-merged", "fusion", "ensemble", *KINDS) if kind.startswith(k)), "")


def seed_averaged_test(runs: list[dict], label: str, kind: str, proto: str, subset: str,
                       base: str = "baseline") -> dict | None:
    """``cross_domain.evaluate.seed_averaged_test`` of ``kind`` vs ``base`` (of the same training
    budget) over the seeds whose runs' ``test_ranks.npz`` are still on disk (None with fewer than two)."""
    from cross_domain.evaluate import seed_averaged_test as ranks_test

    base += budget_tag(kind)
    dirs = {}
    for r in runs:
        if r["dataset"] == label and r.get("run_dir") and r["model"] in (kind, base):
            dirs.setdefault(r["model"], {})[r["seeds"][0]] = REPO / r["run_dir"] / "test_ranks.npz"
    seeds = sorted(set(dirs.get(kind, {})) & set(dirs.get(base, {})))
    if len(seeds) < 2 or not all(dirs[m][s].is_file() for m in (kind, base) for s in seeds):
        return None
    t = ranks_test([dirs[base][s] for s in seeds], [dirs[kind][s] for s in seeds],
                   {"sampled-100": "sampled-99"}.get(proto, proto), subset,
                   None if subset in ("all", "cold", "warm") else user_masks_of(label)[subset])
    return {"p": t["wilcoxon_p"], "mean_diff": t["mean_diff"], "users": t["users"], "seeds": seeds}


def cmd_summarize(args) -> None:
    """cross_domain.json / cross_domain.md: means over seeds, seed-averaged paired tests, the verdict"""
    runs = load_rows(RUNS_FILE)
    value_runs = [r for r in runs if r["model"] in KINDS and r["metric"] != "p_wilcoxon_vs_baseline"]
    out = []
    for subset in SUBSETS:
        _, agg = aggregate([r for r in value_runs if r.get("subset") == subset], skip=())
        out += [r | {"subset": subset} for r in agg]
    tests = {}  # (dataset, model, protocol, subset, the model compared against) -> per-seed test rows
    for r in runs:
        if r["metric"] == "p_wilcoxon_vs_baseline":
            key = (r["dataset"], r["model"], r["protocol"], r["subset"])
            tests.setdefault((*key, "baseline"), []).append(r)
            if r["model"].startswith("fusion"):  # and against its control, the target-only ensemble
                tests.setdefault((*key, "ensemble"), []).append(r)
    # a seed-averaged test needs the runs' test_ranks.npz: on a machine without them (a fresh
    # clone) the row computed where they were is kept, as cross_domain.json holds it
    stored = {(r["dataset"], r["model"], r["protocol"], r["subset"], r["metric"]): r
              for r in load_rows(RESULTS / "cross_domain.json")
              if r["metric"].startswith("p_wilcoxon_vs_") and r.get("test") == "seed-averaged NDCG@10 per user"}
    for (label, kind, proto, subset, base), rs in sorted(tests.items()):
        pooled = seed_averaged_test(runs, label, kind, proto, subset, base)
        metric = f"p_wilcoxon_vs_{base}"
        old = stored.get((label, kind, proto, subset, metric))
        if base != "baseline":  # no per-seed rows to fall back on: the pooled test or the stored one
            if pooled:
                out.append(row(label, kind, proto, metric, pooled["p"], seeds=pooled["seeds"], command=rs[0]["command"],
                               subset=subset, test="seed-averaged NDCG@10 per user", mean_ndcg10_diff=pooled["mean_diff"]))
            elif old:
                out.append(old)
            continue
        if pooled is None and old and old["seeds"] == sorted(s for r in rs for s in r["seeds"]):
            out.append(old)
            continue
        out.append(row(label, kind, proto, "p_wilcoxon_vs_baseline", pooled["p"] if pooled else max(r["value"] for r in rs),
                       seeds=sorted(s for r in rs for s in r["seeds"]), command=rs[0]["command"], subset=subset,
                       test="seed-averaged NDCG@10 per user" if pooled else "largest per-seed p",
                       per_seed_p=[r["value"] for r in sorted(rs, key=lambda r: r["seeds"])],
                       mean_ndcg10_diff=pooled["mean_diff"] if pooled else float(np.mean([r["mean_ndcg10_diff"] for r in rs]))))
    write_json(RESULTS / "cross_domain.json", out)

    by = {(r["dataset"], r["model"], r["protocol"], r["subset"], r["metric"]): r for r in out}
    pop = {}
    for r in runs:
        if r["model"] == "popularity":
            pop.setdefault((r["dataset"], r["protocol"], r["subset"]), []).append(r["value"])
    labels = [v[1] for v in DATASETS.values() if any(r["dataset"] == v[1] for r in out)]
    keys = [(label, proto, subset) for label in labels for proto in ("full", "sampled-100") for subset in SUBSETS
            if (label, "baseline", proto, subset, "NDCG@10") in by]
    g = lambda k, kind, metric="NDCG@10": by.get((k[0], kind, k[1], k[2], metric))  # noqa: E731

    def vs_base(k, kind):
        b, m, p = g(k, "baseline"), g(k, kind), g(k, kind, "p_wilcoxon_vs_baseline")
        return f"{100 * (m['value'] / b['value'] - 1):+.1f}% (p={p['value']:.2g})" if m and p and b["value"] else ""

    users = lambda k: next((r.get("users") for r in runs if (r["dataset"], r["protocol"], r.get("subset"), r["model"],  # noqa: E731
                                                             r["metric"]) == (*k, "baseline", "NDCG@10")), "")
    sec = lambda kind, metric="sec_per_epoch": lambda label: (  # noqa: E731
        f"{r['value']:.2f}" if (r := by.get((label, kind, "full", "all", metric))) else "")
    write_md(RESULTS / "cross_domain.md", [
        "# Cross-domain transfer for cold-start users (test, NDCG@10, mean ± std over seeds)", "",
        "`vs base`: relative NDCG@10 change of the model over the target-only baseline; p: Wilcoxon signed-rank "
        "over users (per-user NDCG@10 averaged across seeds, or the largest per-seed p when the ranks are gone).", "",
        *md_table([("dataset", lambda k: k[0]), ("protocol", lambda k: k[1]), ("users", lambda k: f"{k[2]} {users(k)}"),
                   ("popularity", lambda k: f"{np.mean(pop[k]):.4f}" if k in pop else None),
                   *((kind, lambda k, kind=kind: pm(g(k, kind))) for kind in KINDS),
                   *((f"{kind} vs base", lambda k, kind=kind: vs_base(k, kind)) for kind in ("transfer", "ptupcdr")),
                   ("seeds", lambda k: len(g(k, "baseline")["seeds"]))], keys),
        "", "Seconds per training epoch (mean over seeds; the source stage is shared by both transfer models):", "",
        *md_table([("dataset", lambda label: label), ("source", sec("transfer", "source_sec_per_epoch")),
                   *((kind, sec(kind)) for kind in KINDS)], labels),
        *peer_table(runs, by),
        "", "Goal: transfer beats the target-only baseline on cold users by a clear, significant margin on "
        "Food-Kitchen, and does not hurt warm users.",
        *[f"- {_verdict(label, by)}" for label in labels if label.startswith("Food-Kitchen")], "",
        f"Device: {devices(runs) or machine()}. Commands: the `command` and `train_command` fields of "
        "cross_domain_runs.json."])


def peer_table(runs: list[dict], by: dict) -> list[str]:
    """The `peer` piece's rows (issue 23): popularity, the target-only baseline, the merged-domain
    SASRec, their fusion and its control (the fusion of two baselines) per training budget, on every
    subset including the leak-controlled view; full ranking, NDCG@10, mean over seeds; p: the
    seed-averaged test of ``by`` (summarize's rows) where there is one, else the largest per-seed p."""
    peer = [r for r in runs if r.get("subset") in SUBSETS and r["protocol"] == "full"
            and r["metric"] in ("NDCG@10", "p_wilcoxon_vs_baseline")
            and r["model"].startswith(("popularity", "baseline", "sasrec-merged", "fusion", "ensemble"))]
    tags = sorted({r["model"].removeprefix("sasrec-merged") for r in peer if r["model"].startswith("sasrec-merged")})
    if not tags:
        return []
    val = {}
    for r in peer:
        val.setdefault((r["dataset"], r["model"], r["subset"], r["metric"]), []).append(r)
    mean = lambda rs: f"{np.mean([r['value'] for r in rs]):.4f}" if rs else ""  # noqa: E731

    def versus(label, model, base, subset, b, m) -> str:
        if not (b and m):
            return ""
        gain = float(np.mean([r["value"] for r in m]) / np.mean([r["value"] for r in b]) - 1)
        pooled = by.get((label, model, "full", subset, f"p_wilcoxon_vs_{base}"))
        p = [pooled] if pooled and pooled.get("test") == "seed-averaged NDCG@10 per user" else \
            val.get((label, model, subset, "p_wilcoxon_vs_baseline"), []) if base == "baseline" else []
        return f"{100 * gain:+.1f}%" + (f" (p={max(r['value'] for r in p):.2g})" if p else "")

    items = []
    for label in sorted({r["dataset"] for r in peer}):
        for tag in tags:
            budget = "20 epochs (patience 3)" if not tag else tag.lstrip("-")
            for subset in SUBSETS:
                b, m = val.get((label, "baseline" + tag, subset, "NDCG@10")), val.get((label, "sasrec-merged" + tag, subset, "NDCG@10"))
                seeds = {r["seeds"][0] for r in m or []}  # the others over the seeds the merged model has
                b = [r for r in b or [] if r["seeds"][0] in seeds]
                if not (b and m):
                    continue
                f, e = ([r for r in val.get((label, k + tag, subset, "NDCG@10"), []) if r["seeds"][0] in seeds]
                        for k in ("fusion", "ensemble"))
                pop = val.get((label, "popularity", subset, "NDCG@10")) or [
                    r for r in runs if (r["dataset"], r["model"], r["protocol"], r.get("subset"), r["metric"])
                    == (label, "popularity", "full", subset, "NDCG@10")]
                items.append([label, budget, f"{subset} {b[0].get('users', '')}", mean(pop), mean(b), mean(m),
                              versus(label, "sasrec-merged" + tag, "baseline", subset, b, m), mean(e), mean(f),
                              versus(label, "fusion" + tag, "baseline", subset, b, f),
                              versus(label, "fusion" + tag, "ensemble", subset, e, f), len(m)])
    verdicts = []
    for label in sorted({r["dataset"] for r in peer}):
        for tag in tags:
            parts = []
            for subset in ("cold", "leak-controlled", "warm"):
                f = val.get((label, "fusion" + tag, subset, "NDCG@10"))
                seeds = {r["seeds"][0] for r in f or []}
                bests = [(k, [r for r in val.get((label, k + tag, subset, "NDCG@10"), []) if r["seeds"][0] in seeds])
                         for k in ("baseline", "ensemble")]
                bests = [(k, rs) for k, rs in bests if len(rs) == len(seeds)]
                if not (f and bests):
                    continue
                k, b = max(bests, key=lambda kb: np.mean([r["value"] for r in kb[1]]))
                gain = float(np.mean([r["value"] for r in f]) / np.mean([r["value"] for r in b]) - 1)
                test = by.get((label, "fusion" + tag, "full", subset, f"p_wilcoxon_vs_{k}"))
                p = test["value"] if test and test.get("test") == "seed-averaged NDCG@10 per user" else None
                if subset == "warm":
                    mark = "not hurt" if gain >= 0 or p is None or p >= 0.05 else "HURT"
                else:
                    mark = "met" if gain > 0.05 and p is not None and p < 0.05 else "MISSED"
                parts.append(f"{subset} {100 * gain:+.1f}% over {k}" + (f" (p={p:.2g})" if p is not None else "") + f" {mark}")
            if parts:
                verdicts.append(f"- {label}, fusion{tag} against the best target-only model of each subset: " + "; ".join(parts))
    return ["", "Merged-domain peer and fusion (`peer` piece, issue 23): one SASRec over both domains' merged sequence "
            "(sasrec-merged) against the target-only baseline, same cold protocol, full ranking, NDCG@10; fusion: "
            "the two combined (`cross_domain fuse`, weights per cold / warm group chosen on validation); ensemble: "
            "the control, two target-only baselines (seeds) fused the same way. leak-controlled: the users whose "
            "test transition (previous target item -> target) stands in no training sequence (core.data.leakage); "
            "p: Wilcoxon over users on NDCG@10 averaged across seeds (or the largest per-seed p).", "",
            *md_table(["dataset", "budget", "users", "popularity", "baseline", "sasrec-merged", "merged vs base",
                       "ensemble", "fusion", "fusion vs base", "fusion vs ensemble", "seeds"], items),
            *(["", "Goal (issue 23): > +5% NDCG@10 on cold users over the best target-only model, p < 0.05, the same "
               "on the leak-controlled view, warm users not hurt.", *verdicts] if verdicts else [])]


def _verdict(label: str, by: dict) -> str:
    parts = []
    for kind in ("transfer", "ptupcdr"):
        for proto in ("full", "sampled-100"):
            b, m = by.get((label, "baseline", proto, "cold", "NDCG@10")), by.get((label, kind, proto, "cold", "NDCG@10"))
            p = by.get((label, kind, proto, "cold", "p_wilcoxon_vs_baseline"))
            bw, mw = by.get((label, "baseline", proto, "warm", "NDCG@10")), by.get((label, kind, proto, "warm", "NDCG@10"))
            pw = by.get((label, kind, proto, "warm", "p_wilcoxon_vs_baseline"))
            if not (b and m and p and bw and mw and pw):
                continue
            gain, warm = m["value"] / b["value"] - 1, mw["value"] / bw["value"] - 1
            cold_ok = gain > 0.05 and p["value"] < 0.05
            warm_ok = warm >= 0 or pw["value"] >= 0.05
            parts.append(f"{kind} {proto}: cold {100 * gain:+.1f}% (p={p['value']:.2g}) "
                         f"{'met' if cold_ok else 'MISSED'}, warm {100 * warm:+.1f}% (p={pw['value']:.2g}) "
                         f"{'not hurt' if warm_ok else 'HURT'}")
    return f"{label}: " + ("; ".join(parts) if parts else "not run")


def main() -> None:
    piece = [opt("--dataset", choices=sorted(DATASETS), required=True), opt("--seed", type=int, default=1)]
    retrain = opt("--retrain", action="store_true", help="train stages again even when their results exist")
    cli(__doc__, {"run": (cmd_run, piece + [opt("--override", default="", help="extra config overrides for every stage"),
                                           retrain]),
                  "peer": (cmd_peer, piece + [
                      opt("--override", default="", help="extra config overrides for both stages"),
                      opt("--tag", default="", help="a training budget of its own: run bench-<tag>-seed<N>, models <name>-<tag>"),
                      opt("--fuse", action="store_true", help="also `cross_domain fuse` of the two models (model fusion)"),
                      opt("--partner-seed", type=int, default=0, help="with --fuse: also the control, this seed's "
                          "baseline fused with the partner seed's (model ensemble)"),
                      retrain]),
                  "summarize": (cmd_summarize, [])})


if __name__ == "__main__":
    main()
