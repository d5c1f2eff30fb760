"""What the core's own paths cost on this machine (the benchmarks' speed and memory pieces).

- ``peak_rss_gb``: this process's resident high-water mark (VmHWM, memory-mapped pages it
  touched included); ``run_measured``: a command in a child process and the child's own peak;
  ``training_run_cost``: that and the epoch and validation seconds the command logs;
  ``allocator_env``: the environment that runs such a child on glibc's default allocator or on
  the lean-memory recipe (``LEAN_MEMORY_ENV``), whatever its parent had;
- ``fit_throughput``: rows per second of one epoch of ``core.train.fit``, capped at a number of
  batches (no validation, no checkpoint);
- ``full_ranking_cost``: wall seconds (and CPU share) of building an ``Evaluator`` and one full
  ranking of its users;
- ``ranking_vs_limit``: an evaluator's full ranking against its arithmetic limit, one users x
  items score product plus one pass over the scores, on the same shapes and batches
  (``seqrec_ranking_vs_limit``: that of a sequential model's test evaluation);
- ``generation_cost``, ``sampled_training_cost``, ``untrained_ranking_cost``: the catalog-scale
  workloads (``benchmarks/scale.py``) on a generated ``core.data.synthetic_large`` folder.

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

# the README's lean-memory recipe: blocks over 1 MB from mmap (freed back to the OS, so the heap
# cannot fragment), backed by transparent huge pages so that faulting them in stays cheap
LEAN_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


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


def allocator_env(lean: bool = False, **extra: str) -> dict:
    """This process's environment without glibc's allocator settings (``MALLOC_*``, ``GLIBC_TUNABLES``),
    with ``LEAN_MEMORY_ENV`` if ``lean``, plus ``extra``: a measured child's peak then reflects the
    allocator asked for, not whatever the parent had."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    return {**env, **extra, **(LEAN_MEMORY_ENV if lean else {})}


def training_run_cost(argv: list[str], metrics: str | Path, cwd: str | Path | None = None, env: dict | None = None) -> dict:
    """Run a training command that validates after every epoch (``argv``, ``run_measured``) and
    read the ``metrics.jsonl`` it writes (``metrics``): ``sec_per_epoch``, the mean of the
    ``epoch_seconds`` it logs; ``sec_per_full_eval``, its first validation (``seconds`` minus
    ``epoch_seconds`` of the first epoch); ``peak_rss_mb``, the child's own peak."""
    peak = run_measured(argv, cwd, env)
    epochs = [r for r in map(json.loads, filter(str.strip, Path(metrics).read_text().splitlines())) if "epoch_seconds" in r]
    return {"sec_per_epoch": sum(r["epoch_seconds"] for r in epochs) / len(epochs),
            "sec_per_full_eval": epochs[0]["seconds"] - epochs[0]["epoch_seconds"], "peak_rss_mb": peak}


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


def seqrec_ranking_vs_limit(cfg, data_dir: str | Path, repeats: int = 3) -> dict:
    """``ranking_vs_limit`` of the full-ranking test evaluation (leave-one-out, no sampled
    negatives, batches of ``cfg.eval.batch_size`` users) of ``cfg.model``, untrained, on the
    prepared data in ``data_dir`` (a ``core.seqrec`` config)."""
    from core.data.sequences import SequenceData
    from core.data.splits import leave_one_out
    from core.evaluation import Evaluator
    from core.seqrec import make_model, model_score_fn

    data = SequenceData.load(data_dir)
    model = make_model(cfg.model, data.n_items).eval()
    ev = Evaluator(leave_one_out(data), "test", cfg.model.maxlen, sampled=(), batch_size=cfg.eval.batch_size)
    return ranking_vs_limit(ev, model_score_fn(model), model.item_weights(), repeats)


# --------------------------------------------------------------------------- catalog-scale workloads
def generation_cost(out: str | Path, spec) -> dict:
    """``generate_large(out, spec)``: its ``seconds`` and ``fingerprint`` and this process's
    ``peak_ram_gb`` after it; then the ``load_seconds`` of ``SequenceData.load`` (memory-mapped,
    validated) and the ``fitted_alpha`` (``fit_popularity_exponent``) of the loaded items."""
    from core.data.synthetic_large import fit_popularity_exponent, generate_large

    t = time.perf_counter()
    meta = generate_large(out, spec)
    seconds, ram = time.perf_counter() - t, peak_rss_gb()  # before the check below reads the items
    from core.data.sequences import SequenceData

    t = time.perf_counter()
    data = SequenceData.load(out)
    load_seconds = time.perf_counter() - t
    return {"seconds": seconds, "fingerprint": meta["fingerprint"], "peak_ram_gb": ram, "load_seconds": load_seconds,
            "fitted_alpha": fit_popularity_exponent(data.items, data.n_items)}


def _leave_one_out(folder: str | Path) -> tuple:
    from core.data.sequences import SequenceData
    from core.data.splits import leave_one_out

    data = SequenceData.load(folder)
    return data, leave_one_out(data)


def sampled_training_cost(folder: str | Path, model_args: dict, batch_size: int, steps: int, negatives: int,
                          sampler: str) -> dict:
    """``fit_throughput`` of an SASRec (``model_args``, seed 0) trained with sampled softmax over
    ``negatives`` ``sampler`` negatives (item counts of the training part) on the leave-one-out
    training rows of the prepared data in ``folder`` (memory-mapped: rows gathered per batch);
    also this process's ``peak_ram_gb`` after it and the ``full_softmax_logits_gb`` that one batch's
    full-softmax logits (and their gradient) would take instead."""
    import torch

    from core.data.batches import CausalDataset
    from core.data.splits import item_popularity
    from core.models import build_model
    from core.models.sampled_softmax import full_softmax_bytes

    data, split = _leave_one_out(folder)
    torch.manual_seed(0)
    model = build_model("sasrec", n_items=data.n_items, loss="sampled_softmax", num_negatives=negatives,
                        negative_sampler=sampler, **model_args)
    model.set_item_counts(item_popularity(data, split.train_len))
    res = fit_throughput(model, CausalDataset(split, model_args["maxlen"]), batch_size, steps)
    return {**res, "peak_ram_gb": peak_rss_gb(),
            "full_softmax_logits_gb": full_softmax_bytes(batch_size, model_args["maxlen"], data.n_items) / 1e9}


def untrained_ranking_cost(folder: str | Path, model_args: dict, max_users: int, batch_size: int, item_chunk: int) -> dict:
    """``full_ranking_cost`` of the leave-one-out test users (at most ``max_users``) of the prepared
    data in ``folder`` under an untrained SASRec (``model_args``, seed 0: the cost does not depend
    on the weights), ``batch_size`` users at a time over chunks of ``item_chunk`` items (0: the
    whole catalog at once); also the catalog's ``items`` and this process's ``peak_ram_gb`` after it."""
    import torch

    from core.models import build_model
    from core.seqrec import model_score_fn

    data, split = _leave_one_out(folder)
    torch.manual_seed(0)
    model = build_model("sasrec", n_items=data.n_items, **model_args).eval()
    res = full_ranking_cost(split, "test", model_args["maxlen"], model_score_fn(model), sampled=(), max_users=max_users,
                            batch_size=batch_size, item_chunk=item_chunk)
    return {**res, "items": data.n_items, "peak_ram_gb": peak_rss_gb()}
