"""Baseline vs distilled over seeds (``python -m benchmarks.distillation summarize`` drives it;
benchmarks/README.md, "Profile distillation"): each variant's gain over the same model without
distillation, the paired test over users and the training-time ratio, on the seeds both ran.

- ``run_dirs``: the run folder of every model and seed; ``store_user_ranks``: their per-user test
  ranks kept in one JSON file, so the paired tests can be recomputed on a machine that no longer
  holds the run folders (``state_dict/`` is never committed);
- ``compare_with_base``: the derived result rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.store import atomic_write_json


def run_dirs(groups: dict) -> dict[tuple, dict[int, str]]:
    """(dataset, model) -> {seed: ``run_dir``} of the one-seed NDCG@10 rows in ``groups``
    ((dataset, model, protocol, metric) -> rows)."""
    return {(ds, model): {r["seeds"][0]: r["run_dir"] for r in rs}
            for (ds, model, _protocol, metric), rs in groups.items() if metric == "NDCG@10"}


def store_user_ranks(path: Path, root: Path, dirs) -> dict:
    """Copy ``test_ranks.npz`` of the run folders ``dirs`` (relative to ``root``; those still on
    disk) into the JSON file ``path`` ({run_dir: {"users", "ranks"}}), written only when something
    changed; returns its table."""
    table = json.loads(path.read_text()) if path.is_file() else {}
    fresh = {}
    for run_dir in dirs:
        if (npz := Path(root) / run_dir / "test_ranks.npz").is_file():
            z = np.load(npz)
            fresh[str(run_dir)] = {"users": z["users"].tolist(), "ranks": z["ranks"].tolist()}
    if any(table.get(k) != v for k, v in fresh.items()):
        table.update(fresh)
        atomic_write_json(path, table)
    return table


def compare_with_base(groups: dict, ranks: dict, previous: list[dict]) -> list[dict]:
    """Per dataset and variant (``<base>+...``, its base model run too): ``gain_pct_<metric>``
    (relative change of the mean over the shared seeds; std = that of the per-seed gains),
    ``paired_wilcoxon_p_NDCG@10`` (per-user NDCG@10 of the runs ``ranks`` holds, averaged over the
    shared seeds) and ``train_time_ratio_vs_base``. ``groups``: one-seed rows by (dataset, model,
    protocol, metric); ``previous``: the rows of an earlier summary, whose paired test of a variant
    is kept when it covered more seeds (runs from before per-user ranks were stored)."""
    from core.metrics import ndcg_by_id, paired_over_seeds, ratio_over_seeds

    dirs, out = run_dirs(groups), []
    previous = {(r["dataset"], r["model"]): r for r in previous if r["metric"] == "paired_wilcoxon_p_NDCG@10"}
    ndcg = {d: ndcg_by_id(t["users"], t["ranks"]) for d, t in ranks.items()}  # {user: NDCG@10}
    by_seed = lambda rows: {r["seeds"][0]: r["value"] for r in rows}  # noqa: E731
    for ds, model in sorted(dirs):
        base = model.split("+")[0]
        if base == model or (ds, base) not in dirs:
            continue
        # a variant run on fewer seeds is not compared with the baseline's mean over others
        ratios = {metric: ratio_over_seeds(*(by_seed(groups.get((ds, m, "full", metric), [])) for m in (base, model)))
                  for metric in ("NDCG@10", "Recall@10", "HR@10", "train_seconds")}
        time_ratio = ratios.pop("train_seconds")
        test = paired_over_seeds(*({s: ndcg.get(d) for s, d in dirs[(ds, m)].items()} for m in (base, model)))
        # derived rows carry the devices of the runs they compare, not of the machine that summarizes
        device = "; ".join(sorted({r["device"] for r in groups[(ds, model, "full", "NDCG@10")]}))

        def row(metric, value, std=0.0, seeds=None, **extra):
            return {"dataset": ds, "model": model, "protocol": "full", "metric": metric, "value": value, "std": std,
                    "seeds": seeds or [], "device": device, "command": "summarize", **extra}

        old = previous.get((ds, model))
        if old and len(old["seeds"]) > len(test.get("seeds", [])):
            out.append(old)
            test = {}
        for metric, ratio in ratios.items():
            if ratio:
                per_seed = [100 * (x - 1) for x in ratio[2]]
                out.append(row(f"gain_pct_{metric}", 100 * (ratio[0] - 1), float(np.std(per_seed)), ratio[1],
                               per_seed=per_seed))
        if test:
            out.append(row("paired_wilcoxon_p_NDCG@10", test["wilcoxon_p"], seeds=test["seeds"], users=test["users"],
                           mean_diff=test["mean_diff"], t_p=test["t_p"]))
        if time_ratio:
            out.append(row("train_time_ratio_vs_base", float(time_ratio[0]), seeds=time_ratio[1]))
    return out
