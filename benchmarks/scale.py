"""Catalog scale on this machine: generation, SASRec sampled-softmax training, chunked full ranking.

Pieces ``run --size S --piece P`` and ``summarize``: benchmarks/README.md, "Catalog scale". Each piece runs in a fresh
subprocess, so its peak RAM (VmHWM) is its own, and merges ``core.cost``'s measurements into scale.json.
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys

from benchmarks.common import REPO, RESULTS, cli, load_rows, machine, md_table, merge_rows, opt, plot, timed, write_md

RESULTS_FILE = RESULTS / "scale.json"
SIZES = {"100k": (100_000, 10_000, 5_000), "1m": (1_000_000, 100_000, 50_000),  # interactions, items, users
         "10m": (10_000_000, 1_000_000, 500_000)}
SIZE_ORDER = {f"synthetic-{s}": i for i, s in enumerate(SIZES)}
PIECES = ("prep", "train", "eval", "eval-unchunked")
TRAIN_STEPS, TRAIN_BATCH, NEGATIVES, SAMPLER = 50, 256, 256, "popularity"  # 50: the CPU is shared
EVAL_USERS, ITEM_CHUNK, EVAL_BATCH = 10_000, 65_536, 1024
MODEL = dict(maxlen=50, hidden_units=64, num_blocks=2, num_heads=2, dropout_rate=0.2)


def child(args) -> None:
    """one piece in this process (so that its peak RAM is its own): ``core.cost``'s rows, as a RESULT line"""
    import torch

    from core import cost

    torch.set_num_threads(args.threads)
    size, folder = args.size, REPO / "data" / f"synthetic-{args.size}"
    if args.piece != "prep" and not (folder / "meta.json").is_file():
        raise SystemExit(f"error: {folder} missing; run `python -m benchmarks.scale run --size {size} --piece prep`")
    if args.piece == "prep":
        from core.data.synthetic_large import LargeSpec

        res = cost.generation_cost(folder, LargeSpec(*SIZES[size], alpha=1.0, seed=0))  # interactions, items, users
        rows = [("generator", "prep_sec", res["seconds"], {"fingerprint": res["fingerprint"]}),
                ("generator", "peak_ram_gb", res["peak_ram_gb"], {}),
                ("generator", "load_sec", res["load_seconds"], {"note": "SequenceData.load: memory-mapped, validated"}),
                ("generator", "fitted_alpha", res["fitted_alpha"],
                 {"note": "rank-frequency slope; parameter alpha = 1.0"})]
    elif args.piece == "train":
        res = cost.sampled_training_cost(folder, MODEL, TRAIN_BATCH, TRAIN_STEPS, NEGATIVES, SAMPLER)
        rows = [("sasrec-sampled", "train_seq_per_sec", res["rows_per_sec"], {
                    "steps": res["steps"], "batch_size": TRAIN_BATCH, "num_negatives": NEGATIVES,
                    "negative_sampler": SAMPLER, "train_loss": res["train_loss"], "train_seconds": res["epoch_seconds"],
                    "cpu_share": round(res["cpu_share"], 2),
                    "full_softmax_logits_gb": round(res["full_softmax_logits_gb"], 2)}),
                ("sasrec-sampled", "peak_ram_gb", res["peak_ram_gb"], {})]
    else:
        chunk = ITEM_CHUNK if args.piece == "eval" else 0  # 0: the whole catalog at once
        res = cost.untrained_ranking_cost(folder, MODEL, EVAL_USERS, EVAL_BATCH, chunk)
        name = "sasrec-chunked" if chunk else "sasrec-unchunked"
        rows = [(name, "eval_sec", res["seconds"], {
                    "users": res["users"], "items": res["items"], "item_chunk": chunk, "eval_batch": EVAL_BATCH,
                    "NDCG@10": res["metrics"].get("NDCG@10"), "cpu_share": round(res["cpu_share"], 2)}),
                (name, "eval_peak_ram_gb", res["peak_ram_gb"], {})]
    out = [{"model": m, "metric": k, "value": round(float(v), 4), **e} for m, k, v, e in rows]
    print("RESULT " + json.dumps(out), flush=True)


