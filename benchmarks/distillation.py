"""Does distilling text profiles improve SASRec / BERT4Rec? Baseline vs distilled, ablations, controls.

Pieces ``run --model M --variant V --seed N`` and ``summarize``: benchmarks/README.md, "Profile distillation".
Every variant trains ``configs/distillation/<model>_llm/<dataset>.yaml`` with the baseline's settings but the
distillation keys (``VARIANTS``); the gains and paired tests over users are ``distillation.compare``'s.
"""
from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

from benchmarks.common import REPO, RESULTS, aggregate, cli, devices, load_rows, md_table, merge_rows, opt, overrides, \
    plot, pm, read_jsonl, row, run_module, write_json, write_md
from distillation.compare import compare_with_base, run_dirs, store_user_ranks

RUNS_FILE = RESULTS / "distillation_runs.json"
# per-user test ranks of every run (distillation.compare.store_user_ranks)
RANKS_FILE = RESULTS / "distillation_user_ranks.json"
METRICS = ["NDCG@5", "NDCG@10", "NDCG@20", "HR@5", "HR@10", "HR@20", "Recall@10", "MRR"]
# variant -> overrides on top of the *_llm config (the baseline switches distillation off)
VARIANTS = {"base": "use_distillation=false", "distill": "", "shuffled": "shuffle_profiles=true", "mean": "pooling=mean",
            "exp": "pooling=exp", "attention": "pooling=attention", "nodyn": "dynamic_scaling=false",
            "noft": "fine_tune_epoch=0"}
# recipe -> training overrides shared by a base model and all its variants; rows are named
# ``<model>-<recipe>`` and ``<model>-<recipe>+distill...``, so each variant is compared with the
# base of its own recipe. ``cos``: the issue-20 schedule of the sequential recipes (learning rate
# 2e-3, warm-up, cosine to zero, AdamW weight decay 0.1), warm-up scaled to ML-100K's 8 steps an epoch; ``cos-d5``:
# that with the sequential recipes' dropout 0.5; ``e120``: the shipped schedule twice as long, the fine-tune stage
# moved with it (benchmarks/README.md, "Profile distillation", stop 37).
COS = "training.learning_rate=0.002,training.lr_schedule=cosine,training.warmup_steps=48,training.weight_decay=0.1"
RECIPES = {"": "", "cos": COS, "cos-d5": COS + ",model.dropout_rate=0.5",
           "e120": "training.epochs=120,training.fine_tune_epoch=80"}


def model_name(model: str, variant: str, tag: str = "", recipe: str = "") -> str:
    model = f"{model}-{recipe}" if recipe else model
    if variant == "base":
        return model
    return f"{model}+distill" + ("" if variant == "distill" else f"-{variant}") + (f"-{tag}" if tag else "")


def cmd_run(args) -> None:
    """train and record one model / variant / seed"""
    config = f"configs/distillation/{args.model}_llm/{args.dataset}.yaml"
    name = model_name(args.model, args.variant, args.tag, args.recipe)
    run_name = f"bench-{name.replace('+', '_')}-seed{args.seed}"
    over = overrides(f"seed={args.seed},run_name={run_name},overwrite=true", RECIPES[args.recipe], VARIANTS[args.variant],
                     args.override)
    profiles = REPO / "state_dict" / "embeddings" / "distillation" / args.dataset / "profiles-128.json"
    if args.variant != "base" and not profiles.is_file():
        subprocess.run([sys.executable, "-m", "distillation.profiles", "--dataset", args.dataset, "--dim", "128"],
                       cwd=REPO, check=True)
    run_dir = REPO / "state_dict" / "distillation" / args.dataset / run_name
    command = run_module("distillation.training", config, over,
                         run=not (args.collect_only and (run_dir / "results.json").is_file()))
    res = json.loads((run_dir / "results.json").read_text())
    extra = {"best_epoch": res["best_epoch"], "train_seconds": res["train_seconds"], "run_dir": str(run_dir.relative_to(REPO))}
    r = partial(row, args.dataset, name, "full", seeds=[args.seed], command=command)
    rows = [r(m, res["test"][m], **extra) for m in METRICS if m in res["test"]]
    rows += [r("train_seconds", res["train_seconds"]), r("valid_curve", None, curve=[
        [x["epoch"], x["valid"]["NDCG@10"]] for x in read_jsonl(run_dir / "metrics.jsonl") if "valid" in x])]
    merge_rows(RUNS_FILE, rows)
    store_user_ranks(RANKS_FILE, REPO, [extra["run_dir"]])
    print(f"{args.dataset} {name} seed {args.seed}: test NDCG@10 {res['test']['NDCG@10']:.4f} "
          f"Recall@10 {res['test'].get('Recall@10', float('nan')):.4f} (best epoch {res['best_epoch']}, "
          f"{res['train_seconds']:.0f}s)")


