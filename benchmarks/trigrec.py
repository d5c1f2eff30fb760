"""TriGRec on Amazon Food-Kitchen: the full method, its ablations and the shuffled control.

Pieces (``stage1``, ``stage2 --variant V``, ``stage1-loss``, ``summarize``: benchmarks/README.md,
"TriGRec") drive ``user_representation_module.train`` / ``.inference`` and
``recommendation_model.train_eval``; rows go to ``benchmarks/results/trigrec_runs.json``. Each
seed's stage-1 tree lives in ``state_dict/bench/trigrec/<target>/seed<N>[-nogrl]/``. Protocols:
``sampled-999`` (C2DSR: the target of each C2DSR test line against 999 sampled items of its
domain) and ``full`` (full ranking on the pickles' leave-two-out split). The ``leakfree``
variants export the ``.holdout1`` vectors on first use and train with ``model.vector_holdout=1``.
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
from core.metrics import paired_over_seeds
from core.train import mean_epoch_seconds
from recommendation_model.data import exported as exported_files
from recommendation_model.train_eval import RANKS_FILE, c2dsr_line_ndcg

RUNS_FILE = RESULTS / "trigrec_runs.json"
TARGETS = {"food": "Food-Kitchen/Food", "kitchen": "Food-Kitchen/Kitchen"}
PUBLISHED = {"food": {"MRR": 8.91, "NDCG@10": 9.71, "HR@10": 14.54}, "kitchen": {"MRR": 4.65, "NDCG@10": 4.94, "HR@10": 8.18}}
GOALS = {"food": 10.7, "kitchen": 5.4}
VARIANTS = {  # stage-2 variant -> (row name, overrides, stage-1 tree suffix)
    "trigrec": ("trigrec", "", ""),
    "bert4rec": ("bert4rec", "use_spe=false,use_cross=false", ""),
    "spe": ("trigrec-spe_only", "use_cross=false", ""),
    "cross": ("trigrec-cross_only", "use_spe=false", ""),
    "nogate": ("trigrec-nogate", "gate=false", ""),
    "shuffled": ("trigrec-shuffled", "shuffle_user_vectors=true", ""),
    "nogrl": ("trigrec-nogrl", "", "-nogrl"),
    # the other domain's specific vectors only: they hold no target-domain item, so nothing the
    # cloze loss masks can be read back from them (the target's own and the cross vectors are
    # encoded from whole training sequences, masked items included)
    "spe_other": ("trigrec-spe_other_only", "use_cross=false", ""),
    # leak-free training: the last training item of each row is predicted through the fusion
    # from vectors exported without it (export.holdout_last=1), the rest by plain cloze
    "leakfree": ("trigrec-leakfree", "model.vector_holdout=1", ""),
    "leakfree_spe_other": ("trigrec-leakfree-spe_other_only", "use_cross=false,model.vector_holdout=1", ""),
    # the merged-domain peer: one SASRec over both domains' merged sequence (recommendation_model.merged)
    "merged": ("sasrec-merged", "", ""),
}
PEER = {"merged": ("recommendation_model.merged", "configs/trigrec/merged/{}.yaml")}  # variants with their own entry
OTHER_SPE = ("spe_other", "leakfree_spe_other")  # variants that read the other domain's specific vectors
HOLDOUT = {"leakfree": 1, "leakfree_spe_other": 1}  # variant -> export.holdout_last it needs
C2DSR_METRICS = ("MRR", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10")
FULL_METRICS = ("NDCG@10", "HR@10", "MRR")
SUBSET_METRICS = ("MRR", "NDCG@10", "HR@10")  # recorded on a subset of the C2DSR test lines
# the shipped default (configs/trigrec/rec/<target>.yaml: cross-only) on the shipped stage 1 (sampled softmax)
DEFAULT = "trigrec-cross_only-ss"
SUBSETS = {" (seen targets)": "seen-target", " (leak-controlled)": "leak-controlled"}  # run-row suffix -> subset


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
    print(f"stage 1 {args.target} seed {args.seed}{suffix}: {rows[0]['value']:.1f}s/epoch, "
          f"discriminator accuracy {last.get('disc_acc'):.3f} at the last epoch")


def cmd_stage1_loss(args) -> None:
    """stage 1 with full vs sampled softmax: time per epoch, validation

    Stage 1 trained with the full softmax over the catalog (``model.loss=ce``) and with the
    shipped sampled softmax, one after the other in this call (same machine, same load): seconds
    per epoch and the target's validation NDCG@10 after ``--epochs`` epochs, for both."""
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
    for r in rows:
        print(f"{r['model']:28s} {r['metric']:26s} {r['value']:.3f}")