def run(args) -> None:
    """one size, the given pieces in turn, each in a fresh process"""
    size, threads = args.size, args.threads
    for piece in args.piece:
        cmd = [sys.executable, "-m", "benchmarks.scale", "_child", "--size", size, "--piece", piece,
               "--threads", str(threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        proc, wall = timed(subprocess.run, cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"error: piece {piece} --size {size} failed (exit {proc.returncode})")
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
        # the OS's view of the peak (max over this invocation's children so far), a check on VmHWM
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
        rows = [{"dataset": f"synthetic-{size}", **r, "device": machine(threads),
                 "command": f"python -m benchmarks.scale run --size {size} --piece {piece}",
                 "interactions": SIZES[size][0], "n_items": SIZES[size][1], "n_users": SIZES[size][2],
                 "piece_wall_sec": round(wall, 2), "rusage_maxrss_gb": round(child_peak, 4),
                 # the 2 cores are shared with other jobs: the load says how much of them this piece had
                 "load_avg_1m": round(os.getloadavg()[0], 2)} for r in json.loads(line[7:])]
        merge_rows(RESULTS_FILE, rows, key=("dataset", "model", "metric"),
                   order=lambda r: (SIZE_ORDER.get(r["dataset"], 9), r["model"], r["metric"]))
        for r in rows:
            print(f"{r['dataset']:16s} {r['model']:18s} {r['metric']:18s} {r['value']}")


SUMMARY = [  # (model, metric, label)
    ("generator", "prep_sec", "generation time (s)"),
    ("generator", "peak_ram_gb", "generation peak RAM (GB)"),
    ("generator", "load_sec", "load (mmap + validate) (s)"),
    ("generator", "fitted_alpha", "fitted popularity exponent (alpha 1.0)"),
    ("sasrec-sampled", "train_seq_per_sec", "SASRec sampled-softmax training (sequences/s)"),
    ("sasrec-sampled", "peak_ram_gb", "training peak RAM (GB)"),
    ("sasrec-chunked", "eval_sec", "full ranking, <=10k users, chunked (s)"),
    ("sasrec-chunked", "eval_peak_ram_gb", "full ranking peak RAM, chunked (GB)"),
    ("sasrec-unchunked", "eval_sec", "full ranking, unchunked (s)"),
    ("sasrec-unchunked", "eval_peak_ram_gb", "full ranking peak RAM, unchunked (GB)"),
]


def summarize(args=None) -> None:
    """scale.md (table, growth exponents) and scale.png (log-log)"""
    rows = load_rows(RESULTS_FILE)
    if not rows:
        raise SystemExit("error: no rows in benchmarks/results/scale.json; run some pieces first")
    sizes = [s for s in SIZES if f"synthetic-{s}" in {r["dataset"] for r in rows}]
    get = {(r["dataset"], r["model"], r["metric"]): r["value"] for r in rows}
    table, series = [], {}
    for model, metric, label in SUMMARY:
        vals = [get.get((f"synthetic-{s}", model, metric)) for s in sizes]
        if all(v is None for v in vals):
            continue
        pts = [(SIZES[s][0], v) for s, v in zip(sizes, vals) if v]
        slope = ""
        if len(pts) >= 2 and metric != "fitted_alpha":
            x, y = zip(*pts)
            slope = f"{(math.log(y[-1]) - math.log(y[0])) / (math.log(x[-1]) - math.log(x[0])):.2f}"
            series[label] = pts
        table.append([label, *("—" if v is None else f"{v:,.3g}" if v < 1000 else f"{v:,.0f}" for v in vals), slope])
    lines = ["# Scale benchmark (synthetic-large workloads)", "",
             "Written by `python -m benchmarks.scale summarize` from `scale.json`. "
             f"Machine: {rows[0]['device']}. Each piece runs in its own process; peak RAM is its VmHWM.", "",
             *md_table(["figure", *(f"{s} ({SIZES[s][0]:,} inter., {SIZES[s][1]:,} items)" for s in sizes),
                        "growth exponent"], table, sep=["---", *("---:" for _ in sizes), "---:"])]
    loads = [r["load_avg_1m"] for r in rows if "load_avg_1m" in r]
    shares = [f"{r['dataset'].split('-')[1]} {r['model']} {r['cpu_share']}" for r in rows if "cpu_share" in r]
    if loads:
        lines += ["", f"The 2 cores were shared with other jobs: 1-minute load average {min(loads):.1f}-{max(loads):.1f} "
                  "at the end of the pieces, so the times are those of a fraction of the machine "
                  "(`cpu_share` in scale.json: CPU seconds per wall second of the timed part, 2.0 = both cores).",
                  *(["", "cpu_share: " + "; ".join(shares) + "."] if shares else [])]
    lines += ["", "Growth exponent: slope of log(figure) against log(interactions) between the smallest and the "
              "largest size measured (1 = linear). Catalog and users grow with the interactions (10 : 1 : 0.5).",
              "", "Settings: " + f"SASRec {MODEL}, batch {TRAIN_BATCH}, {TRAIN_STEPS} batches timed through "
              f"core.train.fit, {NEGATIVES} {SAMPLER} negatives (log-Q corrected); evaluation of "
              f"min({EVAL_USERS:,}, users) test users over every item, batch {EVAL_BATCH}, item chunk {ITEM_CHUNK:,} "
              "(an untrained model: the cost does not depend on the weights).", "", "Commands:", ""]
    write_md(RESULTS / "scale.md", lines + sorted({f"    {r['command']}" for r in rows}))
    plot("scale.png", {"Scale on 2 CPU cores (log-log)": [(label, *zip(*pts)) for label, pts in series.items()]},
         "interactions (items = 10%, users = 5%)", "value (units in legend)", size=(8, 5.5), log=True, marker="o")


def main(argv=None) -> None:
    size = opt("--size", choices=list(SIZES), required=True)
    threads = opt("--threads", type=int, default=2, help="torch threads (the machine has 2 cores)")
    piece = lambda action: opt("--piece", choices=PIECES, required=True, action=action)  # noqa: E731
    cli(__doc__.splitlines()[0], {"run": (run, [size, piece("append"), threads]),
                                  "_child": (child, [size, piece("store"), threads]),
                                  "summarize": (summarize, [])}, argv)


if __name__ == "__main__":
    main()
