"""SASRec / BERT4Rec quality, speed and memory, side by side with RecBole 1.2.1.

Pieces (``quality``, ``speed``, ``budget``, ``limit``, ``memory``, ``recency``, ``paired``, ``summarize``; methods in
benchmarks/README.md)
merge their rows into benchmarks/results/: per-seed rows into ``sequential_runs.json``, the others into
``sequential.json``; ``summarize`` writes ``sequential.json`` / ``.md`` and ``sequential_curves.png``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

from benchmarks.common import REPO, RESULTS, WORK, aggregate, cli, load_rows, machine, merge_rows, opt, overrides, plot, read_jsonl, \
    row, run_module, timed, write_md
from core.cost import LEAN_MEMORY_ENV, allocator_env, seqrec_ranking_vs_limit, training_run_cost

RUNS_FILE = RESULTS / "sequential_runs.json"
KEY = ("dataset", "model", "protocol", "metric")  # sequential.json holds one row per key
# issue 20's bars on full-ranking NDCG@10 (S3-Rec/ICLRec files): (published anchors, must reach, aim)
ANCHORS = {
    ("beauty", "sasrec"): ("SASRec+SS 0.0531; eSASRec 0.0523; BSARec 0.0611; BCE SASRec 0.0318 (TIGER table)", 0.0560, 0.0611),
    ("beauty", "sasrec-ce-wd01"): ("the quality recipe (configs/distillation/sasrec/beauty-ce.yaml): SASRec's bars",
                                   0.0560, 0.0611),
    ("beauty", "sasrec-ce-d96b3-e40"): ("the 40-epoch recipe (configs/distillation/sasrec/beauty-ce-e40.yaml): SASRec's bars",
                                        0.0560, 0.0611),
    ("beauty", "sasrec-ce-d96b3-e40-fused"): ("the 40-epoch recipe with the fused full softmax (stop 40): SASRec's bars",
                                              0.0560, 0.0611),
    ("sports", "sasrec"): ("SASRec+SS 0.0314; eSASRec 0.0323; ActionPiece 0.0264", 0.0330, 0.0360),
    ("toys", "sasrec"): ("SASRec+SS 0.0580; eSASRec 0.0538; TIGER 0.0432", 0.0600, 0.0650),
    ("beauty", "bsarec"): ("BSARec (its paper) 0.0611; held to the SASRec bars", 0.0560, 0.0611),
    ("sports", "bsarec"): ("held to the SASRec bars", 0.0330, 0.0360),
    ("toys", "bsarec"): ("held to the SASRec bars", 0.0600, 0.0650),
    ("beauty", "bert4rec"): ("DuoRec 0.0443; ActionPiece 0.0424; 0.0170 (TIGER table)", 0.0443, 0.0500),
}
QUALITY_METRICS = ["NDCG@5", "NDCG@10", "NDCG@20", "HR@5", "HR@10", "HR@20", "MRR"]
SAMPLED_METRICS = ["NDCG@10", "HR@10"]
TIME_METRICS = ("train_minutes", "minutes_to_valid_NDCG@10_0.05")
NO_WEIGHTS_ONLY = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # RecBole's checkpoints pickle its Config


def cmd_quality(args) -> None:
    """train one dataset / model / seed with the shipped config and record its test metrics"""
    config = f"configs/distillation/{args.model}/{args.dataset}.yaml"
    # sasrec keeps the historical name; other models get their own so runs never overwrite each other
    run_name = f"bench-seed{args.seed}" if args.model == "sasrec" else f"bench-{args.model}-seed{args.seed}"
    over = overrides(f"seed={args.seed},run_name={run_name},overwrite=true", args.override)
    command = run_module("distillation.training", config, over, run=False)
    if args.from_run:  # a finished run started by hand: its folder and the command that ran it
        if not args.command:
            raise SystemExit("--from-run needs --command (the exact command that trained that run)")
        run_name, command = args.from_run, args.command
    run_dir = REPO / "state_dict" / "distillation" / args.dataset / run_name
    results = run_dir / "results.json"
    if args.from_run and not results.is_file():
        raise SystemExit(f"{results}: not found")
    if results.is_file() and json.loads(results.read_text())["model"] != args.model:
        raise SystemExit(f"{results} holds another model's run; refusing to overwrite it")
    done = (args.collect_only or args.from_run) and results.is_file()
    wall = None if done else timed(run_module, "distillation.training", config, over)[1]
    res, curve = json.loads(results.read_text()), read_jsonl(run_dir / "metrics.jsonl")
    # the device with the threads the run itself used (a run by hand may differ from this process)
    r = partial(row, args.dataset, seeds=[args.seed], command=command, device=machine(res.get("threads")))
    name = args.label or args.model
    rows = [r(name, "full", m, res["test"][m], best_epoch=res["best_epoch"], train_seconds=res["train_seconds"])
            for m in QUALITY_METRICS]
    rows += [r(name, "sampled-100", m, res["test"][f"sampled-100/{m}"]) for m in SAMPLED_METRICS
             if f"sampled-100/{m}" in res["test"]]
    rows += [r("popularity", "full", m, res["popularity_test"][m]) for m in ("NDCG@10", "HR@10")]
    # cost: the whole run (data, training, test) when timed here, else the fit loop's own clock
    minutes = (wall if wall is not None else res["train_seconds"]) / 60
    rows.append(r(name, "full", "train_minutes", minutes, threads=res.get("threads"), whole_run=wall is not None))
    reached = next((x["seconds"] for x in curve if x.get("valid", {}).get("NDCG@10", 0) >= 0.05), None)
    if reached is not None:  # training wall time (validation included) until validation NDCG@10 >= 0.05
        rows.append(r(name, "full", "minutes_to_valid_NDCG@10_0.05", reached / 60, threads=res.get("threads")))
    rows.append(r(name, "full", "valid_curve", None,
                  curve=[[x["epoch"], x["seconds"], x["valid"]["NDCG@10"]] for x in curve if "valid" in x]))
    merge_rows(RUNS_FILE, rows)
    print(f"{args.dataset} {name} seed {args.seed}: test NDCG@10 {res['test']['NDCG@10']:.4f} "
          f"HR@10 {res['test']['HR@10']:.4f} (best epoch {res['best_epoch']})")


def cmd_recency(args) -> None:
    """how much a finished run uses the newest item: test NDCG@10 with and without the validation item in the input"""
    from dataclasses import replace

    import torch

    from core.config import load_config
    from core.data.splits import EvalSplit, make_split
    from core.evaluation import Evaluator
    from core.seqrec import load_dataset, load_trained_model, model_score_fn
    from distillation.config import DistillConfig

    run_dir = REPO / "state_dict" / "distillation" / args.dataset / args.from_run
    cfg = load_config(DistillConfig, run_dir / "config.yaml", "device=cpu")  # runs of distillation.training
    data, data_path = load_dataset(cfg.data)
    split = make_split(data, cfg.data.split)
    model, _ = load_trained_model(run_dir / "best.pt", data, data_path, torch.device("cpu"))
    test = split.test
    # the same users and targets, the input cut before the validation item (which stays rankable)
    skipped = replace(split, test=EvalSplit(test.users, test.hist_len - 1, test.targets))
    scores = {name: Evaluator(s, "test", cfg.model.maxlen, (10,), sampled=()).run(model_score_fn(model))["NDCG@10"]
              for name, s in (("NDCG@10", split), ("NDCG@10_test_input_without_valid_item", skipped))}
    r = partial(row, args.dataset, seeds=[args.seed], command=f"python -m benchmarks.sequential recency --dataset "
                f"{args.dataset} --model {args.model} --label {args.label or args.model} --seed {args.seed} "
                f"--from-run {args.from_run}", device=machine(torch.get_num_threads()))
    name = args.label or args.model
    merge_rows(RUNS_FILE, [r(name, "full", "NDCG@10_test_input_without_valid_item",
                             scores["NDCG@10_test_input_without_valid_item"]),
                           r(name, "full", "test_gain_from_valid_item",
                             scores["NDCG@10"] / scores["NDCG@10_test_input_without_valid_item"])])
    print(f"{args.dataset} {name} seed {args.seed}: test NDCG@10 {scores['NDCG@10']:.4f}, without the validation item "
          f"in the input {scores['NDCG@10_test_input_without_valid_item']:.4f} "
          f"(x{scores['NDCG@10'] / scores['NDCG@10_test_input_without_valid_item']:.2f} from it)")


def paired_runs(dataset: str, base: str, other: str, seeds: list[int]) -> dict:
    """The paired test over users (``core.metrics.paired_over_seeds``: per-user test NDCG@10
    averaged over the seeds, Wilcoxon and t) of two run families of ``state_dict/distillation/
    <dataset>/``, named by patterns with ``{seed}``; plus each family's mean test NDCG@10 over
    the shared seeds. A seed missing from either family is left out; none shared is an error."""
    import numpy as np

    from core.metrics import ndcg_by_id, paired_over_seeds

    def family(pattern: str) -> dict:
        if "{seed}" not in pattern:
            raise SystemExit(f"run pattern {pattern!r} has no {{seed}}: name the runs as e.g. 'bench-seed{{seed}}'")
        out = {}
        for seed in seeds:
            ranks = REPO / "state_dict" / "distillation" / dataset / pattern.format(seed=seed) / "test_ranks.npz"
            if ranks.is_file():
                z = np.load(ranks)
                out[seed] = ndcg_by_id(z["users"], z["ranks"])
            else:
                print(f"{ranks}: not found, seed {seed} left out", file=sys.stderr)
                out[seed] = None
        return out

    runs = {"base": family(base), "other": family(other)}
    test = paired_over_seeds(runs["base"], runs["other"])
    if not test:
        raise SystemExit(f"{base} and {other}: no seed of {seeds} has test_ranks.npz in both (finished runs write it)")
    means = {k: float(np.mean([np.mean(list(runs[k][s].values())) for s in test["seeds"]])) for k in runs}
    return {**test, "base_mean": means["base"], "other_mean": means["other"]}


def cmd_paired(args) -> None:
    """paired test over users of two finished run families (test NDCG@10, seed-averaged per user)"""
    seeds = [int(s) for s in args.seeds.split(",")]
    t = paired_runs(args.dataset, args.base, args.other, seeds)
    print(f"{args.dataset} {args.other} vs {args.base}: test NDCG@10 {t['other_mean']:.4f} vs {t['base_mean']:.4f} "
          f"({100 * (t['other_mean'] / t['base_mean'] - 1):+.1f}%), per-user difference {t['mean_diff']:+.4f}, "
          f"Wilcoxon p = {t['wilcoxon_p']:.2g}, t p = {t['t_p']:.2g} (seeds {t['seeds']}, {t['users']} users)")


def record(rows: list[dict]) -> None:
    """Merge a piece's rows into sequential.json and print them."""
    merge_rows(RESULTS / "sequential.json", rows, key=KEY)
    for r in rows:
        print(f"{r['model']:16s} {r['metric']:34s} {r['value']:.4g}")


