"""Cross-domain transfer for cold-start users (issue 8): transfer vs baseline vs PTUPCDR-style bridge.

Pieces ``run``, ``peer`` (issue 23: the merged-domain peer) and ``summarize``: benchmarks/README.md, "Cross-domain
transfer". A piece runs ``python -m cross_domain`` stage by stage and merges its rows into cross_domain_runs.json.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, aggregate, by_seed, cli, devices, load_rows, machine, md_table, \
    merge_rows, opt, overrides, pm, row, run_module, write_json, write_md
from core.errors import DataError
from cross_domain.config import load_file
from cross_domain.evaluate import POOLED, best_control_check, config_user_masks, masked_reports, pooled_test_rows, \
    popularity_ndcg, seed_averaged_runs, subset_masks, transfer_verdict
from cross_domain.transfer import stage_folder

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
KEY = ("dataset", "model", "protocol", "subset", "metric", "seeds")


def stage_dir(args, home: Path, kind: str) -> Path:
    return home / stage_folder(kind, *DATASETS[args.dataset][3:])


def run_stages(args, name: str, stages: dict, over: str = "", always=()) -> tuple[Path, dict[str, str]]:
    """``python -m cross_domain`` stage by stage in run ``name`` (stage -> subcommand, flags, extra override), unless
    its ``results.json`` exists (``--retrain``, a stage in ``always``: in any case): the run's folder, the commands."""
    home = REPO / "state_dict" / "cross_domain" / DATASETS[args.dataset][2] / name
    over = overrides(f"seed={args.seed},run_name={name}{over}", args.override)
    todo = lambda stage: (stage in always or args.retrain  # noqa: E731
                          or not (stage_dir(args, home, stage) / "results.json").is_file())
    return home, {stage: run_module(f"cross_domain {sub}", DATASETS[args.dataset][0], over + extra, *flags,
                                    run=todo(stage)) for stage, (sub, flags, extra) in stages.items()}


def cmd_run(args) -> None:
    """one dataset and seed: source, baseline, transfer, ptupcdr, compare"""
    _, label, _, source, target = DATASETS[args.dataset]
    src, tgt = ["--source", source], ["--target", target]
    home, commands = run_stages(args, f"bench-seed{args.seed}", {  # stage -> subcommand, flags, extra override
        "source": ("train-source", src, ""), "baseline": ("train-target-baseline", tgt, ""),
        "transfer": ("train-target-transfer", src + tgt, ",transfer.bridge=mlp"),
        "ptupcdr": ("train-target-transfer", src + tgt, ",transfer.bridge=ptupcdr"),
        "compare": ("eval-compare", src + tgt, "")}, ",overwrite=true", always=("compare",))
    comp = json.loads((stage_dir(args, home, "compare") / "compare.json").read_text())
    r = partial(row, label, seeds=[args.seed], command=commands["compare"])
    compared = lambda kind, names=METRICS, **extra: [  # noqa: E731  (model_rows of compare.json)
        x for proto, by_subset in comp["test"][kind].items() for subset in COMPARED for x in model_rows(
            r, kind, proto, by_subset.get(subset, {}), comp["paired_vs_baseline"].get(kind, {}).get(proto, {}).get(
                subset), subset, comp["users"][subset], names, **extra)]
    rows = []
    for kind in KINDS:
        stage, extra = stage_info(args, home, kind, train_command=commands[kind])
        rows += compared(kind, **extra) + [r(kind, "full", "sec_per_epoch", stage["sec_per_epoch"],
                                             command=commands[kind], subset="all", unit="s", **extra)]
    src, _ = stage_info(args, home, "source")
    # the source stage serves both transfer models; its time is filed under the MLP transfer row
    rows.append(r("transfer", "full", "source_sec_per_epoch", src["sec_per_epoch"], command=commands["source"],
                  subset="all", unit="s", best_epoch=src["best_epoch"], epochs_run=src["epochs_run"]))
    rows += compared("popularity", ("NDCG@10",)) + [r("protocol", "full", "users", None, subset="all",
                                                      counts=comp["protocol"])]
    # the finer subsets from the runs' test_ranks.npz: cold-none (cold users with no target history) and leak-controlled
    cfg, ranks, masks = stage_ranks(args, home, KINDS)
    rows += [x for subset in SUBSETS[len(COMPARED):] for x in subset_rows(r, ranks, masks[subset], cfg.eval.ks, subset)]
    merge_rows(RUNS_FILE, rows, key=KEY)
    t = comp["test"]
    print(f"{label} seed {args.seed}, full NDCG@10 (cold / warm): " + "; ".join(
        f"{k} {t[k]['full']['cold']['NDCG@10']:.4f} / {t[k]['full']['warm']['NDCG@10']:.4f}" for k in KINDS))