def ensure_export(h: Path, args, code: str, holdout: int = 0) -> None:
    """Run the stage-1 export of SPE_DOMAIN=``code`` (with ``export.holdout_last=holdout``) unless
    the files stage 2 will read exist: the epoch it picks (EPOCH_TO_LOAD in ``--override``, else
    the latest exported) and, with ``holdout``, that epoch's ``.holdout{m}`` spe and cross files."""
    folder = h / "embeddings" / "user_representation_module" / args.target
    exported = sorted(exported_files(folder, "spe", code))
    asked = re.search(r"(?:EPOCH_TO_LOAD|epoch_to_load)=(\d+)", args.override)
    epoch = int(asked[1]) if asked and int(asked[1]) else (exported[-1] if exported else 0)
    if not (epoch in exported and all((folder / f"{k}_emb_ep{epoch}_{code}.holdout{holdout}.npy").is_file()
                                      for k in ("spe", "cross") if holdout)):
        run_module("user_representation_module.inference", f"configs/trigrec/rep/{args.target}.yaml", overrides(
            f"seed={args.seed},home={rel(h)},SPE_DOMAIN={code}", f"EPOCH_TO_LOAD={epoch}" if epoch else "",
            f"export.holdout_last={holdout}" if holdout else ""))


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
    if train and (args.variant in OTHER_SPE or args.variant in HOLDOUT):
        ensure_export(h, args, code, HOLDOUT.get(args.variant, 0))
    r = partial(row, TARGETS[args.target], name, seeds=[args.seed],
                command=run_module(module, config, over, run=train))
    res = json.loads((out / "results.json").read_text())
    c2, by_target = res.get("test_c2dsr", {}), res.get("test_c2dsr_by_target", {})
    subsets, free = res.get("test_c2dsr_subsets", {}), res.get("test_full_leak_controlled") or {}
    # (protocol, row-name suffix, the metrics of those lines, the ones recorded, extra fields in the order
    # rows have them); what an older run lacks is left out. Issue 23's leak-controlled lines (runs since
    # 2026-12-04): events whose last transition no training sequence holds verbatim
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
    print(f"{TARGETS[args.target]} {name} seed {args.seed}: C2DSR NDCG@10 {100 * c2.get('NDCG@10', float('nan')):.2f}% "
          f"MRR {100 * c2.get('MRR', float('nan')):.2f}%; full NDCG@10 {100 * res['test_full']['NDCG@10']:.2f}%")


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
        p = PUBLISHED[t]
        table.append([t, "C2DSR (published)", None, *(f"{p[m]:.2f}" if m in p else None for m in C2DSR_METRICS),
                      *[None] * 4])
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
    seeds = {(d, m): [r["value"] for r in rs] for (d, m, protocol, metric), rs in groups.items()
             if (protocol, metric) == ("sampled-999", "NDCG@10")}
    plot("trigrec.png", {f"{ds} (dots: seeds)": (t, {m: v for (d, m), v in seeds.items() if d == ds})
                         for t, ds in TARGETS.items()}, "", "test NDCG@10 (%), target vs 999 negatives", draw=_bars)


def with_subsets(rows: list[dict]) -> list[dict]:
    """Aggregated rows in issue 23's naming: a test metric on a subset of the lines carries
    ``subset`` (``seen-target``, ``leak-controlled``) instead of the run rows' suffix, every other
    test metric ``subset: all``; the shipped default's rows repeat as model ``trigrec-default``."""
    out = []
    for r in rows:
        suffix, subset = next(((s, name) for s, name in SUBSETS.items() if r["metric"].endswith(s)), ("", "all"))
        metric = r["metric"].removesuffix(suffix)
        if metric in C2DSR_METRICS + FULL_METRICS:
            r = r | {"metric": metric, "subset": subset}
        out += [r] + ([r | {"model": "trigrec-default"}] if r["model"] == DEFAULT else [])
    return out


PAIRED = {  # model -> the runs it is tested against (rows "paired_wilcoxon_p_NDCG@10")
    "trigrec": ("bert4rec", "shuffled", "merged"), "spe": ("bert4rec", "shuffled"),
    "cross": ("bert4rec", "shuffled", "merged"), "spe_other": ("bert4rec", "shuffled"), "nogrl": ("bert4rec", "trigrec"),
    "leakfree": ("bert4rec", "trigrec", "merged"), "shuffled": ("bert4rec",), "merged": ("bert4rec",),
}
TREES = ("", "-ss")  # the committed runs; the issue-23 re-measure on stage 1's sampled-softmax recipe (--tree ss)


def line_ndcg(target: str, seed: int, variant: str, tree: str = "") -> dict[int, float] | None:
    """NDCG@10 (%) of each C2DSR test line of one run (None without its rank file)."""
    ndcg = c2dsr_line_ndcg(home(target, seed, VARIANTS[variant][2] + tree) / "rec" / target / f"bench-{variant}")
    return None if ndcg is None else {line: 100 * v for line, v in ndcg.items()}


def paired_tests(stored_in: Path | None = RESULTS / "trigrec.json") -> list[dict]:
    """One row per PAIRED comparison; where the runs' rank files are not on this machine (a fresh
    clone), the row computed when they were, as ``stored_in`` (trigrec.json) holds it."""
    stored = {(r["dataset"], r["model"], r["vs"]): r for r in (load_rows(stored_in) if stored_in else [])
              if r["metric"] == "paired_wilcoxon_p_NDCG@10"}
    rows = []
    for (t, ds), (variant, baselines), tree in product(TARGETS.items(), PAIRED.items(), TREES):
        tree_of = lambda v: "" if v in PEER else tree  # noqa: E731  (a peer reads no stage-1 tree)
        name = lambda v: VARIANTS[v][0] + tree_of(v)  # noqa: E731
        for base in baselines:
            test = paired_over_seeds(*({s: line_ndcg(t, s, v, tree_of(v)) for s in (1, 2, 3)} for v in (base, variant)))
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