def ours_run(args, run_name: str, env: dict, epochs: int, max_steps: int = 0) -> dict:
    """``training_run_cost`` of the shipped config for ``epochs`` epochs of at most ``max_steps`` batches (0: all),
    validated on every user after each."""
    from core.seqrec import dataset_dir

    over = overrides(f"device=cpu,run_name={run_name},overwrite=true,training.epochs={epochs},training.max_steps_per_epoch="
                     f"{max_steps},training.eval_every=1,training.patience=0,training.save_checkpoints=false,"
                     "eval.valid_max_users=0", args.override)
    log = REPO / "state_dict" / "distillation" / dataset_dir(_load_cfg(args).data).name / run_name / "metrics.jsonl"
    return training_run_cost([sys.executable, "-m", "distillation.training", "--config",
                              f"configs/distillation/{args.model}/{args.dataset}.yaml", "--override", over], log, REPO, env)


def cmd_limit(args) -> None:
    """our full-ranking evaluation against the machine's arithmetic limit (core.cost.ranking_vs_limit)"""
    import torch

    from core.cli import keep_freed_memory

    keep_freed_memory()  # what every entry point does (core.cli.run): time the allocator users get
    t = seqrec_ranking_vs_limit(_load_cfg(args), REPO / "data" / args.dataset)
    command = f"python -m benchmarks.sequential limit --dataset {args.dataset} --model {args.model}"
    r = partial(row, args.dataset, args.model, "full", command=command, setting=f"{t['users']} users x {t['items']} "
                f"items, d={t['dim']}, batches of {t['batch']} users, {torch.get_num_threads()} threads, best of 3")
    record([r(metric, value) for metric, value in (
        ("sec_per_full_eval_limit", t["limit_seconds"]), ("sec_per_full_eval_same_process", t["seconds"]),
        ("eval_multiple_of_limit", t["seconds"] / t["limit_seconds"]))])


