"""Evaluate a saved SASRec / BERT4Rec checkpoint, or export its top-K lists.

    python -m distillation.evaluation --model-path state_dict/distillation/beauty/sasrec/best.pt \\
        --config configs/distillation/sasrec/beauty.yaml
    python -m distillation.evaluation --model-path ... --config ... --data data/beauty-new-users
    python -m distillation.evaluation --model-path ... --config ... --export-topk 20 \\
        [--users users.txt] [--out top20.jsonl] [--gt gt.jsonl] [--position test|valid|next]

Without ``--data`` the checkpoint must have been trained on the dataset the config names (its
data fingerprint is checked). ``--data FOLDER`` evaluates on another prepared dataset (new
users, another split) that shares the training data's item id map; other item maps are refused.
``--output FILE`` also writes the metrics as JSON.

``--export-topk K`` writes, instead of metrics, one JSON line per user in ``core.candidates``'
format, ``{"user_id": raw id, "results": [{"item_id": raw id, "score": s}, ...]}`` best first,
with the user's history masked: at the test position by default (the history before each
user's held-out last item; ``--gt FILE`` writes those targets, so ``python -m core.candidates
--candidates OUT --gt FILE`` reproduces the evaluator's metrics), ``valid``, or ``next`` (after
the whole sequence: what to show next). ``--users FILE`` (one raw user id per line) limits it.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.cli import add_common_args, cli_overrides, resolve_device, run
from core.config import load_config
from core.errors import CheckpointError, ConfigError, DataError
from core.report import RESULT_COLUMNS, format_table, result_rows
from core.seqrec import DataConfig, dataset_dir, item_map_hash, load_dataset, load_trained_model, model_score_fn
from core.store import atomic_write_json, atomic_write_text
from distillation.config import DistillConfig
from distillation.pipeline import load_data

POSITIONS = ("test", "valid", "next")


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", "--model_path", required=True, help="checkpoint (best.pt or last.pt)")
    parser.add_argument("--output", help="also write the metrics here as JSON")
    parser.add_argument("--data", help="another prepared dataset folder with the training data's item id map")
    parser.add_argument("--export-topk", type=int, metavar="K", help="write each user's top-K items (JSONL) instead of metrics")
    parser.add_argument("--users", help="with --export-topk: only these users (one raw user id per line)")
    parser.add_argument("--out", help="with --export-topk: the JSONL file (default: topK.jsonl beside the checkpoint)")
    parser.add_argument("--gt", help="with --export-topk at test/valid: also write the held-out targets here (JSONL)")
    parser.add_argument("--position", choices=POSITIONS, default="test",
                        help="with --export-topk: the history cut (test: before the last item; next: the whole sequence)")
    add_common_args(parser, default_config="configs/distillation/sasrec.yaml")
    args = parser.parse_args(argv)
    if args.export_topk is None:
        for flag, value in (("--users", args.users), ("--out", args.out), ("--gt", args.gt)):
            if value:
                raise ConfigError(f"{flag} is only read with --export-topk K; add --export-topk")
    elif args.export_topk < 1:
        raise ConfigError(f"--export-topk must be >= 1, got {args.export_topk}")
    if args.gt and args.position == "next":
        raise ConfigError("--gt with --position next: after the whole sequence there is no held-out target; "
                          "use --position test or valid")
    return args


def check_item_map(ckpt: dict, path, data, data_path: Path) -> None:
    """Refuse data whose raw item ids do not map to the checkpoint's item rows."""
    want = ckpt.get("item_map")
    source = "the checkpoint"
    if want is None:  # checkpoints written before the hash: compare with the training data folder
        try:
            train_dir = dataset_dir(DataConfig(**{k: v for k, v in ckpt["config"]["data"].items()
                                                  if k in DataConfig.__dataclass_fields__}))
        except (KeyError, TypeError):
            train_dir = None
        ids = train_dir / "item_ids.json" if train_dir is not None else None
        if ids is None or not ids.is_file():
            raise CheckpointError(f"{path}: carries no item id map and its training data folder ({train_dir}) is not "
                                  "here, so the item maps cannot be compared; evaluate without --data or retrain")
        want = item_map_hash(json.loads(ids.read_text(encoding="utf-8-sig")))
        source = str(ids)
    if want != item_map_hash(data.item_ids):
        raise CheckpointError(f"{path}: {data_path}/item_ids.json maps item ids to other rows than {source} "
                              f"(item map {item_map_hash(data.item_ids)} != {want}); --data needs data prepared "
                              "with the training data's item ids (the same item_ids.json)")


