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

import json
from functools import lru_cache, partial
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
COMPARED = ("all", "cold", "warm")  # the subsets of eval-compare's compare.json; the others from test_ranks.npz
SUBSETS = (*COMPARED, "cold-none", "leak-controlled", "cold-leak-controlled")  # evaluate.subset_masks
POOLED = "seed-averaged NDCG@10 per user"  # the `test` of a paired test over the seeds' ranks
KEY = ("dataset", "model", "protocol", "subset", "metric", "seeds")


def protocol_label(name: str) -> str:
    """The pipeline's ``sampled-99`` (99 negatives) is the issue's ``sampled-100`` (100 candidates)."""
    return f"sampled-{int(name.split('-')[1]) + 1}" if name.startswith("sampled-") else name


def stage_folder(dataset: str, kind: str) -> str:
    """A stage's folder in a run (as ``cross_domain.transfer.stage_name`` names it)."""
    _, _, _, s, t = DATASETS[dataset]
    return {"source": f"source-{s}", "baseline": f"baseline-{t}"}.get(kind, f"{kind}-{s}-{t}")


def run_dir(dataset: str, seed: int) -> Path:
    return REPO / "state_dict" / "cross_domain" / DATASETS[dataset][2] / f"bench-seed{seed}"


def cmd_run(args) -> None:
    """one dataset and seed: source, baseline, transfer, ptupcdr, compare"""
    _, label, _, source, target = DATASETS[args.dataset]
    src, tgt = ["--source", source], ["--target", target]
    home = run_dir(args.dataset, args.seed)
    # stage -> subcommand, flags, extra override
    commands = run_stages(args, f"run_name=bench-seed{args.seed},overwrite=true", {
        "source": ("train-source", src, ""), "baseline": ("train-target-baseline", tgt, ""),
        "transfer": ("train-target-transfer", src + tgt, ",transfer.bridge=mlp"),
        "ptupcdr": ("train-target-transfer", src + tgt, ",transfer.bridge=ptupcdr"),
        "compare": ("eval-compare", src + tgt, "")}, home, always=("compare",))
    comp = json.loads((home / stage_folder(args.dataset, "compare") / "compare.json").read_text())
    r = partial(row, label, seeds=[args.seed], command=commands["compare"])
    rows = []
    for kind in KINDS:
        stage, extra = stage_info(args, home, kind, train_command=commands[kind])
        for proto, by_subset in comp["test"][kind].items():
            for subset in COMPARED:
                test = comp["paired_vs_baseline"].get(kind, {}).get(proto, {}).get(subset)
                rows += model_rows(r, kind, proto, by_subset.get(subset, {}), test, subset, comp["users"][subset],
                                   **extra)
        rows.append(r(kind, "full", "sec_per_epoch", stage["sec_per_epoch"], command=commands[kind], subset="all",
                      unit="s", **extra))
    src, _ = stage_info(args, home, "source")
    # the source stage serves both transfer models; its time is filed under the MLP transfer row
    rows.append(r("transfer", "full", "source_sec_per_epoch", src["sec_per_epoch"], command=commands["source"],
                  subset="all", unit="s", best_epoch=src["best_epoch"], epochs_run=src["epochs_run"]))
    rows += [r("popularity", protocol_label(proto), "NDCG@10", by_subset[subset]["NDCG@10"], subset=subset,
               users=comp["users"][subset]) for proto, by_subset in comp["test"]["popularity"].items()
             for subset in COMPARED if "NDCG@10" in by_subset.get(subset, {})]
    rows.append(r("protocol", "full", "users", None, subset="all", counts=comp["protocol"]))
    # the finer subsets, from the runs' test_ranks.npz: cold-none (the cold users cut to no target history at all,
    # where only the source can say anything about the user) and the leak-controlled view
    cfg, ranks, masks = stage_ranks(args, home, KINDS)
    rows += [x for subset in SUBSETS[len(COMPARED):] for x in subset_rows(r, ranks, masks[subset], cfg.eval.ks, subset)]
    merge_rows(RUNS_FILE, rows, key=KEY)
    t = comp["test"]
    print(f"{label} seed {args.seed}, full NDCG@10 (cold / warm): " + "; ".join(
        f"{k} {t[k]['full']['cold']['NDCG@10']:.4f} / {t[k]['full']['warm']['NDCG@10']:.4f}" for k in KINDS))