def cmd_summarize(args) -> None:
    """tables, gains, paired Wilcoxon over users, plot"""
    runs = load_rows(RUNS_FILE)
    groups, out = aggregate(runs)
    ranks = store_user_ranks(RANKS_FILE, REPO, {d for seeds in run_dirs(groups).values() for d in seeds.values()})
    out += compare_with_base(groups, ranks, load_rows(RESULTS / "distillation.json"))
    write_json(RESULTS / "distillation.json", out)
    by = {(r["dataset"], r["model"], r["metric"]): r for r in out}
    g = lambda key, metric: by.get((*key, metric))  # noqa: E731
    gain = lambda metric: lambda k: f"{g(k, metric)['value']:+.1f}% ± {g(k, metric)['std']:.1f}" if g(k, metric) else ""  # noqa: E731
    p, t = "paired_wilcoxon_p_NDCG@10", "train_time_ratio_vs_base"
    cols = [("dataset", lambda k: k[0]), ("model", lambda k: k[1]), ("seeds", lambda k: len(g(k, "NDCG@10")["seeds"])),
            *((m, lambda k, m=m: pm(g(k, m))) for m in ("NDCG@10", "Recall@10", "NDCG@20", "HR@5", "MRR")),
            ("gain NDCG@10", gain("gain_pct_NDCG@10")), ("gain Recall@10", gain("gain_pct_Recall@10")),
            ("p (Wilcoxon)", lambda k: format(g(k, p)["value"], ".3g") if g(k, p) else ""),
            ("time ratio", lambda k: format(g(k, t)["value"], ".2f") if g(k, t) else "")]
    models = sorted({(r["dataset"], r["model"]) for r in out if (r["dataset"], r["model"], "NDCG@10") in by})
    write_md(RESULTS / "distillation.md", [
        "# Profile distillation: baseline vs distilled (test, full ranking, history excluded)", "",
        "Mean ± std over seeds; gain = relative change of the mean vs the same model without distillation; "
        "p = paired Wilcoxon over users of per-user NDCG@10 (averaged over shared seeds).", "", *md_table(cols, models),
        "", f"Device: {devices(runs)}. Commands: the `command` field of each row in `distillation.json`."])
    curves = sorted((r for r in runs if r["metric"] == "valid_curve" and r["curve"]), key=lambda r: r["model"])
    plot("distillation_curves.png", {"Distillation on " + ", ".join(sorted({r["dataset"] for r in curves}))
                                     + " (one line per seed)": [(r["model"], *zip(*r["curve"])) for r in curves]}
         if curves else {}, "epoch", "validation NDCG@10", size=(7, 4.5), marker=None)


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    cli(__doc__, {"run": (cmd_run, [
        opt("--dataset", default="ml-100k"), opt("--model", default="sasrec", choices=["sasrec", "bert4rec"]),
        opt("--variant", default="distill", choices=sorted(VARIANTS)), opt("--seed", type=int, default=1),
        opt("--override", default="", help="extra overrides (then also give --tag)"),
        opt("--tag", default="", help="suffix of the model row name for a tuned variant"),
        opt("--recipe", default="", choices=sorted(RECIPES), help="training schedule of the base and its variants "
            "(rows <model>-<recipe>...)"),
        opt("--collect-only", action="store_true", help="read a finished run instead of training")]),
        "summarize": (cmd_summarize, [])})


if __name__ == "__main__":
    main()
