"""RecBole 1.2.1 side of the RecBole-vs-ours benchmark: time and score SASRec / BERT4Rec.

Runs in the venv of ``benchmarks/recbole_env.sh`` (command line: ``benchmarks.sequential.recbole_argv``), imports
nothing from this repository and times RecBole's own code, ``Config`` to ``trainer.evaluate``. RecBole facts (1.2.1):

- an epoch is one pass over the prefix-expanded samples (<i1..ik> -> i(k+1), history cut to MAX_ITEM_LIST_LENGTH,
  CE loss on each sample's last position): ``n_train_samples``, about sum(len - 3) after the split;
- leave-one-out: a user's last sample is test, the one before valid (2 samples: train + test; 1: train only);
- sequential full ranking masks only the padding item 0, NOT the user's history (``history_index=None``);
- ``TO`` order sorts by our timestamp, the position in the user's sequence: RecBole's order equals ours.
"""
from __future__ import annotations

import os

# RecBole's checkpoints pickle its Config; torch >= 2.6 refuses them with weights_only=True.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import argparse
import contextlib
import hashlib
import json
import platform
import resource
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

T_PROCESS_START = time.perf_counter()
# RecBole's Config special-cases these names (bundled raw ML-100K, properties/dataset/<name>.yaml): ours avoids them
RECBOLE_RESERVED_NAMES = {"ml-100k", "sample", "url", "kg_url"}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # Linux: KiB


