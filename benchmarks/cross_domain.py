"""Cross-domain transfer for cold-start users (issue 8): transfer vs baseline vs PTUPCDR-style bridge.

Pieces (``run --dataset D --seed N``, ``summarize``: benchmarks/README.md, "Cross-domain
transfer"). A ``run`` calls ``python -m cross_domain`` stage by stage (``train-source``,
``train-target-baseline``, ``train-target-transfer`` with ``transfer.bridge`` mlp and ptupcdr,
``eval-compare``) under ``run_name=bench-seed<N>``, reusing a stage whose ``results.json``
exists (``--retrain``: train it again), and merges its rows into ``cross_domain_runs.json``;
``summarize`` adds a Wilcoxon test over the users' NDCG@10 averaged across seeds when the runs'
``test_ranks.npz`` are still on disk.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, aggregate, load_rows, machine, merge_rows, ndcg_by_id, row, seed_averaged_paired

RUNS_FILE = RESULTS / "cross_domain_runs.json"
DATASETS = {  # benchmark name -> (config, row label, folder under state_dict/cross_domain, source, target)
    "synthetic": ("configs/cross_domain/synthetic.yaml", "synthetic", "synthetic", "B", "A"),
    "food": ("configs/cross_domain/food.yaml", "Food-Kitchen/Food", "food-kitchen", "kitchen", "food"),
    "kitchen": ("configs/cross_domain/kitchen.yaml", "Food-Kitchen/Kitchen", "food-kitchen", "food", "kitchen"),
}
KINDS = ("baseline", "transfer", "ptupcdr")
METRICS = ("NDCG@10", "HR@10", "MRR", "NDCG@20", "HR@20")
SUBSETS = ("all", "cold", "warm", "cold-none")
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
    config, label, _, source, target = DATASETS[args.dataset]
    over = ",".join(x for x in (f"seed={args.seed},run_name=bench-seed{args.seed},overwrite=true", args.override) if x)
    base = ["--config", config, "--source", source, "--target", target]
    stages = {  # stage -> its CLI subcommand and extra override
        "source": ("train-source", ""),
        "baseline": ("train-target-baseline", ""),
        "transfer": ("train-target-transfer", ",transfer.bridge=mlp"),
        "ptupcdr": ("train-target-transfer", ",transfer.bridge=ptupcdr"),
    }
    home = run_dir(args.dataset, args.seed)
    commands = {}
    for stage, (sub, extra) in stages.items():
        flags = {"train-source": ["--config", config, "--source", source],
                 "train-target-baseline": ["--config", config, "--target", target]}.get(sub, base)
        argv = [sys.executable, "-m", "cross_domain", sub, *flags, "--override", over + extra]
        commands[stage] = "python " + " ".join(argv[1:-1]) + f' "{over + extra}"'
        if args.retrain or not (home / stage_folder(args.dataset, stage) / "results.json").is_file():
            print(f"== {commands[stage]}", flush=True)
            subprocess.run(argv, cwd=REPO, check=True)
    compare_cmd = f"python -m cross_domain eval-compare {' '.join(base)} --override \"{over}\""
    print(f"== {compare_cmd}", flush=True)
    subprocess.run([sys.executable, "-m", "cross_domain", "eval-compare", *base, "--override", over], cwd=REPO, check=True)

    comp = json.loads((home / stage_folder(args.dataset, "compare") / "compare.json").read_text())
    rows = []
    for kind in KINDS:
        stage = json.loads((home / stage_folder(args.dataset, kind) / "results.json").read_text())
        extra = {"best_epoch": stage["best_epoch"], "epochs_run": stage["epochs_run"],
                 "train_command": commands[kind], "run_dir": str((home / stage_folder(args.dataset, kind)).relative_to(REPO))}
        for proto, by_subset in comp["test"][kind].items():
            for subset in ("all", "cold", "warm"):
                users = comp["users"][subset]
                for metric in METRICS:
                    if metric in by_subset.get(subset, {}):
                        rows.append(row(label, kind, protocol_label(proto), metric, by_subset[subset][metric],
                                        seeds=[args.seed], command=compare_cmd, subset=subset, users=users, **extra))
                test = comp["paired_vs_baseline"].get(kind, {}).get(proto, {}).get(subset)
                if test:
                    rows.append(row(label, kind, protocol_label(proto), "p_wilcoxon_vs_baseline", test["p_wilcoxon"],
                                    seeds=[args.seed], command=compare_cmd, subset=subset, users=users,
                                    mean_ndcg10_diff=test["mean_diff"], better=test["better"], worse=test["worse"]))
        rows.append(row(label, kind, "full", "sec_per_epoch", stage["sec_per_epoch"], seeds=[args.seed],
                        command=commands[kind], subset="all", unit="s", **extra))
    src = json.loads((home / stage_folder(args.dataset, "source") / "results.json").read_text())
    # the source stage serves both transfer models; its time is filed under the MLP transfer row
    rows.append(row(label, "transfer", "full", "source_sec_per_epoch", src["sec_per_epoch"], seeds=[args.seed],
                    command=commands["source"], subset="all", unit="s", best_epoch=src["best_epoch"],
                    epochs_run=src["epochs_run"]))
    for proto, by_subset in comp["test"]["popularity"].items():
        for subset in ("all", "cold", "warm"):
            if "NDCG@10" in by_subset.get(subset, {}):
                rows.append(row(label, "popularity", protocol_label(proto), "NDCG@10", by_subset[subset]["NDCG@10"],
                                seeds=[args.seed], command=compare_cmd, subset=subset, users=comp["users"][subset]))
    rows.append(row(label, "protocol", "full", "users", None, seeds=[args.seed], command=compare_cmd, subset="all",
                    counts=comp["protocol"]))
    rows += no_history_rows(args, home, label, compare_cmd)
    merge_rows(RUNS_FILE, rows, key=KEY)
    t = comp["test"]
    print(f"{label} seed {args.seed}, full NDCG@10 (cold / warm): " + "; ".join(
        f"{k} {t[k]['full']['cold']['NDCG@10']:.4f} / {t[k]['full']['warm']['NDCG@10']:.4f}" for k in KINDS))


def kept_none(cfg) -> np.ndarray:
    """[n_users + 1] bool by 1-based user index: cut by the cold-start protocol of ``cfg`` to no
    target item at all."""
    from cross_domain.data import cold_protocol, load_domains

    return cold_protocol(load_domains(cfg.data).target, cfg.cold.k, cfg.cold.fraction, cfg.cold.seed).kept == 0


_KEPT_NONE: dict[str, np.ndarray] = {}


def _kept_none(label: str) -> np.ndarray:
    """``kept_none`` of a row label's config (cached; the cold split does not depend on the seed)."""
    if label not in _KEPT_NONE:
        from core.config import load_config
        from cross_domain.config import CrossDomainConfig

        name = next(k for k, v in DATASETS.items() if v[1] == label)
        _KEPT_NONE[label] = kept_none(load_config(CrossDomainConfig, str(REPO / DATASETS[name][0]), ""))
    return _KEPT_NONE[label]