def stage_info(args, home: Path, kind: str, **more) -> tuple[dict, dict]:
    """A stage's ``results.json`` and its rows' fields: best / last epoch (a fusion: its weights), ``more``, folder."""
    folder = stage_dir(args, home, kind)
    res = json.loads((folder / "results.json").read_text())
    fields = {"best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"]} if "best_epoch" in res else {
        "w_cold": res["choice"]["w_cold"], "w_warm": res["choice"]["w_warm"]}
    return res, {**fields, **more, "run_dir": str(folder.relative_to(REPO))}


def stage_ranks(args, home: Path, kinds) -> tuple:
    """The run's config, its stages' ``test_ranks.npz`` and the subset masks over the baseline's test users."""
    config, _, _, source, target = DATASETS[args.dataset]
    cfg = load_file(REPO / config, overrides(args.override, f"data.source={source},data.target={target}"))
    ranks = {k: np.load(stage_dir(args, home, k) / "test_ranks.npz") for k in kinds}
    return cfg, ranks, subset_masks(cfg, ranks["baseline"]["users"], ranks["baseline"]["cold"])


def subset_rows(r, ranks: dict, mask, ks, subset: str, model=lambda kind: kind, extra=lambda kind: {}) -> list[dict]:
    """``model_rows`` of ``cross_domain.evaluate.masked_reports`` on one subset (``model``, ``extra``: of a stage)."""
    users = int(mask.sum())
    return [x for kind, by_protocol in masked_reports(ranks, mask, ks).items()
            for proto, (m, test) in by_protocol.items()
            for x in model_rows(partial(r, subset=subset, users=users, **extra(kind)), model(kind), proto, m, test,
                                subset, users)]


def model_rows(r, model: str, proto: str, metrics: dict, test: dict | None, subset: str, users: int,
               names=METRICS, **extra) -> list[dict]:
    """A model's rows of the metrics ``names`` on one protocol and subset, and its paired test against the baseline."""
    # the pipeline's sampled-99 (99 negatives) is the sampled-100 (100 candidates)
    proto = f"sampled-{int(proto.split('-')[1]) + 1}" if proto.startswith("sampled-") else proto
    rows = [r(model, proto, m, metrics[m], subset=subset, users=users, **extra) for m in names if m in metrics]
    if test:
        rows.append(r(model, proto, "p_wilcoxon_vs_baseline", test["p_wilcoxon"], subset=subset, users=users,
                      mean_ndcg10_diff=test["mean_diff"], better=test["better"], worse=test["worse"]))
    return rows