def load_model(args, cfg):
    from core.data.splits import make_split

    device = resolve_device(cfg.device)
    if args.data:
        folder = Path(args.data)
        if not (folder / "meta.json").is_file():
            raise DataError(f"{folder}: not a prepared dataset folder (no meta.json); prepare it with "
                            "`python -m core.data.prepare ...` and pass that folder to --data")
        data, data_path = load_dataset(replace(cfg.data, dataset=str(folder.resolve())))
    else:
        data, data_path = load_data(cfg.data)
    model, ckpt = load_trained_model(
        args.model_path, data, data_path, device, check_fingerprint=not args.data,
        check=(lambda c: check_item_map(c, args.model_path, data, data_path)) if args.data else None)
    margs = ckpt["model_args"]
    split = make_split(data, cfg.data.split, cfg.data.valid_quantile, cfg.data.test_quantile)
    return model, split, device, margs["maxlen"]


def _read_users(path: str, data) -> list[int]:
    """1-based user indexes of the raw ids in ``path``, in file order."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: users file not found; write one raw user id per line")
    index = {str(u): n + 1 for n, u in enumerate(data.user_ids)}
    out: dict[int, int] = {}
    for lineno, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), 1):
        raw = line.strip()
        if not raw or raw.startswith("#"):
            continue
        if raw not in index:
            raise DataError(f"{p}:{lineno}: user {raw!r} is not in this dataset's user_ids.json; "
                            "list raw user ids of the evaluated data")
        if index[raw] in out:
            raise DataError(f"{p}:{lineno}: user {raw!r} is listed twice (line {out[index[raw]]})")
        out[index[raw]] = lineno
    if not out:
        raise DataError(f"{p}: no user ids; write one raw user id per line")
    return list(out)


def export_topk(args, cfg, model, split, device, maxlen: int) -> Path:
    from core.data.splits import EvalSplit, Split
    from core.evaluation import Evaluator

    data, k = split.data, args.export_topk
    if k > data.n_items:
        raise ConfigError(f"--export-topk {k} exceeds the catalog ({data.n_items} items)")
    if args.position == "next":
        users = np.arange(1, data.n_users + 1)
        part = EvalSplit(users, data.lengths.astype(np.int64), np.zeros(len(users), np.int64))
    else:
        part = split.test if args.position == "test" else split.valid
    if args.users:
        wanted = _read_users(args.users, data)
        row_of = {int(u): r for r, u in enumerate(part.users)}
        missing = [u for u in wanted if u not in row_of]
        if missing:
            raise DataError(f"{args.users}: user {data.user_ids[missing[0] - 1]!r} has no {args.position} position "
                            f"(too few interactions for the split); drop it or use --position next")
        part = part.subset(np.asarray([row_of[u] for u in wanted]))
    view = Split(data, split.train_len, part, part, split.kind)
    ev = Evaluator(view, "test", maxlen, sampled=(), batch_size=cfg.eval.batch_size, device=device,
                   item_chunk=cfg.eval.item_chunk)
    users, items, scores = ev.recommend(model_score_fn(model), k)
    order = {int(u): r for r, u in enumerate(users)}
    lines, gt = [], []
    for u, target in zip(part.users.tolist(), part.targets.tolist()):  # the requested (or index) order
        r = order[u]
        uid = data.user_ids[u - 1]
        results = [{"item_id": data.item_ids[i - 1], "score": round(float(s), 6)}
                   for i, s in zip(items[r].tolist(), scores[r].tolist()) if np.isfinite(s)]  # -inf: nothing left
        lines.append(json.dumps({"user_id": uid, "results": results}, ensure_ascii=False))
        gt.append(json.dumps({"user_id": uid, "item_id": data.item_ids[target - 1]}, ensure_ascii=False))
    out = Path(args.out) if args.out else Path(args.model_path).parent / f"top{k}.jsonl"
    atomic_write_text(out, "\n".join(lines) + "\n")
    if args.gt:
        atomic_write_text(Path(args.gt), "\n".join(gt) + "\n")
    print(f"top {k} of {len(lines)} users ({args.position} position, history masked) -> {out}"
          + (f"; targets -> {args.gt}" if args.gt else ""))
    return out


def main(argv=None) -> int:
    from core.evaluation import Evaluator

    args = _args(argv)
    cfg = load_config(DistillConfig, args.config, cli_overrides(args))
    model, split, device, maxlen = load_model(args, cfg)
    if args.export_topk is not None:
        export_topk(args, cfg, model, split, device, maxlen)
        return 0
    res = {}
    for which in ("valid", "test"):
        ev = Evaluator(split, which, maxlen, cfg.eval.ks, sampled=cfg.eval.sampled,
                       sample_seed=cfg.eval.sample_seed, batch_size=cfg.eval.batch_size, device=device,
                       item_chunk=cfg.eval.item_chunk, repeat_targets=cfg.eval.repeat_targets)
        res[which] = ev.run(model_score_fn(model))
    print(format_table(result_rows([("valid", res["valid"]), ("test", res["test"])]), RESULT_COLUMNS))
    if args.output:
        atomic_write_json(args.output, res)
    return 0


if __name__ == "__main__":
    run(main)
