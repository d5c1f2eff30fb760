"""What the core's own paths cost on this machine (the benchmarks' speed and memory pieces).

- ``peak_rss_gb``: this process's resident high-water mark (VmHWM, memory-mapped pages it
  touched included); ``run_measured``: a command in a child process and the child's own peak;
- ``fit_throughput``: rows per second of one epoch of ``core.train.fit``, capped at a number of
  batches (no validation, no checkpoint);
- ``full_ranking_cost``: wall seconds (and CPU share) of building an ``Evaluator`` and one full
  ranking of its users;
- ``ranking_vs_limit``: an evaluator's full ranking against its arithmetic limit, one users x
  items score product plus one pass over the scores, on the same shapes and batches.

CPU share = CPU seconds of this process per wall second (2.0: both cores all the time), the
share of a shared machine the measured call had. Importing this module loads the standard
library only, so a process that measures its own peak RAM holds only what it measures.
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path


def peak_rss_gb() -> float:
    """VmHWM of this process in GB (falls back to ru_maxrss, KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def run_measured(argv: list[str], cwd: str | Path | None = None, env: dict | None = None) -> float:
    """Run ``argv`` (in ``cwd``) and return the child's own peak RSS in MB; a failure raises
    ``subprocess.CalledProcessError``."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return usage.ru_maxrss / 1024  # Linux: KiB


def fit_throughput(model, train, batch_size: int, steps: int, seed: int = 0) -> dict:
    """One epoch of ``core.train.fit`` of ``model`` on the rows ``train`` on the CPU, capped at
    ``steps`` batches of ``batch_size`` (no validation, no checkpoint): ``steps`` and ``rows``
    trained, ``rows_per_sec`` over the epoch time fit logs, that ``epoch_seconds``, the epoch's
    ``train_loss`` and the ``cpu_share`` of the whole call."""
    import torch

    from core.train import TrainConfig, fit

    cfg = TrainConfig(epochs=1, batch_size=batch_size, max_steps_per_epoch=steps, patience=0, save_checkpoints=False)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fit(model, train, lambda m: {"NDCG@10": 0.0}, cfg, Path(tmp), device=torch.device("cpu"), seed=seed,
            checkpoint_meta={"kind": model.kind, "model_args": model.model_args, "config": {}}, log=lambda *a: None)
        epoch = json.loads((Path(tmp) / "metrics.jsonl").read_text().splitlines()[-1])
    cpu_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    done = min(steps, math.ceil(len(train) / batch_size))
    rows = min(len(train), done * batch_size)
    return {"steps": done, "rows": rows, "rows_per_sec": rows / epoch["epoch_seconds"],
            "epoch_seconds": epoch["epoch_seconds"], "train_loss": epoch["train_loss"], "cpu_share": cpu_share}


def full_ranking_cost(split, which: str, width: int, score_fn, **evaluator_args) -> dict:
    """``Evaluator(split, which, width, **evaluator_args)`` built and run once on ``score_fn``:
    its ``seconds`` (construction included), ``cpu_share``, ``users`` and ``metrics``."""
    from core.evaluation import Evaluator

    t, cpu0 = time.perf_counter(), time.process_time()
    ev = Evaluator(split, which, width, **evaluator_args)
    metrics = ev.run(score_fn)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "cpu_share": (time.process_time() - cpu0) / seconds, "users": len(ev), "metrics": metrics}


def ranking_vs_limit(ev, score_fn, item_weights, repeats: int = 3) -> dict:
    """Best of ``repeats`` wall seconds of ``ev.run(score_fn)`` (``seconds``) and of its arithmetic
    limit (``limit_seconds``), interleaved: random user vectors times ``item_weights`` ([padding
    + items, dim]) in the evaluator's own scoring batches (so the limit gets the same memory
    reuse), each batch's scores compared with a target's score and counted. Also the
    ``users``, ``items`` (rows of ``item_weights``), ``dim`` and ``batch`` of the product."""
    import torch

    users, step = len(ev), ev.score_users
    w = item_weights.detach().clone()
    h, targets = torch.randn(users, w.shape[1]), torch.randint(1, w.shape[0], (users,))

    @torch.no_grad()
    def limit() -> None:
        for start in range(0, users, step):
            scores = h[start:start + step] @ w.T
            t = scores.gather(1, targets[start:start + step].view(-1, 1))
            (scores >= t).sum(1, dtype=torch.int32)

    def seconds(fn, *args) -> float:
        t0 = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t0

    times = [(seconds(ev.run, score_fn), seconds(limit)) for _ in range(repeats)]
    ours, lim = (min(t) for t in zip(*times))
    return {"seconds": ours, "limit_seconds": lim, "users": users, "items": w.shape[0], "dim": w.shape[1], "batch": step}
