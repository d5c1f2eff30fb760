"""Does distilling text profiles improve SASRec / BERT4Rec? Baseline vs distilled, ablations, controls.

Pieces (``run --model M --variant V --seed N``, ``summarize``: benchmarks/README.md, "Profile
distillation"). Every variant trains ``configs/distillation/<model>_llm/<dataset>.yaml`` through
``python -m distillation.training`` with the same settings except the distillation keys
(``VARIANTS``). ``summarize``: mean ± std over seeds, the gain over the baseline, a paired test
over users (per-user NDCG@10 averaged over the shared seeds) and the training-time ratio.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

from benchmarks.common import REPO, RESULTS, aggregate, load_rows, merge_rows, ndcg_by_id, pyplot, row, seed_averaged_paired

RUNS_FILE = RESULTS / "distillation_runs.json"
# per-user test ranks of every run, kept beside the rows so the paired tests can be recomputed
# on a machine that no longer holds the run folders (state_dict/ is never committed)
RANKS_FILE = RESULTS / "distillation_user_ranks.json"
METRICS = ["NDCG@5", "NDCG@10", "NDCG@20", "HR@5", "HR@10", "HR@20", "Recall@10", "MRR"]
# variant -> overrides on top of the *_llm config (the baseline switches distillation off)
VARIANTS = {
    "base": "use_distillation=false",
    "distill": "",
    "shuffled": "shuffle_profiles=true",
    "mean": "pooling=mean",
    "exp": "pooling=exp",
    "attention": "pooling=attention",
    "nodyn": "dynamic_scaling=false",
    "noft": "fine_tune_epoch=0",
}


def model_name(model: str, variant: str, tag: str = "") -> str:
    if variant == "base":
        return model
    name = f"{model}+distill" if variant == "distill" else \
        f"{model}+distill-shuffled" if variant == "shuffled" else f"{model}+distill-{variant}"
    return name + (f"-{tag}" if tag else "")


def cmd_run(args) -> None:
    config = f"configs/distillation/{args.model}_llm/{args.dataset}.yaml"
    name = model_name(args.model, args.variant, args.tag)
    run_name = f"bench-{name.replace('+', '_')}-seed{args.seed}"
    over = ",".join(x for x in (f"seed={args.seed},run_name={run_name},overwrite=true", VARIANTS[args.variant], args.override) if x)
    command = f"python -m distillation.training --config {config} --override \"{over}\""
    profiles = REPO / "state_dict" / "embeddings" / "distillation" / args.dataset / "profiles-128.json"
    if args.variant != "base" and not profiles.is_file():
        subprocess.run([sys.executable, "-m", "distillation.profiles", "--dataset", args.dataset, "--dim", "128"],
                       cwd=REPO, check=True)
    run_dir = REPO / "state_dict" / "distillation" / args.dataset / run_name
    if not (args.collect_only and (run_dir / "results.json").is_file()):
        subprocess.run([sys.executable, "-m", "distillation.training", "--config", config, "--override", over],
                       cwd=REPO, check=True)
    res = json.loads((run_dir / "results.json").read_text())
    curve = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    extra = {"best_epoch": res["best_epoch"], "train_seconds": res["train_seconds"], "run_dir": str(run_dir.relative_to(REPO))}
    rows = [row(args.dataset, name, "full", m, res["test"][m], seeds=[args.seed], command=command, **extra)
            for m in METRICS if m in res["test"]]
    rows.append(row(args.dataset, name, "full", "train_seconds", res["train_seconds"], seeds=[args.seed], command=command))
    rows.append(row(args.dataset, name, "full", "valid_curve", None, seeds=[args.seed], command=command,
                    curve=[[r["epoch"], r["valid"]["NDCG@10"]] for r in curve if "valid" in r]))
    merge_rows(RUNS_FILE, rows)
    store_user_ranks([extra["run_dir"]])
    print(f"{args.dataset} {name} seed {args.seed}: test NDCG@10 {res['test']['NDCG@10']:.4f} "
          f"Recall@10 {res['test'].get('Recall@10', float('nan')):.4f} (best epoch {res['best_epoch']}, "
          f"{res['train_seconds']:.0f}s)")


def store_user_ranks(run_dirs) -> dict:
    """Copy ``test_ranks.npz`` of the given run folders (those still on disk) into RANKS_FILE."""
    from core.store import atomic_write_json

    table = json.loads(RANKS_FILE.read_text()) if RANKS_FILE.is_file() else {}
    fresh = {}
    for run_dir in run_dirs:
        path = REPO / run_dir / "test_ranks.npz"
        if path.is_file():
            z = np.load(path)
            fresh[str(run_dir)] = {"users": z["users"].tolist(), "ranks": z["ranks"].tolist()}
    if any(table.get(k) != v for k, v in fresh.items()):
        table.update(fresh)
        atomic_write_json(RANKS_FILE, table)
    return table


def per_user_ndcg(ranks_table: dict, run_dir: str, k: int = 10) -> dict[int, float]:
    entry = ranks_table[str(run_dir)]  # KeyError: ranks of that run were never stored
    return ndcg_by_id(entry["users"], entry["ranks"], k)


def paired_test(ranks_table: dict, base_dirs: dict[int, str], other_dirs: dict[int, str]) -> dict:
    seeds = sorted(s for s in set(base_dirs) & set(other_dirs)
                   if str(base_dirs[s]) in ranks_table and str(other_dirs[s]) in ranks_table)
    if not seeds:
        return {}
    test = seed_averaged_paired([per_user_ndcg(ranks_table, base_dirs[s]) for s in seeds],
                                [per_user_ndcg(ranks_table, other_dirs[s]) for s in seeds])
    return {"users": test["users"], "seeds": seeds, "mean_diff": test["mean_diff"], "t_p": test["t_p"],
            "wilcoxon_p": test["wilcoxon_p"]}


def cmd_summarize(args) -> None:
    runs = load_rows(RUNS_FILE)
    groups, out = aggregate(runs)
    dirs: dict[tuple, dict[int, str]] = {(ds, model): {r["seeds"][0]: r["run_dir"] for r in rs}
                                         for (ds, model, proto, metric), rs in groups.items() if metric == "NDCG@10"}
    by = {(r["dataset"], r["model"], r["metric"]): r for r in out}
    ranks_table = store_user_ranks({d for model_dirs in dirs.values() for d in model_dirs.values()})
    previous = load_rows(RESULTS / "distillation.json")
    previous_tests = {(r["dataset"], r["model"]): r for r in previous if r["metric"] == "paired_wilcoxon_p_NDCG@10"}
    for (ds, model), model_dirs in sorted(dirs.items()):
        base = model.split("+")[0]
        if base == model or (ds, base) not in dirs:
            continue
        test = paired_test(ranks_table, dirs[(ds, base)], model_dirs)
        old = previous_tests.get((ds, model))
        if old and len(old["seeds"]) > len(test.get("seeds", [])):
            # runs from before per-user ranks were stored: keep the test computed when their folders existed
            out.append(old)
            test = {}
        for metric in ("NDCG@10", "Recall@10", "HR@10"):
            b, m = by.get((ds, base, metric)), by.get((ds, model, metric))
            if b and m:
                # the gain compares the means over the seeds both share (a variant run on fewer
                # seeds is not compared with the baseline's mean over others); its spread is
                # the std of the per-seed gains
                pb = {r["seeds"][0]: r["value"] for r in groups[(ds, base, "full", metric)]}
                pm = {r["seeds"][0]: r["value"] for r in groups[(ds, model, "full", metric)]}
                shared = sorted(set(pb) & set(pm))
                if not shared:
                    continue
                gain = 100 * (np.mean([pm[s] for s in shared]) / np.mean([pb[s] for s in shared]) - 1)
                per_seed = [100 * (pm[s] / pb[s] - 1) for s in shared]
                out.append(row(ds, model, "full", f"gain_pct_{metric}", gain, float(np.std(per_seed)),
                               seeds=sorted(set(pb) & set(pm)), command="summarize", per_seed=per_seed))
        if test:
            out.append(row(ds, model, "full", "paired_wilcoxon_p_NDCG@10", test["wilcoxon_p"], seeds=test["seeds"],
                           command="summarize", users=test["users"], mean_diff=test["mean_diff"], t_p=test["t_p"]))
        tb, tm = groups.get((ds, base, "full", "train_seconds")), groups.get((ds, model, "full", "train_seconds"))
        if tb and tm:  # over the seeds both share (runs of one seed ran side by side in one queue)
            sb = {r["seeds"][0]: r["value"] for r in tb}
            sm = {r["seeds"][0]: r["value"] for r in tm}
            shared = sorted(set(sb) & set(sm))
            if shared:
                out.append(row(ds, model, "full", "train_time_ratio_vs_base",
                               float(np.mean([sm[s] for s in shared]) / np.mean([sb[s] for s in shared])),
                               seeds=shared, command="summarize"))
    from core.store import atomic_write_json, atomic_write_text

    atomic_write_json(RESULTS / "distillation.json", out)
    by = {(r["dataset"], r["model"], r["metric"]): r for r in out}
    models = sorted({(r["dataset"], r["model"]) for r in out})
    lines = ["# Profile distillation: baseline vs distilled (test, full ranking, history excluded)", "",
             "Mean ± std over seeds; gain = relative change of the mean vs the same model without distillation; "
             "p = paired Wilcoxon over users of per-user NDCG@10 (averaged over shared seeds).", "",
             "| dataset | model | seeds | NDCG@10 | Recall@10 | NDCG@20 | HR@5 | MRR | gain NDCG@10 | gain Recall@10 | p (Wilcoxon) | time ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda r: f"{r['value']:.4f} ± {r['std']:.4f}" if r else ""  # noqa: E731
    for ds, model in models:
        g = lambda m: by.get((ds, model, m))  # noqa: E731
        if not g("NDCG@10"):
            continue
        gain = lambda m: f"{g(m)['value']:+.1f}% ± {g(m)['std']:.1f}" if g(m) else ""  # noqa: E731
        p, t = g("paired_wilcoxon_p_NDCG@10"), g("train_time_ratio_vs_base")
        lines.append(f"| {ds} | {model} | {len(g('NDCG@10')['seeds'])} | {fmt(g('NDCG@10'))} | {fmt(g('Recall@10'))} | "
                     f"{fmt(g('NDCG@20'))} | {fmt(g('HR@5'))} | {fmt(g('MRR'))} | {gain('gain_pct_NDCG@10')} | "
                     f"{gain('gain_pct_Recall@10')} | {format(p['value'], '.3g') if p else ''} | "
                     f"{format(t['value'], '.2f') if t else ''} |")
    devices = sorted({r["device"] for r in runs})
    lines += ["", f"Device: {'; '.join(devices)}. Commands: the `command` field of each row in `distillation.json`."]
    atomic_write_text(RESULTS / "distillation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(runs)


def _plot(runs) -> None:
    plt = pyplot("distillation_curves.png")
    curves = [r for r in runs if r["metric"] == "valid_curve"]
    if plt is None or not curves:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors: dict[str, str] = {}
    for r in sorted(curves, key=lambda r: r["model"]):
        pts = np.array(r["curve"])
        if not len(pts):
            continue
        c = colors.setdefault(r["model"], f"C{len(colors) % 10}")
        ax.plot(pts[:, 0], pts[:, 1], color=c, alpha=0.7, label=r["model"] if r["model"] not in ax.get_legend_handles_labels()[1] else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title("Distillation on " + ", ".join(sorted({r["dataset"] for r in curves})) + " (one line per seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "distillation_curves.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("run", help="train and record one model / variant / seed")
    s.add_argument("--dataset", default="ml-100k")
    s.add_argument("--model", default="sasrec", choices=["sasrec", "bert4rec"])
    s.add_argument("--variant", default="distill", choices=sorted(VARIANTS))
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--override", default="", help="extra overrides (then also give --tag)")
    s.add_argument("--tag", default="", help="suffix of the model row name for a tuned variant")
    s.add_argument("--collect-only", action="store_true", help="read a finished run instead of training")
    sub.add_parser("summarize", help="tables, gains, paired tests, plot")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    {"run": cmd_run, "summarize": cmd_summarize}[args.cmd](args)


if __name__ == "__main__":
    main()