def no_history_rows(args, home: Path, label: str, command: str) -> list[dict]:
    """Rows of subset ``cold-none``: the cold users cut to no target history at all, where only
    the source can say anything about the user (a finer cut of ``cold``, from the runs'
    ``test_ranks.npz`` and the protocol's ``kept``)."""
    from core.config import load_config
    from cross_domain.config import CrossDomainConfig
    from cross_domain.evaluate import paired_test, subset_metrics

    config, _, _, source, target = DATASETS[args.dataset]
    over = ",".join(x for x in (args.override, f"data.source={source},data.target={target}") if x)
    cfg = load_config(CrossDomainConfig, str(REPO / config), over)
    ranks = {k: np.load(home / stage_folder(args.dataset, k) / "test_ranks.npz") for k in KINDS}
    mask = kept_none(cfg)[ranks["baseline"]["users"]]
    if not mask.any():
        return []
    rows = []
    for kind, z in ranks.items():
        for proto_name in (k for k in z.files if k not in ("users", "cold")):
            m = subset_metrics(z[proto_name], mask, cfg.eval.ks)
            for metric in METRICS:
                if metric in m:
                    rows.append(row(label, kind, protocol_label(proto_name), metric, m[metric], seeds=[args.seed],
                                    command=command, subset="cold-none", users=int(mask.sum())))
            if kind != "baseline":
                t = paired_test(ranks["baseline"][proto_name][mask], z[proto_name][mask])
                rows.append(row(label, kind, protocol_label(proto_name), "p_wilcoxon_vs_baseline", t["p_wilcoxon"],
                                seeds=[args.seed], command=command, subset="cold-none", users=int(mask.sum()),
                                mean_ndcg10_diff=t["mean_diff"], better=t["better"], worse=t["worse"]))
    return rows


