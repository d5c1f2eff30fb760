"""TriGRec on Amazon Food-Kitchen: the full method, its ablations and the shuffled control.

Pieces (``stage1``, ``stage2 --variant V``, ``stage1-loss``, ``summarize``: benchmarks/README.md, "TriGRec") drive
``user_representation_module.train`` / ``.inference`` and ``recommendation_model.train_eval`` in a stage-1 tree per
seed (``state_dict/bench/trigrec/<target>/seed<N>[-nogrl]/``); rows go to ``benchmarks/results/trigrec_runs.json``.
Protocols: ``sampled-999`` (C2DSR's test lines, 999 sampled items of the domain) and ``full`` (full ranking).
"""
from __future__ import annotations

import json
import re
from functools import partial
from itertools import product
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, aggregate, cli, devices, load_rows, machine, md_table, merge_rows, opt, \
    overrides, plot, pm, read_jsonl, rel, row, run_module, write_json, write_md
from core.train import mean_epoch_seconds
from recommendation_model.data import missing_export
from recommendation_model.train_eval import RANKS_FILE, paired_line_ndcg

RUNS_FILE = RESULTS / "trigrec_runs.json"
TARGETS = {"food": "Food-Kitchen/Food", "kitchen": "Food-Kitchen/Kitchen"}
PUBLISHED = {"food": {"MRR": 8.91, "NDCG@10": 9.71, "HR@10": 14.54}, "kitchen": {"MRR": 4.65, "NDCG@10": 4.94, "HR@10": 8.18}}
GOALS = {"food": 10.7, "kitchen": 5.4}
VARIANTS = {  # stage-2 variant -> (row name, overrides, stage-1 tree suffix)
    "trigrec": ("trigrec", "", ""), "bert4rec": ("bert4rec", "use_spe=false,use_cross=false", ""),
    "spe": ("trigrec-spe_only", "use_cross=false", ""), "cross": ("trigrec-cross_only", "use_spe=false", ""),
    "nogate": ("trigrec-nogate", "gate=false", ""), "shuffled": ("trigrec-shuffled", "shuffle_user_vectors=true", ""),
    "nogrl": ("trigrec-nogrl", "", "-nogrl"),
    "spe_other": ("trigrec-spe_other_only", "use_cross=false", ""),  # no target item for the cloze loss to read back
    "leakfree": ("trigrec-leakfree", "model.vector_holdout=1", ""),  # last item from vectors exported without it
    "leakfree_spe_other": ("trigrec-leakfree-spe_other_only", "use_cross=false,model.vector_holdout=1", ""),
    "merged": ("sasrec-merged", "", ""),  # the peer: one SASRec over both domains' merged sequence
}
PEER = {"merged": ("recommendation_model.merged", "configs/trigrec/merged/{}.yaml")}  # variants with their own entry
OTHER_SPE = ("spe_other", "leakfree_spe_other")  # variants that read the other domain's specific vectors
C2DSR_METRICS = ("MRR", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10")
FULL_METRICS = ("NDCG@10", "HR@10", "MRR")
SUBSET_METRICS = ("MRR", "NDCG@10", "HR@10")  # recorded on a subset of the C2DSR test lines
# the shipped default (configs/trigrec/rec/<target>.yaml: cross-only) on the shipped stage 1 (sampled softmax)
DEFAULT = "trigrec-cross_only-ss"
SUBSETS = {" (seen targets)": "seen-target", " (leak-controlled)": "leak-controlled"}  # run-row suffix -> subset
PAIRED = {  # model -> the runs it is tested against (rows "paired_wilcoxon_p_NDCG@10")
    "trigrec": ("bert4rec", "shuffled", "merged"), "spe": ("bert4rec", "shuffled"),
    "cross": ("bert4rec", "shuffled", "merged"), "spe_other": ("bert4rec", "shuffled"), "nogrl": ("bert4rec", "trigrec"),
    "leakfree": ("bert4rec", "trigrec", "merged"), "shuffled": ("bert4rec",), "merged": ("bert4rec",),
}
TREES = ("", "-ss")  # the committed runs; the issue-23 re-measure on stage 1's sampled-softmax recipe (--tree ss)


def home(target: str, seed: int, suffix: str = "") -> Path:
    return REPO / "state_dict" / "bench" / "trigrec" / target / f"seed{seed}{suffix}"


def cmd_stage1(args) -> None:
    """stage 1 (the encoders) of one target and seed: time per epoch, discriminator accuracy"""
    suffix = ("-nogrl" if args.no_grl else "") + (f"-{args.tree}" if args.tree else "")
    h = home(args.target, args.seed, suffix)
    out, config = h / "rep" / args.target, f"configs/trigrec/rep/{args.target}.yaml"
    over = overrides(f"seed={args.seed},home={rel(h)},overwrite=true", "use_grl=false" if args.no_grl else "", args.override)
    train = not (args.collect_only and (out / "results.json").is_file())
    command = run_module("user_representation_module.train", config, over, run=train)
    if train:
        run_module("user_representation_module.inference", config, over)
    metrics = read_jsonl(out / "metrics.jsonl")
    last = metrics[-1]
    r = partial(row, TARGETS[args.target], "trigrec-stage1" + suffix, "full", seeds=[args.seed], command=command)
    # from metrics.jsonl, not results.json: the same definition (training only) for every run, resumed or not
    rows = [r("sec_per_epoch", mean_epoch_seconds(out)),
            r("disc_acc_last_epoch", last.get("disc_acc"), disc_acc_curve=[m.get("disc_acc") for m in metrics])]
    # validation only (the target's specific encoder, full ranking): shows what the reversal costs the encoders
    if "valid" in last:
        rows.append(r("valid NDCG@10 (last epoch)", 100 * last["valid"]["NDCG@10"], unit="%", epoch=last["epoch"]))
    threads = json.loads((out / "results.json").read_text()).get("threads")
    merge_rows(RUNS_FILE, [x | {"device": machine(threads)} for x in rows])
    print(*(f"{x['dataset']} {x['model']} seed {args.seed}: {x['metric']} {x['value']:.3f}" for x in rows), sep="\n")


def cmd_stage1_loss(args) -> None:
    """stage 1 with full (model.loss=ce) vs sampled softmax, one after the other: time per epoch, validation"""
    command = f"python -m benchmarks.trigrec stage1-loss --target {args.target} --seed {args.seed} --epochs {args.epochs}"
    rows = []
    for loss in ("ce", "sampled_softmax"):
        h = home(args.target, args.seed, f"-loss-{loss}-{args.epochs}ep")
        run_module("user_representation_module.train", f"configs/trigrec/rep/{args.target}.yaml", overrides(
            f"seed={args.seed},home={rel(h)},overwrite=true,model.loss={loss},training.epochs={args.epochs},"
            f"training.eval_every={args.epochs},save_every={args.epochs}", args.override))
        out = h / "rep" / args.target
        r = partial(row, TARGETS[args.target], f"trigrec-stage1-{loss}", "full", seeds=[args.seed], command=command)
        rows += [r("sec_per_epoch", mean_epoch_seconds(out),
                   threads=json.loads((out / "results.json").read_text()).get("threads"), epochs=args.epochs),
                 r(f"valid NDCG@10 (epoch {args.epochs})", 100 * read_jsonl(out / "metrics.jsonl")[-1]["valid"]["NDCG@10"],
                   unit="%")]
    merge_rows(RUNS_FILE, rows)
    print(*(f"{r['model']:28s} {r['metric']:26s} {r['value']:.3f}" for r in rows), sep="\n")


def cmd_stage2(args) -> None:
    """stage 2 of one target, seed and variant on that seed's stage-1 vectors"""
    name, over_v, suffix = VARIANTS[args.variant]
    tag = f"-{args.tag}" if args.tag else ""
    # a peer with its own entry reads no stage-1 tree: its run and row stay the seed's, whatever --tree says
    tree = f"-{args.tree}" if args.tree and args.variant not in PEER else ""
    name, h, run_name = name + tag + tree, home(args.target, args.seed, suffix + tree), f"bench-{args.variant}{tag}"
    # the ablations are defined against the seed's full method (the shipped default is cross-only)
    module, config = PEER.get(args.variant, ("recommendation_model.train_eval", "configs/trigrec/rec/{}-seed.yaml"))
    config, out = config.format(args.target), h / "rec" / args.target / run_name
    # the domain whose specific vectors stage 2 reads: the target's own (food A, kitchen B), the other's for OTHER_SPE
    code = "A" if (args.target == "food") != (args.variant in OTHER_SPE) else "B"
    over = overrides(f"seed={args.seed},home={rel(h)},run_name={run_name},overwrite=true", over_v, args.override,
                     f"SPE_DOMAIN={code}" if args.variant in OTHER_SPE else "")
    if args.ranks_only:  # an older run without per-line ranks: evaluate its checkpoint again
        if not (out / RANKS_FILE).is_file() and args.variant not in PEER:
            run_module(module, config, over + ",eval_only=true")
        return
    train = not (args.collect_only and (out / "results.json").is_file())
    holdout = int(vh[1]) if (vh := re.search(r"vector_holdout=(\d+)", over_v)) else 0  # export.holdout_last it needs
    if train and (args.variant in OTHER_SPE or holdout):  # export the vectors stage 2 reads unless they exist
        asked = re.search(r"(?:EPOCH_TO_LOAD|epoch_to_load)=(\d+)", args.override)
        folder = h / "embeddings" / "user_representation_module" / args.target
        if (epoch := missing_export(folder, code, int(asked[1]) if asked else 0, holdout)) is not None:
            run_module("user_representation_module.inference", f"configs/trigrec/rep/{args.target}.yaml", overrides(
                f"seed={args.seed},home={rel(h)},SPE_DOMAIN={code}", f"EPOCH_TO_LOAD={epoch}" if epoch else "",
                f"export.holdout_last={holdout}" if holdout else ""))
    r = partial(row, TARGETS[args.target], name, seeds=[args.seed],
                command=run_module(module, config, over, run=train))
    res = json.loads((out / "results.json").read_text())
    c2, by_target = res.get("test_c2dsr", {}), res.get("test_c2dsr_by_target", {})
    subsets, free = res.get("test_c2dsr_subsets", {}), res.get("test_full_leak_controlled") or {}
    # leak-controlled (issue 23): lines whose last transition no training sequence holds verbatim
    parts = [("sampled-999", "", c2, C2DSR_METRICS, {}),
             ("sampled-999", " (seen targets)", by_target.get("seen", {}), SUBSET_METRICS,
              {"unit": "%", "unseen_target_share": by_target.get("unseen_target_share")}),
             ("full", "", res["test_full"], FULL_METRICS, {}),
             ("sampled-999", " (leak-controlled)", subsets.get("leak-controlled", {}), SUBSET_METRICS,
              {"lines": subsets.get("lines", {}).get("leak-controlled")}),
             ("full", " (leak-controlled)", free, ("NDCG@10", "HR@10"), {"users": free.get("users")})]
    pct = {"unit": "%", "best_epoch": res["best_epoch"]}
    rows = [r(protocol, m + suffix, 100 * values[m], **(extra | pct))
            for protocol, suffix, values, recorded, extra in parts for m in recorded if m in values]
    rows.append(r("full", "sec_per_epoch", mean_epoch_seconds(out)))
    if res.get("valid"):  # the checkpoint's C2DSR validation lines: what a default is chosen on
        rows.append(r("sampled-999", "valid NDCG@10", 100 * res["valid"]["NDCG@10"], **pct))
    # the device with the threads the run itself used, not this process's
    merge_rows(RUNS_FILE, [x | {"device": machine(res.get("threads"))} for x in rows])
    print(*(f"{name} seed {args.seed} {x['protocol']:11s} {x['metric']:26s} {x['value']:.2f}" for x in rows), sep="\n")


def cmd_summarize(args) -> None:
    """trigrec.json / trigrec.md / trigrec.png, paired tests on the C2DSR test lines"""
    runs = load_rows(RUNS_FILE)
    groups, out = aggregate(runs, skip=())
    out, tests = with_subsets(out), paired_tests()
    write_json(RESULTS / "trigrec.json", out + with_subsets(tests))  # the tests' rows also repeat as trigrec-default
    by = {(r["dataset"], r["model"], r["protocol"], r["metric"], r.get("subset", "all")): r for r in out}
    stage1 = (("trigrec-stage1", "stage 1 (encoders)", "with GRL"), ("trigrec-stage1-nogrl", "stage 1, no GRL", "no GRL"))
    table, encoders = [], []
    for t, ds in TARGETS.items():
        table.append([t, "C2DSR (published)", None, *(f"{PUBLISHED[t][m]:.2f}" if m in PUBLISHED[t] else None
                                                      for m in C2DSR_METRICS), *[None] * 4])
        for model in sorted({m for (d, m, *_) in by if d == ds and not m.startswith("trigrec-stage1")}):
            g = lambda proto, m, subset="all": by.get((ds, model, proto, m, subset))  # noqa: E731
            n, sec = g("sampled-999", "NDCG@10") or g("full", "NDCG@10"), g("full", "sec_per_epoch")
            if n:
                table.append([t, model, len(n["seeds"]), *(pm(g("sampled-999", m), 2) for m in C2DSR_METRICS),
                              *(pm(g("sampled-999", "NDCG@10", s), 2) for s in SUBSETS.values()),
                              pm(g("full", "NDCG@10"), 2), format(sec["value"], ".1f") if sec else ""])
        for name, label, enc in stage1:
            if s1 := by.get((ds, name, "full", "sec_per_epoch", "all")):
                table.append([t, label, len(s1["seeds"]), *[None] * 9, f"{s1['value']:.1f}"])
            if acc := by.get((ds, name, "full", "disc_acc_last_epoch", "all")):
                encoders.append([t, enc, len(acc["seeds"]), pm(acc, 3),
                                 pm(by.get((ds, name, "full", "valid NDCG@10 (last epoch)", "all")), 2)])
    lines = ["# TriGRec on Food-Kitchen (test; C2DSR protocol = target vs 999 sampled items of its domain, %)", "",
             *md_table(["target", "model", "seeds", *C2DSR_METRICS, "NDCG@10 seen-target", "NDCG@10 leak-controlled",
                        "full NDCG@10", "s/epoch"], table),
             "", f"`trigrec-default` is `{DEFAULT}`: the shipped default (cross-only) on the shipped stage 1.",
             "", "Stage 1 at its last epoch (validation; discriminator accuracy over 3 classes, chance 0.33):", "",
             *md_table(["target", "encoders", "seeds", "discriminator accuracy",
                        "specific encoder valid NDCG@10 (full, %)"], encoders),
             "", "Goals: NDCG@10 >= " + ", ".join(f"{GOALS[t]} ({t})" for t in TARGETS) + " under the C2DSR protocol.",
             f"Device: {devices(runs)}. Commands: the `command` field in trigrec.json."]
    if tests:
        lines += ["", "Paired tests on the C2DSR test lines (NDCG@10 per line, %): each line's mean over the seeds both "
                  "runs have, Wilcoxon signed-rank; per seed: the difference of the means.", "",
                  *md_table(["target", "model", "vs", "seeds", "lines", "difference", "per seed", "p"],
                            [[r["dataset"].split("/")[1].lower(), r["model"], r["vs"], len(r["seeds"]), r["lines"],
                              f"{r['mean_diff']:+.2f}", " / ".join(f"{d:+.2f}" for d in r["per_seed_diff"]),
                              f"{r['value']:.2g}"] for r in tests])]
    write_md(RESULTS / "trigrec.md", lines)
    plot("trigrec.png", {f"{ds} (dots: seeds)": (t, {m: [r["value"] for r in rs] for (d, m, p, k), rs in groups.items()
                                                     if (d, p, k) == (ds, "sampled-999", "NDCG@10")})
                         for t, ds in TARGETS.items()}, "", "test NDCG@10 (%), target vs 999 negatives", draw=_bars)


def with_subsets(rows: list[dict]) -> list[dict]:
    """Rows in issue 23's naming (test metrics carry ``subset``); the default's rows repeat as ``trigrec-default``."""
    out = []
    for r in rows:
        suffix, subset = next(((s, name) for s, name in SUBSETS.items() if r["metric"].endswith(s)), ("", "all"))
        metric = r["metric"].removesuffix(suffix)
        if metric in C2DSR_METRICS + FULL_METRICS:
            r = r | {"metric": metric, "subset": subset}
        out += [r] + ([r | {"model": "trigrec-default"}] if r["model"] == DEFAULT else [])
    return out


def paired_tests(stored_in: Path | None = RESULTS / "trigrec.json") -> list[dict]:
    """One row per PAIRED comparison; without the runs' rank files (a fresh clone), the row ``stored_in`` holds."""
    stored = {(r["dataset"], r["model"], r["vs"]): r for r in (load_rows(stored_in) if stored_in else [])
              if r["metric"] == "paired_wilcoxon_p_NDCG@10"}
    rows = []
    for (t, ds), (variant, baselines), tree in product(TARGETS.items(), PAIRED.items(), TREES):
        tree_of = lambda v: "" if v in PEER else tree  # noqa: E731  (a peer reads no stage-1 tree)
        name = lambda v: VARIANTS[v][0] + tree_of(v)  # noqa: E731
        dirs = lambda v: {s: home(t, s, VARIANTS[v][2] + tree_of(v)) / "rec" / t / f"bench-{v}"  # noqa: E731
                          for s in (1, 2, 3)}
        for base in baselines:
            test = paired_line_ndcg(dirs(base), dirs(variant))
            old = stored.get((ds, name(variant), name(base)))
            if old and len(old["seeds"]) > len(test.get("seeds", [])):
                rows.append(old)
            elif test:
                rows.append(row(ds, name(variant), "sampled-999", "paired_wilcoxon_p_NDCG@10",
                                test["wilcoxon_p"], seeds=test["seeds"], vs=name(base), lines=test["users"],
                                mean_diff=test["mean_diff"], per_seed_diff=test["per_seed_diff"],
                                command="python -m benchmarks.trigrec summarize"))
    return rows


def _bars(ax, title: str, data) -> None:
    """One target's C2DSR-protocol test NDCG@10 per model ({model: its seeds' values}): bar = mean, one dot per seed."""
    target, per_model = data
    models = sorted(per_model, key=lambda m: (m != "bert4rec", m != "trigrec", m))
    for x, m in enumerate(models):
        ax.bar(x, np.mean(per_model[m]), color="#9ecae1" if m != "bert4rec" else "#bdbdbd")
        ax.plot([x] * len(per_model[m]), per_model[m], "k.", ms=5)
    ax.axhline(PUBLISHED[target]["NDCG@10"], color="tab:red", ls="--", lw=1, label="C2DSR (published)")
    ax.axhline(GOALS[target], color="tab:green", ls=":", lw=1, label="goal")
    ax.set_xticks(range(len(models)), [m.replace("trigrec-", "") for m in models], rotation=35, ha="right", fontsize=8)


def main() -> None:
    run = [opt("--target", choices=sorted(TARGETS), required=True), opt("--seed", type=int, default=1),
           opt("--override", default=""),
           opt("--tree", default="", help="a stage-1 tree of its own (seed<N>[-nogrl]-TREE) whose rows carry the suffix "
                                          "-TREE: a re-measure beside the committed runs")]
    cli(__doc__, {
        "stage1": (cmd_stage1, run + [opt("--collect-only", action="store_true"),
                                      opt("--no-grl", action="store_true", help="common encoder without gradient reversal")]),
        "stage2": (cmd_stage2, run + [
            opt("--collect-only", action="store_true"), opt("--variant", choices=sorted(VARIANTS), default="trigrec"),
            opt("--tag", default="", help="suffix of the row and run name for a variant with --override"),
            opt("--ranks-only", action="store_true",
                help="write the per-line C2DSR test ranks of a finished run (eval_only), no rows")]),
        "stage1-loss": (cmd_stage1_loss, run + [opt("--epochs", type=int, default=2)]),
        "summarize": (cmd_summarize, [])})


if __name__ == "__main__":
    main()