def recbole_argv(args, mode: str, out: Path, **flags) -> list[str]:
    """benchmarks/recbole_side.py ``--mode mode --out out`` (``max_batches=30``: ``--max-batches 30``) in RecBole's
    own virtualenv (made on first use), on our settings; it makes the folders of ``out`` and its work dir itself."""
    cfg = _load_cfg(args)
    py, m = WORK / "recbole-venv" / "bin" / "python", cfg.model
    if not py.is_file():
        subprocess.run(["bash", str(REPO / "benchmarks" / "recbole_env.sh")], check=True)
    model = {"sasrec": "SASRec", "bert4rec": "BERT4Rec"}[args.model]
    given = {"dataset-dir": REPO / "data" / args.dataset, "model": model, "hidden": m.hidden_units,
             "layers": m.num_blocks, "heads": m.num_heads, "inner": 4 * m.hidden_units, "maxlen": m.maxlen,
             "batch": cfg.training.batch_size, "lr": cfg.training.learning_rate, "dropout": m.dropout_rate,
             "seed": args.seed, "work-dir": WORK / "recbole" / args.dataset, "mode": mode,
             **{k.replace("_", "-"): v for k, v in flags.items()}, "out": out}
    return [str(py), str(REPO / "benchmarks" / "recbole_side.py"),
            *(part for flag, value in given.items() for part in (f"--{flag}", str(value)))]