# --------------------------------------------------------------------------- summary
def seed_averaged_test(runs: list[dict], label: str, kind: str, proto: str, subset: str) -> dict | None:
    """Wilcoxon over users of NDCG@10 averaged across seeds (kind vs baseline), from the runs'
    ``test_ranks.npz``; None when a seed's ranks are no longer on disk."""
    dirs = {}
    for r in runs:
        if r["dataset"] == label and r["metric"] == "sec_per_epoch" and r["model"] in (kind, "baseline"):
            dirs.setdefault(r["model"], {})[r["seeds"][0]] = REPO / r["run_dir"] / "test_ranks.npz"
    seeds = sorted(set(dirs.get(kind, {})) & set(dirs.get("baseline", {})))
    if len(seeds) < 2 or not all(dirs[m][s].is_file() for m in (kind, "baseline") for s in seeds):
        return None
    key = {"sampled-100": "sampled-99"}.get(proto, proto)

    def per_user(model: str, seed: int) -> dict:
        z = np.load(dirs[model][seed])
        mask = _kept_none(label)[z["users"]] if subset == "cold-none" else \
            {"all": np.ones(len(z["users"]), bool), "cold": z["cold"], "warm": ~z["cold"]}[subset]
        return ndcg_by_id(z["users"][mask], z[key][mask])

    t = seed_averaged_paired([per_user("baseline", s) for s in seeds], [per_user(kind, s) for s in seeds])
    return {"p": t["wilcoxon_p"], "mean_diff": t["mean_diff"], "users": t["users"], "seeds": seeds}