def current_rss_mb() -> float:
    return round(int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder (data/<name>)")
    p.add_argument("--model", choices=["SASRec", "BERT4Rec"], required=True)
    for flag, kind, default in (("--hidden", int, 64), ("--layers", int, 2), ("--heads", int, 2), ("--inner", int, 256),
                                ("--maxlen", int, 50), ("--batch", int, 256), ("--lr", float, 0.001), ("--seed", int, 1)):
        p.add_argument(flag, type=kind, default=default)
    p.add_argument("--dropout", type=float, default=0.3, help="hidden and attention dropout")
    p.add_argument("--mode", choices=["speed", "budget"], required=True)
    p.add_argument("--max-batches", type=int, default=30, help="speed: time an epoch's first K batches, extrapolate")
    p.add_argument("--budget-s", type=float, default=0.0, help="budget: wall-clock seconds for train + valid; an epoch "
                   "is started while less has been spent, so the last one may cross it (as core/train.py)")
    p.add_argument("--out", required=True, help="result JSON")
    p.add_argument("--work-dir", required=True, help="scratch: atomic files, logs, checkpoints")
    args = p.parse_args(argv)
    if (args.mode == "budget" and args.budget_s <= 0) or (args.mode == "speed" and args.max_batches <= 0):
        p.error("speed mode needs --max-batches > 0, budget mode --budget-s > 0")
    return args


def load_prepared(dataset_dir: Path):
    with np.load(dataset_dir / "sequences.npz", allow_pickle=False) as z:
        return (*(np.asarray(z[k], dtype=np.int64) for k in ("offsets", "items")),
                json.loads((dataset_dir / "meta.json").read_text()))


def write_inter(inter_path: Path, offsets: np.ndarray, items: np.ndarray) -> dict:
    """The atomic file, timestamp = position in the user's sequence; rewritten only when the source arrays change."""
    digest = hashlib.sha256(offsets.tobytes() + items.tobytes()).hexdigest()[:16]
    stamp = inter_path.with_name(inter_path.name + ".source.json")
    lengths = np.diff(offsets)
    info = {"sha256_16": digest, "n_users": int(len(lengths)), "n_interactions": int(len(items)),
            "min_len": int(lengths.min()), "max_len": int(lengths.max())}
    with contextlib.suppress(OSError, ValueError):  # no stamp or an unreadable one: write the file again
        if inter_path.is_file() and json.loads(stamp.read_text()).get("sha256_16") == digest:
            return {**info, "written": False}
    inter_path.parent.mkdir(parents=True, exist_ok=True)
    users = np.repeat(np.arange(1, len(lengths) + 1, dtype=np.int64), lengths)
    pos = np.arange(len(items), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    tmp = inter_path.with_name(inter_path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        np.savetxt(f, np.stack([users, items, pos], axis=1), fmt="%d", delimiter="\t")
    os.replace(tmp, inter_path)
    stamp.write_text(json.dumps(info) + "\n")
    return {**info, "written": True}


def check_split(dataset, train_data, valid_data, test_data, offsets, items, maxlen) -> dict:
    """RecBole's splits against ours: valid/test users, targets, last history items, history lengths; train sizes."""
    lengths = np.diff(offsets)
    token = lambda field, ids: dataset.id2token(field, ids).astype(np.int64)  # noqa: E731  (RecBole id -> ours)
    out = {"ok": True}
    for part, data, back in (("valid", valid_data, 2), ("test", test_data, 1)):
        f = data._dataset.inter_feat
        u = token(dataset.uid_field, f[dataset.uid_field].numpy())
        tgt = token(dataset.iid_field, f[dataset.iid_field].numpy())
        hl = f[dataset.item_list_length_field].numpy().astype(np.int64)
        last = token(dataset.iid_field, f[dataset.item_id_list_field].numpy()[np.arange(len(hl)), hl - 1])
        good = (len(np.unique(u)) == len(u) == int((lengths >= back + 2).sum())
                and bool(np.all(tgt == items[offsets[u] - back])) and bool(np.all(last == items[offsets[u] - back - 1]))
                and bool(np.all(hl == np.minimum(lengths[u - 1] - back, maxlen))))
        out[part] = {"users": int(len(u)), "targets_and_histories_match": good}
        out["ok"] &= good
    u = token(dataset.uid_field, train_data._dataset.inter_feat[dataset.uid_field].numpy())
    per_user = np.bincount(u, minlength=len(lengths) + 1)[1:]
    n_aug = np.maximum(lengths - 1, 0)  # prefix-expanded samples per user
    good = bool(np.all(per_user == n_aug - np.minimum(2, np.maximum(n_aug - 1, 0))))
    out["train"] = {"samples": int(len(u)), "per_user_equals_len_minus_3": good}
    out["ok"] &= good
    return out


class BatchTap:
    """RecBole's train dataloader, timing each batch (its collate + the trainer's step); stops after ``max_batches``."""

    def __init__(self, loader, max_batches: int = 0):
        self._loader, self._max_batches, self.times = loader, max_batches, []

    def __len__(self):
        return min(len(self._loader), self._max_batches or len(self._loader))

    def __getattr__(self, name):  # shuffle, sampler, dataset, ... as RecBole expects
        return getattr(self._loader, name)

    def __iter__(self):
        self.times = []
        t = time.perf_counter()
        for i, batch in enumerate(self._loader):
            if self._max_batches and i >= self._max_batches:
                break
            yield batch
            now = time.perf_counter()
            self.times.append(now - t)
            t = now


def build_config_dict(args, work_dir: Path) -> dict:
    return {"data_path": str(work_dir), "checkpoint_dir": str(work_dir / "saved"), "use_gpu": False, "gpu_id": "",
            "worker": 0, "seed": args.seed, "reproducibility": True, "state": "INFO", "show_progress": False,
            "log_wandb": False, "save_dataset": False, "save_dataloaders": False,
            # atomic file, explicit: RecBole's bundled ml-100k.yaml (rating column, normalize_all) must change nothing
            "field_separator": "\t", "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "unload_col": None, "unused_col": None,
            "rm_dup_inter": None, "val_interval": None, "filter_inter_by_user_or_item": True,
            "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)", "normalize_all": False,
            "normalize_field": None, "benchmark_filename": None, "MAX_ITEM_LIST_LENGTH": args.maxlen,
            "hidden_size": args.hidden, "inner_size": args.inner, "n_layers": args.layers, "n_heads": args.heads,
            "hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout, "loss_type": "CE",
            "train_neg_sample_args": None, "learner": "adam", "learning_rate": args.lr, "weight_decay": 0.0,
            "train_batch_size": args.batch, "epochs": 10**6, "stopping_step": 10**6, "eval_step": 1,
            "clip_grad_norm": None, "shuffle": True, "enable_amp": False, "enable_scaler": False,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "repeatable": True,  # required by RecBole for sequential models
            "metrics": ["Hit", "NDCG", "MRR"], "topk": [5, 10, 20], "valid_metric": "NDCG@10",
            "valid_metric_bigger": True, "eval_batch_size": 2048, "metric_decimal_place": 6}


def main(argv=None) -> int:
    args = parse_args(argv)
    out_path, dataset_dir, work_dir = (Path(p).resolve() for p in (args.out, args.dataset_dir, args.work_dir))
    name = dataset_dir.name + ("-ours" if dataset_dir.name in RECBOLE_RESERVED_NAMES else "")
    result: dict = {"side": "recbole", "status": "running", "model": args.model, "dataset": name,
                    "dataset_dir": str(dataset_dir), "mode": args.mode, "args": vars(args),
                    "python": platform.python_version(), "host": platform.node()}
    try:
        run(args, result, out_path, dataset_dir, work_dir, name)
        result["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - the JSON must say what went wrong
        result.update(status="error", error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    result.update(peak_rss_mb=peak_rss_mb(), process_wall_s=round(time.perf_counter() - T_PROCESS_START, 3))
    write_json(out_path, result)
    return 0 if result["status"] == "ok" else 1


def run(args, result: dict, out_path: Path, dataset_dir: Path, work_dir: Path, name: str) -> None:
    offsets, items, meta = load_prepared(dataset_dir)
    result["source"] = {"fingerprint": meta.get("fingerprint"), "n_items_prepared": meta.get("n_items")}
    result["inter_file"] = str(work_dir / name / f"{name}.inter")
    result["inter"] = write_inter(work_dir / name / f"{name}.inter", offsets, items)
    del offsets, items  # not held while RecBole builds its own copy (peak RSS)
    # RecBole 1.2.1 warns about pandas' chained fillna and torch.cuda.amp.GradScaler on every run: harmless here
    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    if threads := int(os.environ.get("OMP_NUM_THREADS", "0") or 0):
        torch.set_num_threads(threads)
    result.update({"recbole_version": recbole.__version__, "torch_version": torch.__version__,
                   "numpy_version": np.__version__, "threads": torch.get_num_threads(),
                   "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS")})
    os.chdir(work_dir)  # RecBole writes ./log and ./log_tensorboard relative to the cwd
    sys.argv = sys.argv[:1]  # Config also parses --key=value from the command line
    t0 = time.perf_counter()
    config = Config(model=args.model, dataset=name, config_dict=build_config_dict(args, work_dir))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    if Path(config["data_path"]).resolve() != work_dir / name:
        raise RuntimeError(f"RecBole resolved data_path {config['data_path']!r}, expected {work_dir / name}")
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    result["data_prep_s"] = round(time.perf_counter() - t0, 3)
    result["split_check"] = check_split(dataset, train_data, valid_data, test_data,
                                        *load_prepared(dataset_dir)[:2], args.maxlen)
    if not result["split_check"]["ok"]:
        raise RuntimeError(f"RecBole's leave-one-out split differs from ours: {result['split_check']}")
    phase = {"after_data": current_rss_mb(), "peak_after_data": peak_rss_mb()}
    batches = len(train_data)
    result.update({"n_users": int(dataset.user_num - 1), "n_items": int(dataset.item_num - 1),
                   "n_interactions": result["inter"]["n_interactions"], "n_train_samples": len(train_data._dataset),
                   "n_valid_users": len(valid_data._dataset), "n_test_users": len(test_data._dataset),
                   "batches_per_epoch": batches, "train_batch_size": args.batch})
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.eval_collector.data_collect(train_data)  # as Trainer.fit does
    result["n_params"] = int(sum(p.numel() for p in model.parameters()))
    result["rss_mb_by_phase"] = {**phase, "after_model_trainer": current_rss_mb()}

    def timed_eval(loader, **kw):
        t = time.perf_counter()
        res = trainer.evaluate(loader, show_progress=False, **kw)
        return {k: float(v) for k, v in res.items()}, time.perf_counter() - t

    if args.mode == "speed":  # the first --max-batches batches of one epoch, the epoch extrapolated
        tap = BatchTap(train_data, args.max_batches)
        t = time.perf_counter()
        loss = trainer._train_epoch(tap, 0, show_progress=False)
        elapsed, bt = time.perf_counter() - t, tap.times
        steady = bt[1:] if len(bt) >= 2 else bt
        result.update({
            "timed_batches": len(bt), "timed_s": round(elapsed, 4), "first_batch_s": round(bt[0], 4),
            "sec_per_batch": round(float(np.mean(steady)), 5), "sec_per_batch_median": round(float(np.median(steady)), 5),
            "sec_per_epoch": round(float(np.mean(steady)) * batches, 3),
            "sec_per_epoch_method": f"extrapolated: mean of timed batches 2..{len(bt)} (first = warm-up, excluded) "
                                    f"x {batches} batches" if len(bt) >= 2 else f"extrapolated from 1 batch x {batches}",
            "train_loss_mean_timed": round(float(loss) / max(len(bt), 1), 5)})
        result["rss_mb_by_phase"].update(after_train=current_rss_mb(), peak_after_train=peak_rss_mb())
        valid_res, s = timed_eval(valid_data, load_best_model=False)
        result.update({"sec_per_full_eval": round(s, 3), "full_eval_s": [round(s, 3)],
                       "full_eval_users": len(valid_data._dataset),
                       "sec_per_full_eval_method": "trainer.evaluate(valid_data) = full ranking of all valid users, "
                                                   "incl. RecBole's metric computation", "valid_after_timing": valid_res})
        return
    # budget: epochs (each validated, the best checkpoint kept) while less than --budget-s has been spent
    tap, best_score, best_epoch, best_valid, history = BatchTap(train_data, 0), float("-inf"), -1, None, []
    t_start, epoch = time.perf_counter(), 0
    while time.perf_counter() - t_start < args.budget_s:
        t = time.perf_counter()
        loss = trainer._train_epoch(tap, epoch, show_progress=False)
        train_s, t = time.perf_counter() - t, time.perf_counter()
        score, valid_res = trainer._valid_epoch(valid_data, show_progress=False)
        eval_s, improved = time.perf_counter() - t, bool(float(score) > best_score)
        if improved:
            best_score, best_epoch, best_valid = float(score), epoch, valid_res
            trainer._save_checkpoint(epoch, verbose=False)  # RecBole's own best-model file
        history.append({"epoch": epoch + 1, "train_loss": round(float(loss) / batches, 5), "train_s": round(train_s, 3),
                        "valid_eval_s": round(eval_s, 3), "valid_ndcg@10": float(valid_res["ndcg@10"]),
                        "valid_hit@10": float(valid_res["hit@10"]), "elapsed_s": round(time.perf_counter() - t_start, 3),
                        "best": improved, "peak_rss_mb": peak_rss_mb()})
        print(f"[recbole_side] epoch {epoch + 1} loss {history[-1]['train_loss']:.4f} valid NDCG@10 "
              f"{history[-1]['valid_ndcg@10']:.4f} ({train_s:.1f}s + {eval_s:.1f}s)" + (" *" if improved else ""), flush=True)
        epoch += 1
        result.update({"epochs_done": epoch, "history": history})
        write_json(out_path, {**result, "peak_rss_mb": peak_rss_mb()})  # progress
    train_wall = time.perf_counter() - t_start
    test_res, test_s = timed_eval(test_data, load_best_model=True, model_file=trainer.saved_model_file)
    train_s_all = [h["train_s"] for h in history]
    result.update({
        "epochs_done": epoch, "stopped": f"time budget {args.budget_s:g}s reached", "budget_s": args.budget_s,
        "wall_s": round(train_wall, 3),
        "wall_s_method": "train epochs + valid evaluations (excludes data prep and the test eval)",
        "sec_per_epoch": round(float(np.mean(train_s_all)), 3) if train_s_all else None,
        "sec_per_epoch_method": f"measured: mean over {len(train_s_all)} budget epoch(s)",
        "sec_per_full_eval": round(float(np.mean([h["valid_eval_s"] for h in history])), 3) if history else None,
        "best_epoch": best_epoch + 1, "valid_ndcg@10": best_score,
        "valid_best": {k: float(v) for k, v in (best_valid or {}).items()},
        "test_ndcg@10": test_res.get("ndcg@10"), "test_hr@10": test_res.get("hit@10"), "test": test_res,
        "test_eval_s": round(test_s, 3), "checkpoint": trainer.saved_model_file})


if __name__ == "__main__":
    sys.exit(main())