def _load_cfg(args):
    from core.config import load_config
    from core.seqrec import SeqRecConfig

    return load_config(SeqRecConfig, REPO / f"configs/distillation/{args.model}/{args.dataset}.yaml", "device=cpu")


def cmd_speed(args) -> None:
    """ours vs RecBole 1.2.1: seconds per epoch, per full evaluation, peak RSS"""
    theirs_json = WORK / f"speed-recbole-{args.dataset}-{args.model}.json"
    ours = ours_run(args, "bench-speed", allocator_env(**NO_WEIGHTS_ONLY), args.epochs)
    lean = ours_run(args, "bench-speed-lean", allocator_env(lean=True, **NO_WEIGHTS_ONLY), args.epochs)
    subprocess.run(recbole_argv(args, "speed", theirs_json, max_batches=args.recbole_batches), check=True,
                   env={**os.environ, **NO_WEIGHTS_ONLY})
    theirs = json.loads(theirs_json.read_text())
    command = f"python -m benchmarks.sequential speed --dataset {args.dataset} --model {args.model} --epochs {args.epochs}"
    r, rb = partial(row, args.dataset, command=command), f"recbole-{args.model}"
    lean_note = "lean-memory recipe: " + " ".join(f"{k}={v}" for k, v in LEAN_MEMORY_ENV.items())
    record([r(args.model, "full", "sec_per_epoch", ours["sec_per_epoch"],
              epoch="one pass over every user's training sequence, all positions at once"),
            r(rb, "full", "sec_per_epoch", theirs["sec_per_epoch"],
              epoch=f"one pass over {theirs.get('n_train_samples')} prefix-expanded samples",
              method=theirs.get("sec_per_epoch_method")),
            *(r(model, "full", k, side[k]) for k in ("sec_per_full_eval", "peak_rss_mb") for model, side in
              ((args.model, ours), (rb, theirs))),
            *(r(args.model, "full", metric, theirs[k] / ours[k]) for metric, k in (
                ("speedup_vs_recbole_epoch", "sec_per_epoch"), ("speedup_vs_recbole_eval", "sec_per_full_eval"),
                ("ram_ratio_recbole_over_ours", "peak_rss_mb"))),
            *(r(args.model, "full", f"{metric}_lean_memory", value, setting=lean_note) for metric, value in (
                ("sec_per_epoch", lean["sec_per_epoch"]), ("peak_rss_mb", lean["peak_rss_mb"]),
                ("ram_ratio_recbole_over_ours", theirs["peak_rss_mb"] / lean["peak_rss_mb"]),
                ("speedup_vs_recbole_epoch", theirs["sec_per_epoch"] / lean["sec_per_epoch"])))])