def cmd_peer(args) -> None:
    """one dataset and seed (issue 23): the target-only baseline and the merged-domain SASRec
    (model sasrec-merged), both on the cold protocol, with the leak-controlled view"""
    _, label, _, source, target = DATASETS[args.dataset]
    suffix = f"-{args.tag}" if args.tag else ""
    both = ["--source", source, "--target", target]
    stages = {"baseline": ("train-target-baseline", ["--target", target], ""),
              "merged": ("train-target-merged", both, "")}
    if args.fuse:  # no training: the two models above, fused (and the target-only ensemble control)
        stages["fusion"] = ("fuse", both, "")
        if args.partner_seed:
            stages["ensemble"] = ("fuse", both + ["--partner-run", f"bench{suffix}-seed{args.partner_seed}"], "")
    home, commands = run_stages(args, f"bench{suffix}-seed{args.seed}", stages)
    cfg, ranks, masks = stage_ranks(args, home, commands)

    def extra(kind):
        stage, fields = stage_info(args, home, kind, command=commands[kind])
        return fields | {"device": machine(stage.get("threads") or stage["run"]["threads"])}

    # full ranking only, as the peer's table and goals (the `run` piece keeps the sampled protocol)
    rows = [x for subset, mask in masks.items() for x in subset_rows(
        partial(row, label, seeds=[args.seed]), ranks, mask, cfg.eval.ks, subset,
        lambda kind: ("sasrec-merged" if kind == "merged" else kind) + suffix, extra) if x["protocol"] == "full"]
    get = {(x["model"].removesuffix(suffix), x["subset"], x["metric"]): x["value"] for x in rows}
    # popularity over the same training data, for scale: the leak-controlled events are the hard ones
    try:
        pop_ndcg = popularity_ndcg(cfg, ranks["baseline"]["users"], masks)
    except DataError as exc:  # one line and exit 1, as before the check moved into cross_domain.evaluate
        raise SystemExit(str(exc)) from None
    rows += [row(label, "popularity", "full", "NDCG@10", value, seeds=[args.seed], subset=subset,
                 users=int(masks[subset].sum()), command=commands["baseline"], device=machine(1))
             for subset, value in pop_ndcg.items() if subset not in COMPARED]  # those are the `run` piece's rows
    # untagged, the baseline's all / cold / warm / cold-none rows are the `run` piece's (same seed and run folder)
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
    """``cross_domain.evaluate.seed_averaged_runs`` of ``kind`` vs ``base`` (of the same training budget) on their
    runs' ``test_ranks.npz`` (None unless two seeds of both are still on disk)."""
    base_files, files = ({r["seeds"][0]: REPO / r["run_dir"] / "test_ranks.npz" for r in runs
                          if r["dataset"] == label and r.get("run_dir") and r["model"] == m}
                         for m in (base + budget_tag(kind), kind))
    return seed_averaged_runs(base_files, files, {"sampled-100": "sampled-99"}.get(proto, proto), subset,
                              None if subset in COMPARED else lambda: config_user_masks(
                                  str(REPO / next(v[0] for v in DATASETS.values() if v[1] == label)))[subset])


def test_rows(runs: list[dict]) -> list[dict]:
    """``cross_domain.evaluate.pooled_test_rows`` of the runs (the stored cross_domain.json to fall back on)."""
    return pooled_test_rows(runs, load_rows(RESULTS / "cross_domain.json"), partial(seed_averaged_test, runs),
                            machine())


def cmd_summarize(args) -> None:
    """cross_domain.json / cross_domain.md: means over seeds, seed-averaged paired tests, the verdict"""
    runs = load_rows(RUNS_FILE)
    value_runs = [r for r in runs if r["model"] in KINDS and r["metric"] != "p_wilcoxon_vs_baseline"]
    out = [r | {"subset": subset} for subset in SUBSETS
           for r in aggregate([r for r in value_runs if r.get("subset") == subset], skip=())[1]] + test_rows(runs)
    write_json(RESULTS / "cross_domain.json", out)

    by = {(r["dataset"], r["model"], r["protocol"], r["subset"], r["metric"]): r for r in out}
    ndcg = per_seed_ndcg(runs)
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


FUSION_GOAL_SUBSETS = ("cold", "leak-controlled", "warm")


