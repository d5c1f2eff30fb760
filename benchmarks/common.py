"""Rows, merging, aggregation over seeds, paired tests and plotting shared by the benchmarks."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / ".work"


def machine() -> str:
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    return f"cpu:{platform.machine()} {os.cpu_count()} cores, {threads} torch threads"


def load_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def merge_rows(path: Path, new_rows: list[dict], key=("dataset", "model", "protocol", "metric", "seeds")) -> None:
    """Replace rows with the same key, keep the rest; atomic write."""
    from core.store import atomic_write_json

    ident = lambda r: tuple(json.dumps(r.get(k), sort_keys=True) for k in key)  # noqa: E731
    fresh = {ident(r) for r in new_rows}
    atomic_write_json(path, [r for r in load_rows(path) if ident(r) not in fresh] + new_rows)


def row(dataset, model, protocol, metric, value, std=0.0, seeds=None, command="", **extra) -> dict:
    return {"dataset": dataset, "model": model, "protocol": protocol, "metric": metric, "value": value, "std": std,
            "seeds": seeds or [], "device": machine(), "command": command, **extra}


def generic_command(command: str, seed: int) -> str:
    """A run's command with its seed written as ``<N>`` (in ``seed=``, ``-seed`` and ``/seed``)."""
    for a, b in ((f"seed={seed}", "seed=<N>"), (f"-seed{seed}", "-seed<N>"), (f"/seed{seed}", "/seed<N>")):
        command = command.replace(a, b)
    return command


def aggregate(runs: list[dict], skip: tuple = ("valid_curve",)) -> tuple[dict, list[dict]]:
    """Per-seed rows -> (groups by dataset/model/protocol/metric, rows of mean and sample std
    over the seeds). Rows without a value and metrics in ``skip`` are left out."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r["metric"] not in skip and r["value"] is not None:
            groups.setdefault((r["dataset"], r["model"], r["protocol"], r["metric"]), []).append(r)
    out = []
    for (dataset, model, protocol, metric), rs in sorted(groups.items()):
        values = np.array([r["value"] for r in rs], dtype=float)
        extra = {"unit": rs[0]["unit"]} if "unit" in rs[0] else {}
        out.append(row(dataset, model, protocol, metric, float(values.mean()),
                       float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                       sorted(s for r in rs for s in r["seeds"]), generic_command(rs[0]["command"], rs[0]["seeds"][0]),
                       **extra) | {"device": rs[0]["device"]})
    return groups, out


def ndcg_by_id(ids, ranks, k: int = 10) -> dict:
    """{id: NDCG@k} from 0-based ranks of one target each (core.metrics does the maths)."""
    from core.metrics import rank_metrics

    return dict(zip(np.asarray(ids).tolist(), rank_metrics(np.asarray(ranks), [k])[f"NDCG@{k}"].tolist()))


def seed_averaged_paired(base_runs: list[dict], other_runs: list[dict]) -> dict:
    """Paired comparison of two models, one {id: value} per seed and model: over the ids every
    run scored, each id's value averaged over the seeds, then Wilcoxon signed-rank and paired t
    (``other`` minus ``base``)."""
    from scipy import stats

    ids = sorted(set.intersection(*(set(r) for r in base_runs + other_runs)))
    x = np.mean([[r[i] for i in ids] for r in base_runs], axis=0)
    y = np.mean([[r[i] for i in ids] for r in other_runs], axis=0)
    diff = y - x
    return {"users": len(ids), "mean_diff": float(diff.mean()),
            "t_p": float(stats.ttest_rel(y, x).pvalue) if diff.any() else 1.0,
            "wilcoxon_p": float(stats.wilcoxon(y, x, zero_method="wilcox").pvalue) if np.count_nonzero(diff) else 1.0}


def run_measured(argv: list[str], env: dict | None = None) -> float:
    """Run ``argv`` from the repository root and return the child's own peak RSS in MB."""
    proc = subprocess.Popen(argv, cwd=REPO, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return usage.ru_maxrss / 1024  # Linux: KiB


def rel(path: Path) -> str:
    try:
        return os.path.relpath(path, REPO)
    except ValueError:
        return str(path)


def pyplot(what: str):
    """matplotlib.pyplot on the file-only Agg backend, or None (with a hint) when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib not installed: skipping {what} (pip install -r benchmarks/requirements.txt)")
        return None
    return plt