def cmd_memory(args) -> None:
    """peak RSS vs RecBole where data dominates (ML-1M's shape, max length 200)"""
    from core.data.synthetic_large import LargeSpec, generate_large, repack_npz

    data = REPO / "data" / "ml-1m-size"  # MovieLens-1M's shape, repacked so both sides hold it in memory
    if not (data / "sequences.npz").is_file():
        generate_large(data, LargeSpec(interactions=1000209, items=3706, users=6040, seed=0), "ml-1m-size")
        repack_npz(data)
    cfg, theirs_json = _load_cfg(args), WORK / f"memory-recbole-{args.dataset}.json"
    ours = ours_run(args, "bench-memory", allocator_env(**NO_WEIGHTS_ONLY), 1, args.batches)
    if not (args.reuse_recbole and theirs_json.is_file()):  # RecBole's peak does not depend on our side
        subprocess.run(recbole_argv(args, "speed", theirs_json, max_batches=args.batches), check=True,
                       env=allocator_env(**NO_WEIGHTS_ONLY))
    theirs = json.loads(theirs_json.read_text())
    command = f"python -m benchmarks.sequential memory --dataset {args.dataset} --model {args.model} --batches {args.batches}"
    if theirs.get("args", {}).get("max_batches") not in (None, args.batches):
        raise SystemExit(f"{theirs_json} was measured with another --batches; run without --reuse-recbole")
    setting = (f"{args.batches} training batches of {cfg.training.batch_size} + one full evaluation per side; maxlen "
               f"{cfg.model.maxlen}, d={cfg.model.hidden_units}, RecBole default SASRec settings")
    record([row(args.dataset, model, "full", metric, value, command=command, setting=setting) for model, metric, value in (
        (args.model, "peak_rss_mb", ours["peak_rss_mb"]), (f"recbole-{args.model}", "peak_rss_mb", theirs["peak_rss_mb"]),
        (args.model, "ram_ratio_recbole_over_ours", theirs["peak_rss_mb"] / ours["peak_rss_mb"]))])


def cmd_budget(args) -> None:
    """both sides train for the same wall-clock budget at the same time, one thread each"""
    budget, run_name = args.minutes * 60, f"budget-{int(args.minutes)}min"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **NO_WEIGHTS_ONLY}
    theirs_json = WORK / f"budget-recbole-{args.dataset}-{args.model}.json"
    # the shipped recipe as it is (its cosine schedule has a fixed length), stopped by the budget if not done by then
    over = f"seed={args.seed},run_name={run_name},overwrite=true,training.time_budget_s={budget},eval.sampled=[]"
    if not args.collect_only:
        ours = subprocess.Popen([sys.executable, "-m", "distillation.training", "--config",
                                 f"configs/distillation/{args.model}/{args.dataset}.yaml", "--override", over], cwd=REPO, env=env)
        theirs = subprocess.Popen(recbole_argv(args, "budget", theirs_json, budget_s=budget), env=env)
        if ours.wait() or theirs.wait():
            raise SystemExit("a budget run failed")
    res = json.loads((REPO / "state_dict" / "distillation" / args.dataset / run_name / "results.json").read_text())
    rb = json.loads(theirs_json.read_text())
    command = f"python -m benchmarks.sequential budget --dataset {args.dataset} --model {args.model} --minutes {args.minutes:g}"
    metric, r = f"NDCG@10_at_budget_{args.minutes:g}min", partial(row, args.dataset, seeds=[args.seed], command=command)
    record([r(args.model, "full", metric, res["test"]["NDCG@10"], valid_ndcg10=res["valid"]["NDCG@10"],
              epochs=res["epochs_run"], budget_s=budget),
            # RecBole's own evaluator: full ranking that does NOT remove the user's history
            r(f"recbole-{args.model}", "full", metric, rb["test_ndcg@10"], valid_ndcg10=rb["valid_ndcg@10"],
              epochs=rb["epochs_done"], budget_s=budget,
              note="RecBole's evaluator (history not masked); epochs of prefix-expanded samples"),
            r(args.model, "full", f"budget_{args.minutes:g}min_ratio_vs_recbole",
              res["test"]["NDCG@10"] / rb["test_ndcg@10"])])


def quiet_times(runs: list[dict]) -> list[dict]:
    """Drop the time rows of runs that had fewer torch threads than the best-threaded run of their
    dataset / model / metric: those ran at one thread beside other processes (quality figures
    only), and a mean over both kinds would time neither."""
    most: dict[tuple, int] = {}
    for r in runs:
        if r["metric"] in TIME_METRICS:
            key = (r["dataset"], r["model"], r["metric"])
            most[key] = max(most.get(key, 0), r.get("threads") or 0)
    return [r for r in runs if r["metric"] not in TIME_METRICS
            or (r.get("threads") or 0) == most[(r["dataset"], r["model"], r["metric"])]]