def fusion_goal(ndcg: dict, by: dict, label: str, tag: str) -> list[tuple[str, str, bool]]:
    """Issue 23's cross-domain goal for ``fusion<tag>`` on ``label``: (subset, text, met) per subset of
    ``FUSION_GOAL_SUBSETS`` that has rows, against the best target-only model of that subset (``baseline<tag>`` or
    the ``ensemble<tag>`` control), with the pooled paired test only. ``ndcg``: (dataset, model, protocol, subset)
    -> per-seed NDCG@10 rows; ``by``: summarize's rows by (dataset, model, protocol, subset, metric)."""
    out = []
    for subset in FUSION_GOAL_SUBSETS:
        def p(k):
            t = by.get((label, "fusion" + tag, "full", subset, f"p_wilcoxon_vs_{k}"))
            return t["value"] if t and t.get("test") == POOLED else None
        check = best_control_check(subset, by_seed(ndcg.get((label, "fusion" + tag, "full", subset), [])),
                                   {k: by_seed(ndcg.get((label, k + tag, "full", subset), [])) for k in ("baseline", "ensemble")},
                                   p)
        if check:
            out.append((subset, *check))
    return out


def per_seed_ndcg(runs: list[dict]) -> dict:
    """(dataset, model, protocol, subset) -> the per-seed NDCG@10 rows of ``runs`` (cross_domain_runs.json)."""
    ndcg = {}
    for r in runs:
        if r["metric"] == "NDCG@10":
            ndcg.setdefault((r["dataset"], r["model"], r["protocol"], r.get("subset")), []).append(r)
    return ndcg


def peer_table(ndcg: dict, by: dict) -> list[str]:
    """The `peer` piece's table and goal (issue 23), full ranking, NDCG@10: means of the per-seed rows ``ndcg`` over
    the merged model's seeds; p: the tests of ``by`` (summarize's rows)."""
    tags = sorted({m.removeprefix("sasrec-merged") for _, m, proto, _ in ndcg if m.startswith("sasrec-merged")
                   and proto == "full"})
    if not tags:
        return []
    mean = lambda rs: float(np.mean([r["value"] for r in rs]))  # noqa: E731
    cell = lambda rs: f"{mean(rs):.4f}" if rs else ""  # noqa: E731
    rows = lambda label, model, subset: ndcg.get((label, model, "full", subset), [])  # noqa: E731
    test = lambda label, model, subset, base: by.get((label, model, "full", subset, f"p_wilcoxon_vs_{base}"))  # noqa

    def change(label, model, base, subset, b, m) -> str:
        return versus(mean(m) / mean(b) - 1, test(label, model, subset, base)) if b and m else ""

    items, verdicts = [], []
    for label in sorted({d for d, *_ in ndcg}):
        for tag in tags:
            for subset in SUBSETS:
                m = rows(label, "sasrec-merged" + tag, subset)
                seeds = {r["seeds"][0] for r in m}  # the others over the seeds the merged model has
                b, e, f = ([r for r in rows(label, k + tag, subset) if r["seeds"][0] in seeds]
                           for k in ("baseline", "ensemble", "fusion"))
                if b and m:
                    items.append([label, tag.lstrip("-") or "20 epochs (patience 3)",
                                  f"{subset} {b[0].get('users', '')}", cell(rows(label, "popularity", subset)),
                                  cell(b), cell(m), change(label, "sasrec-merged" + tag, "baseline", subset, b, m),
                                  cell(e), cell(f), change(label, "fusion" + tag, "baseline", subset, b, f),
                                  change(label, "fusion" + tag, "ensemble", subset, e, f), len(m)])
            if parts := fusion_goal(ndcg, by, label, tag):
                verdicts.append(f"- {label}, fusion{tag} against the best target-only model of each subset: "
                                + "; ".join(text for _, text, _ in parts))
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
    peer = [opt("--tag", default="", help="a training budget of its own: run bench-<tag>-seed<N>, models <name>-<tag>"),
            opt("--fuse", action="store_true", help="also `cross_domain fuse` of the two models (model fusion)"),
            opt("--partner-seed", type=int, default=0, help="with --fuse: also the control, this seed's baseline "
                "fused with the partner seed's (model ensemble)")]
    cli(__doc__, {"run": (cmd_run, piece + [over("every stage"), retrain]),
                  "peer": (cmd_peer, piece + [over("both stages"), *peer, retrain]), "summarize": (cmd_summarize, [])})


if __name__ == "__main__":
    main()