def cmd_summarize(args) -> None:
    from core.store import atomic_write_json, atomic_write_text

    runs = load_rows(RUNS_FILE)
    value_runs = [r for r in runs if r["model"] in KINDS and r["metric"] != "p_wilcoxon_vs_baseline"]
    out = []
    for subset in SUBSETS:
        _, agg = aggregate([r for r in value_runs if r.get("subset") == subset], skip=())
        out += [r | {"subset": subset} for r in agg]
    tests = {}
    for r in runs:
        if r["metric"] == "p_wilcoxon_vs_baseline":
            tests.setdefault((r["dataset"], r["model"], r["protocol"], r["subset"]), []).append(r)
    for (label, kind, proto, subset), rs in sorted(tests.items()):
        pooled = seed_averaged_test(runs, label, kind, proto, subset)
        out.append(row(label, kind, proto, "p_wilcoxon_vs_baseline", pooled["p"] if pooled else max(r["value"] for r in rs),
                       seeds=sorted(s for r in rs for s in r["seeds"]), command=rs[0]["command"], subset=subset,
                       test="seed-averaged NDCG@10 per user" if pooled else "largest per-seed p",
                       per_seed_p=[r["value"] for r in sorted(rs, key=lambda r: r["seeds"])],
                       mean_ndcg10_diff=pooled["mean_diff"] if pooled else float(np.mean([r["mean_ndcg10_diff"] for r in rs]))))
    atomic_write_json(RESULTS / "cross_domain.json", out)

    by = {(r["dataset"], r["model"], r["protocol"], r["subset"], r["metric"]): r for r in out}
    pop = {}
    for r in runs:
        if r["model"] == "popularity":
            pop.setdefault((r["dataset"], r["protocol"], r["subset"]), []).append(r["value"])
    fmt = lambda r: f"{r['value']:.4f} ± {r['std']:.4f}" if r else ""  # noqa: E731
    lines = ["# Cross-domain transfer for cold-start users (test, NDCG@10, mean ± std over seeds)", "",
             "`vs base`: relative NDCG@10 change of the model over the target-only baseline; p: Wilcoxon signed-rank "
             "over users (per-user NDCG@10 averaged across seeds, or the largest per-seed p when the ranks are gone).", "",
             "| dataset | protocol | users | popularity | baseline | transfer | ptupcdr | transfer vs base | ptupcdr vs base | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    labels = [v[1] for v in DATASETS.values() if any(r["dataset"] == v[1] for r in out)]
    for label in labels:
        for proto in ("full", "sampled-100"):
            for subset in SUBSETS:
                b = by.get((label, "baseline", proto, subset, "NDCG@10"))
                if not b:
                    continue
                cells = []
                for kind in ("transfer", "ptupcdr"):
                    m, p = by.get((label, kind, proto, subset, "NDCG@10")), by.get((label, kind, proto, subset,
                                                                                        "p_wilcoxon_vs_baseline"))
                    cells.append(f"{100 * (m['value'] / b['value'] - 1):+.1f}% (p={p['value']:.2g})" if m and p and b["value"]
                                 else "")
                pv = pop.get((label, proto, subset))
                users = next((r.get("users") for r in runs if r["dataset"] == label and r.get("subset") == subset
                              and r["protocol"] == proto and r["model"] == "baseline" and r["metric"] == "NDCG@10"), "")
                lines.append(f"| {label} | {proto} | {subset} {users} | {np.mean(pv):.4f} | " if pv else
                             f"| {label} | {proto} | {subset} {users} | | ")
                lines[-1] += " | ".join([fmt(b), fmt(by.get((label, "transfer", proto, subset, "NDCG@10"))),
                                         fmt(by.get((label, "ptupcdr", proto, subset, "NDCG@10"))), *cells,
                                         str(len(b["seeds"]))]) + " |"
    lines += ["", "Seconds per training epoch (mean over seeds; the source stage is shared by both transfer models):", "",
              "| dataset | source | baseline | transfer | ptupcdr |", "|---|---|---|---|---|"]
    for label in labels:
        sec = lambda kind, metric="sec_per_epoch": by.get((label, kind, "full", "all", metric))  # noqa: E731
        cell = lambda r: f"{r['value']:.2f}" if r else ""  # noqa: E731
        lines.append(f"| {label} | {cell(sec('transfer', 'source_sec_per_epoch'))} | {cell(sec('baseline'))} | "
                     f"{cell(sec('transfer'))} | {cell(sec('ptupcdr'))} |")
    verdicts = [_verdict(label, by) for label in labels if label.startswith("Food-Kitchen")]
    lines += ["", "Goal: transfer beats the target-only baseline on cold users by a clear, significant margin on "
              "Food-Kitchen, and does not hurt warm users.", *[f"- {v}" for v in verdicts], "",
              f"Device: {'; '.join(sorted({r['device'] for r in runs})) or machine()}. Commands: the `command` and "
              "`train_command` fields of cross_domain_runs.json."]
    atomic_write_text(RESULTS / "cross_domain.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one dataset and seed: source, baseline, transfer, ptupcdr, compare")
    r.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--override", default="", help="extra config overrides for every stage")
    r.add_argument("--retrain", action="store_true", help="train stages again even when their results exist")
    sub.add_parser("summarize")
    args = p.parse_args()
    {"run": cmd_run, "summarize": cmd_summarize}[args.cmd](args)


if __name__ == "__main__":
    main()