def cmd_summarize(args) -> None:
    """sequential.json / .md / _curves.png"""
    from core.report import Sel, bar_verdict, format_table, select_row

    runs = load_rows(RUNS_FILE)
    merge_rows(RESULTS / "sequential.json", aggregate(quiet_times(runs))[1], key=KEY)
    rows = load_rows(RESULTS / "sequential.json")
    quality = [r for r in rows if r["metric"] in QUALITY_METRICS]
    table = {}
    for r in quality:
        table.setdefault((r["dataset"], r["model"], r["protocol"]), {
            "dataset": r["dataset"], "model": r["model"], "protocol": r["protocol"], "seeds": len(r["seeds"])
        })[r["metric"]] = f"{r['value']:.4f}" + (f" ± {r['std']:.4f}" if r.get("std") else "")
    md = lambda items, cols: format_table(items, cols, markdown=True)  # noqa: E731
    write_md(RESULTS / "sequential.md", [
        "# Sequential models: quality, speed, memory", "",
        "Test metrics at the validation-best epoch, leave-one-out, full ranking over all items with the "
        "user's history excluded (sampled-100: 100 fixed-seed negatives). Mean ± std over seeds.", "",
        md([table[k] for k in sorted(table)], ["dataset", "model", "protocol", "seeds", *QUALITY_METRICS]),
        "", "## Against published anchors (test NDCG@10, full ranking)", "",
        md([{"dataset": d, "model": m, "published": text, "must reach": must, "aim": aim,
             "ours": table.get((d, m, "full"), {}).get("NDCG@10", "not run yet"),
             "verdict": bar_verdict(select_row(quality, Sel(d, m, "NDCG@10", "full")), must, aim)}
            for (d, m), (text, must, aim) in ANCHORS.items()],
           ["dataset", "model", "published", "must reach", "aim", "ours", "verdict"]),
        "", "## Speed, memory and equal-budget rows", "",
        md([{**r, "value": f"{r['value']:.3f}" if isinstance(r["value"], float) else r["value"]}
            for r in rows if r not in quality], ["dataset", "model", "metric", "value", "device"]),
        "", "Commands: see the `command` field of each row in `sequential.json`."])
    curves = [r for r in runs if r["metric"] == "valid_curve" and r["curve"]]
    panels = {ds: [(f"{c['model']} seed {c['seeds'][0]}", [p[0] for p in c["curve"]], [p[2] for p in c["curve"]])
                   for c in curves if c["dataset"] == ds] for ds in sorted({c["dataset"] for c in curves})}
    plot("sequential_curves.png", panels, "epoch", "valid NDCG@10 (full ranking)", size=(5, 3.6))


def main() -> None:
    common = [opt("--dataset", required=True,
                  choices=["beauty", "sports", "toys", "ml-100k", "ml-1m", "ml-1m-size", "synthetic"]),
              opt("--model", default="sasrec", choices=["sasrec", "bert4rec", "bsarec"]), opt("--seed", type=int, default=1),
              opt("--override", default="")]
    cli(__doc__, {
        "quality": (cmd_quality, common + [
            opt("--collect-only", action="store_true", help="read a finished run instead of training"),
            opt("--from-run", default="", help="collect this finished run folder (with --command)"),
            opt("--command", default="", help="the command that trained --from-run"),
            opt("--label", default="", help="the rows' model name (default: --model), for a variant such as bsarec-pospad")]),
        "speed": (cmd_speed, common + [opt("--epochs", type=int, default=2), opt(
            "--recbole-batches", type=int, default=30, help="RecBole batches timed (epoch extrapolated)")]),
        "budget": (cmd_budget, common + [opt("--minutes", type=float, default=20),
                                         opt("--collect-only", action="store_true", help="re-read finished budget runs")]),
        "limit": (cmd_limit, common),
        "memory": (cmd_memory, common + [
            opt("--batches", type=int, default=30, help="training batches on each side"),
            opt("--reuse-recbole", action="store_true", help="keep RecBole's result of an earlier run with the same --batches")]),
        "recency": (cmd_recency, common + [opt("--from-run", required=True, help="a finished run folder of --dataset"),
                                           opt("--label", default="", help="the rows' model name (default: --model)")]),
        "paired": (cmd_paired, [
            opt("--dataset", required=True), opt("--base", required=True, help="run folder pattern with {seed}, e.g. bench-seed{seed}"),
            opt("--other", required=True, help="the compared runs, same form"),
            opt("--seeds", default="1,2,3", help="comma-separated seeds")]),
        "summarize": (cmd_summarize, [])})


if __name__ == "__main__":
    main()