def stage_info(args, home: Path, kind: str, **more) -> tuple[dict, dict]:
    """A stage's ``results.json`` and the fields of its rows: best / last epoch (a fusion: its
    chosen weights), ``more``, its folder."""
    folder = home / stage_folder(args.dataset, kind)
    res = json.loads((folder / "results.json").read_text())
    fields = {"best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"]} if "best_epoch" in res else {
        "w_cold": res["choice"]["w_cold"], "w_warm": res["choice"]["w_warm"]}
    return res, {**fields, **more, "run_dir": str(folder.relative_to(REPO))}


def run_stages(args, run: str, stages: dict, home: Path, always=()) -> dict[str, str]:
    """``python -m cross_domain`` stage by stage (stage -> its subcommand, flags and extra override;
    every stage gets ``--config``, this seed and ``run`` and ``--override``), each unless its
    ``results.json`` exists (``--retrain``, or a stage in ``always``: in any case); the command lines."""
    over = overrides(f"seed={args.seed},{run}", args.override)
    done = lambda stage: (home / stage_folder(args.dataset, stage) / "results.json").is_file()  # noqa: E731
    return {stage: run_module(f"cross_domain {sub}", DATASETS[args.dataset][0], over + extra, *flags,
                              run=stage in always or args.retrain or not done(stage))
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
    """``model_rows`` of ``cross_domain.evaluate.masked_reports`` on one subset (``r``: the run's
    ``row``; ``model`` and ``extra``: a stage's row name and fields)."""
    from cross_domain.evaluate import masked_reports

    users, rows = int(mask.sum()), []
    for kind, by_protocol in masked_reports(ranks, mask, ks).items():
        rk = partial(r, subset=subset, users=users, **extra(kind))
        rows += [x for proto, (m, test) in by_protocol.items() for x in model_rows(rk, model(kind), proto, m, test,
                                                                                     subset, users)]
    return rows


def model_rows(r, model: str, proto: str, metrics: dict, test: dict | None, subset: str, users: int,
               **extra) -> list[dict]:
    """A model's METRICS rows (with the fields ``extra``) on one protocol and subset, and the row of
    its paired test against the baseline if there is one (``r``: the run's ``row``)."""
    proto = protocol_label(proto)
    rows = [r(model, proto, m, metrics[m], subset=subset, users=users, **extra) for m in METRICS if m in metrics]
    if test:
        rows.append(r(model, proto, "p_wilcoxon_vs_baseline", test["p_wilcoxon"], subset=subset, users=users,
                      mean_ndcg10_diff=test["mean_diff"], better=test["better"], worse=test["worse"]))
    return rows


def load_cfg(config: str, over: str = ""):
    from core.config import load_config
    from cross_domain.config import CrossDomainConfig

    return load_config(CrossDomainConfig, str(REPO / config), over)


@lru_cache
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
    stages = {"baseline": ("train-target-baseline", ["--target", target], ""),
              "merged": ("train-target-merged", both, "")}
    if args.fuse:  # no training: the two models above, fused (and the target-only ensemble control)
        stages["fusion"] = ("fuse", both, "")
        if args.partner_seed:
            partner = name.removesuffix(f"seed{args.seed}") + f"seed{args.partner_seed}"
            stages["ensemble"] = ("fuse", both + ["--partner-run", partner], "")
    commands = run_stages(args, f"run_name={name}", stages, home)
    cfg, ranks, masks = stage_ranks(args, home, commands)

    def extra(kind):
        stage, fields = stage_info(args, home, kind, command=commands[kind])
        return fields | {"device": machine(stage.get("threads") or stage["run"]["threads"])}

    rows = [x for subset, mask in masks.items() for x in subset_rows(
        partial(row, label, seeds=[args.seed]), ranks, mask, cfg.eval.ks, subset,
        lambda kind: ("sasrec-merged" if kind == "merged" else kind) + suffix, extra) if x["protocol"] == "full"]
    # full ranking only: the peer's table and goals are full-ranking ones (the `run` piece keeps
    # the sampled protocol), and sampled rows doubled the runs file
    get = {(x["model"].removesuffix(suffix), x["subset"], x["metric"]): x["value"] for x in rows}
    # popularity over the same training data, for scale: the leak-controlled events are the hard ones
    pop = popularity_ranks(cfg)
    if not np.array_equal(pop["users"], ranks["baseline"]["users"]):
        raise SystemExit("popularity scored other users than the baseline's test_ranks.npz")
    pop_ndcg = {s: subset_metrics(pop["full"], m, cfg.eval.ks)["NDCG@10"] for s, m in masks.items() if m.any()}
    rows += [row(label, "popularity", "full", "NDCG@10", value, seeds=[args.seed], subset=subset,
                 users=int(masks[subset].sum()), command=commands["baseline"], device=machine(1))
             for subset, value in pop_ndcg.items() if subset not in COMPARED]  # those are the `run` piece's rows
    # untagged, the baseline's all / cold / warm / cold-none rows are the `run` piece's (same seed
    # and run folder): only its leak-controlled subsets are new here
    merge_rows(RUNS_FILE, [x for x in rows if suffix or x["model"] not in ("baseline", "popularity")
                           or x["subset"] not in (*COMPARED, "cold-none")], key=KEY)
    for subset, value in pop_ndcg.items():
        print(f"{label} seed {args.seed} {subset} ({int(masks[subset].sum())} users), full NDCG@10: popularity "
              f"{value:.4f}, baseline {get[('baseline', subset, 'NDCG@10')]:.4f}, sasrec-merged "
              f"{get[('sasrec-merged', subset, 'NDCG@10')]:.4f} "
              f"(p={get[('sasrec-merged', subset, 'p_wilcoxon_vs_baseline')]:.2g})"
              + "".join(f", {k} {get[(k, subset, 'NDCG@10')]:.4f}" for k in ("fusion", "ensemble") if k in stages))


# --------------------------------------------------------------------------- summary
def budget_tag(kind: str) -> str:
    """The training budget's suffix of a row's model (``sasrec-merged-e60`` -> ``-e60``)."""
    return kind.removeprefix(next((k for k in ("sasrec-merged", "fusion", "ensemble", *KINDS) if kind.startswith(k)),
                                  kind))


def seed_averaged_test(runs: list[dict], label: str, kind: str, proto: str, subset: str,
                       base: str = "baseline") -> dict | None:
    """``cross_domain.evaluate.seed_averaged_runs`` of ``kind`` vs ``base`` (of the same training
    budget) on their runs' ``test_ranks.npz`` (None unless two seeds of both are still on disk)."""
    from cross_domain.evaluate import seed_averaged_runs

    base_files, files = ({r["seeds"][0]: REPO / r["run_dir"] / "test_ranks.npz" for r in runs
                          if r["dataset"] == label and r.get("run_dir") and r["model"] == m}
                         for m in (base + budget_tag(kind), kind))
    return seed_averaged_runs(base_files, files, {"sampled-100": "sampled-99"}.get(proto, proto), subset,
                              None if subset in COMPARED else lambda: user_masks_of(label)[subset])


def test_rows(runs: list[dict]) -> list[dict]:
    """One paired-test row per dataset, model, protocol, subset and model compared with (the
    baseline; a fusion also its control, the ensemble): the seed-averaged test where the runs' ranks
    are on disk; else the row in cross_domain.json, computed where they were (a fresh clone has
    none), when it covers the same seeds; else, against the baseline, the largest per-seed p."""
    tests = {}  # (dataset, model, protocol, subset, the model compared with) -> per-seed test rows
    for r in runs:
        if r["metric"] == "p_wilcoxon_vs_baseline":
            for base in ("baseline", "ensemble") if r["model"].startswith("fusion") else ("baseline",):
                tests.setdefault((r["dataset"], r["model"], r["protocol"], r["subset"], base), []).append(r)
    stored = {(r["dataset"], r["model"], r["protocol"], r["subset"], r["metric"]): r
              for r in load_rows(RESULTS / "cross_domain.json") if r.get("test") == POOLED}
    out = []
    for (label, kind, proto, subset, base), rs in sorted(tests.items()):
        pooled = seed_averaged_test(runs, label, kind, proto, subset, base)
        metric, seeds = f"p_wilcoxon_vs_{base}", sorted(s for r in rs for s in r["seeds"])
        old = stored.get((label, kind, proto, subset, metric))
        if pooled is None and old and (base != "baseline" or old["seeds"] == seeds):
            out.append(old)
        elif pooled and base != "baseline":  # no per-seed rows of a test against the control to fall back on
            out.append(row(label, kind, proto, metric, pooled["wilcoxon_p"], seeds=pooled["seeds"],
                           command=rs[0]["command"], subset=subset, test=POOLED, mean_ndcg10_diff=pooled["mean_diff"]))
        elif base == "baseline":
            out.append(row(label, kind, proto, metric, pooled["wilcoxon_p"] if pooled else max(r["value"] for r in rs),
                           seeds=seeds, command=rs[0]["command"], subset=subset,
                           test=POOLED if pooled else "largest per-seed p",
                           per_seed_p=[r["value"] for r in sorted(rs, key=lambda r: r["seeds"])],
                           mean_ndcg10_diff=pooled["mean_diff"] if pooled
                           else float(np.mean([r["mean_ndcg10_diff"] for r in rs]))))
    return out


def cmd_summarize(args) -> None:
    """cross_domain.json / cross_domain.md: means over seeds, seed-averaged paired tests, the verdict"""
    from cross_domain.evaluate import transfer_verdict

    runs = load_rows(RUNS_FILE)
    value_runs = [r for r in runs if r["model"] in KINDS and r["metric"] != "p_wilcoxon_vs_baseline"]
    out = []
    for subset in SUBSETS:
        _, agg = aggregate([r for r in value_runs if r.get("subset") == subset], skip=())
        out += [r | {"subset": subset} for r in agg]
    out += test_rows(runs)
    write_json(RESULTS / "cross_domain.json", out)

    by = {(r["dataset"], r["model"], r["protocol"], r["subset"], r["metric"]): r for r in out}
    ndcg = {}  # (dataset, model, protocol, subset) -> the per-seed NDCG@10 rows
    for r in runs:
        if r["metric"] == "NDCG@10":
            ndcg.setdefault((r["dataset"], r["model"], r["protocol"], r.get("subset")), []).append(r)
    labels = [v[1] for v in DATASETS.values() if any(r["dataset"] == v[1] for r in out)]
    keys = [(label, proto, subset) for label in labels for proto in ("full", "sampled-100") for subset in SUBSETS
            if (label, "baseline", proto, subset, "NDCG@10") in by]
    g = lambda k, kind, metric="NDCG@10": by.get((k[0], kind, k[1], k[2], metric))  # noqa: E731
    pop = lambda k: ndcg.get((k[0], "popularity", k[1], k[2]))  # noqa: E731

    def vs_base(k, kind):
        b, m, p = g(k, "baseline"), g(k, kind), g(k, kind, "p_wilcoxon_vs_baseline")
        return versus(m["value"] / b["value"] - 1, p) if m and p and b["value"] else ""

    sec = lambda kind, metric="sec_per_epoch": lambda label: (  # noqa: E731
        f"{r['value']:.2f}" if (r := by.get((label, kind, "full", "all", metric))) else "")
    write_md(RESULTS / "cross_domain.md", [
        "# Cross-domain transfer for cold-start users (test, NDCG@10, mean ± std over seeds)", "",
        "`vs base`: relative NDCG@10 change of the model over the target-only baseline; p: Wilcoxon signed-rank "
        "over users (per-user NDCG@10 averaged across seeds, or the largest per-seed p when the ranks are gone).", "",
        *md_table([("dataset", lambda k: k[0]), ("protocol", lambda k: k[1]),
                   ("users", lambda k: f"{k[2]} {ndcg[(k[0], 'baseline', k[1], k[2])][0].get('users')}"),
                   ("popularity", lambda k: f"{np.mean([r['value'] for r in pop(k)]):.4f}" if pop(k) else None),
                   *((kind, lambda k, kind=kind: pm(g(k, kind))) for kind in KINDS),
                   *((f"{kind} vs base", lambda k, kind=kind: vs_base(k, kind)) for kind in ("transfer", "ptupcdr")),
                   ("seeds", lambda k: len(g(k, "baseline")["seeds"]))], keys),
        "", "Seconds per training epoch (mean over seeds; the source stage is shared by both transfer models):", "",
        *md_table([("dataset", lambda label: label), ("source", sec("transfer", "source_sec_per_epoch")),
                   *((kind, sec(kind)) for kind in KINDS)], labels),
        *peer_table(ndcg, by),
        "", "Goal: transfer beats the target-only baseline on cold users by a clear, significant margin on "
        "Food-Kitchen, and does not hurt warm users.",
        *[f"- {transfer_verdict(label, by)}" for label in labels if label.startswith("Food-Kitchen")], "",
        f"Device: {devices(runs) or machine()}. Commands: the `command` and `train_command` fields of "
        "cross_domain_runs.json."])


def versus(gain: float, test: dict | None) -> str:
    """A relative change and the p of its test (a row of ``test_rows``), if any: ``+4.1% (p=0.003)``."""
    return f"{100 * gain:+.1f}%" + (f" (p={test['value']:.2g})" if test else "")


def peer_table(ndcg: dict, by: dict) -> list[str]:
    """The `peer` piece's rows (issue 23): popularity, the target-only baseline, the merged-domain
    SASRec, their fusion and its control (the fusion of two baselines) per training budget, on every
    subset including the leak-controlled view; full ranking, NDCG@10 (``ndcg``: the per-seed rows),
    mean over seeds; p: the test of ``by`` (summarize's rows)."""
    from cross_domain.evaluate import goal_text

    tags = sorted({m.removeprefix("sasrec-merged") for _, m, proto, _ in ndcg if m.startswith("sasrec-merged")
                   and proto == "full"})
    mean = lambda rs: float(np.mean([r["value"] for r in rs]))  # noqa: E731
    cell = lambda rs: f"{mean(rs):.4f}" if rs else ""  # noqa: E731

    def rows(label, model, subset, seeds=None) -> list[dict]:
        """The NDCG@10 rows of a model on a subset (of ``seeds`` only, if given)."""
        return [r for r in ndcg.get((label, model, "full", subset), []) if seeds is None or r["seeds"][0] in seeds]

    def change(label, model, base, subset, b, m) -> str:
        """``versus`` of the rows ``m`` of ``model`` over the rows ``b`` of ``base``."""
        test = by.get((label, model, "full", subset, f"p_wilcoxon_vs_{base}"))
        return versus(mean(m) / mean(b) - 1, test) if b and m else ""

    items, verdicts = [], []
    for label in sorted({d for d, *_ in ndcg}):
        for tag in tags:
            for subset in SUBSETS:
                m = rows(label, "sasrec-merged" + tag, subset)
                seeds = {r["seeds"][0] for r in m}  # the others over the seeds the merged model has
                b, e, f = (rows(label, k + tag, subset, seeds) for k in ("baseline", "ensemble", "fusion"))
                if b and m:
                    items.append([label, tag.lstrip("-") or "20 epochs (patience 3)",
                                  f"{subset} {b[0].get('users', '')}", cell(rows(label, "popularity", subset)),
                                  cell(b), cell(m), change(label, "sasrec-merged" + tag, "baseline", subset, b, m),
                                  cell(e), cell(f), change(label, "fusion" + tag, "baseline", subset, b, f),
                                  change(label, "fusion" + tag, "ensemble", subset, e, f), len(m)])
            parts = []
            for subset in ("cold", "leak-controlled", "warm"):  # the fusion against the best target-only model
                f = rows(label, "fusion" + tag, subset)
                seeds = {r["seeds"][0] for r in f}
                bests = [(k, rows(label, k + tag, subset, seeds)) for k in ("baseline", "ensemble")]
                bests = [(k, rs) for k, rs in bests if len(rs) == len(seeds)]
                if f and bests:
                    k, b = max(bests, key=lambda kb: mean(kb[1]))
                    test = by.get((label, "fusion" + tag, "full", subset, f"p_wilcoxon_vs_{k}"))
                    p = test["value"] if test and test.get("test") == POOLED else None
                    parts.append(goal_text(subset, mean(f) / mean(b) - 1, p, over=k))
            if parts:
                verdicts.append(f"- {label}, fusion{tag} against the best target-only model of each subset: "
                                + "; ".join(parts))
    if not tags:
        return []
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


def main() -> None:
    piece = [opt("--dataset", choices=sorted(DATASETS), required=True), opt("--seed", type=int, default=1)]
    retrain = opt("--retrain", action="store_true", help="train stages again even when their results exist")
    over = lambda stages: opt("--override", default="", help=f"extra config overrides for {stages}")  # noqa: E731
    cli(__doc__, {"run": (cmd_run, piece + [over("every stage"), retrain]),
                  "peer": (cmd_peer, piece + [
                      over("both stages"),
                      opt("--tag", default="", help="a training budget of its own: run bench-<tag>-seed<N>, "
                          "models <name>-<tag>"),
                      opt("--fuse", action="store_true",
                          help="also `cross_domain fuse` of the two models (model fusion)"),
                      opt("--partner-seed", type=int, default=0, help="with --fuse: also the control, this seed's "
                          "baseline fused with the partner seed's (model ensemble)"),
                      retrain]),
                  "summarize": (cmd_summarize, [])})


if __name__ == "__main__":
    main()
