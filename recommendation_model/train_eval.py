"""TriGRec stage 2: train and evaluate the gated BERT4Rec on the target domain.

    python -m recommendation_model.train_eval                                  # synthetic default
    python -m recommendation_model.train_eval --override "device=cuda:0,batch_size=1024,spe_emb_path=...npy,cross_emb_path=...npy"
    python -m recommendation_model.train_eval --config configs/trigrec/rec/food.yaml
    ablations: --override "use_spe=false,use_cross=false" (plain BERT4Rec), "use_cross=false",
               "use_spe=false", "gate=false", "shuffle_user_vectors=true" (control)
    leak-free training: --override "model.vector_holdout=1" (after the stage-1 export with
               --override "export.holdout_last=1"): the last training item of each row is
               predicted through the fusion from vectors that never saw it, the rest by plain cloze

Reads the stage-1 exports (default: the latest export of the target in the shared tree),
trains on the target domain's leave-two-out split and picks the epoch on validation (the C2DSR
validation file when ``data.c2dsr_dir`` is set, else full ranking). Test is read once, at the
end: full ranking over the target domain's items with the history excluded, plus the C2DSR
protocol (target vs 999 sampled target-domain items). Writes ``state_dict/rec/<domain>/
[<run_name>/]maxlen{L}.pt`` and, beside it, ``results.json``, ``metrics.jsonl`` and the C2DSR
test rank of every line (``test_c2dsr_ranks.npz``). ``--override eval_only=true`` (with the run's
own overrides) evaluates that saved checkpoint again without training, into ``eval_results.json``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from core import store
from core.cli import parse_config, run
from core.config import to_dict
from core.data.batches import ClozeDataset
from core.data.domains import domain_folder_name, global_to_local, load_views, restrict_to_domain, user_vectors_dir
from core.data.splits import leave_one_out
from core.dist import cleanup, is_main
from core.data.leakage import seen_transition, transition_codes
from core.evaluation import C2DSRProtocol, Evaluator, leak_controlled_metrics, popularity_score_fn
from core.metrics import ndcg_by_id, paired_over_seeds
from core.runs import start_run
from core.seqrec import encoder_args
from core.report import format_table
from core.errors import CheckpointError
from core.train import FitResult, fit, mean_epoch_seconds, prepare_out_dir
from recommendation_model.config import RecConfig
from recommendation_model.data import (HoldoutClozeDataset, UserVectorRows, aligned_vectors, c2dsr_companion,
                                       holdout_companion, latest_export)
from recommendation_model.model import TriGRecRecommender

DEFAULT_CONFIG = "configs/trigrec/rec/synthetic.yaml"
RANKS_FILE = "test_c2dsr_ranks.npz"  # per C2DSR test line, the target's rank (paired tests between runs)


def vector_paths(cfg: RecConfig, domain: str) -> tuple[str, str]:
    code = cfg.spe_domain or cfg.data.target
    folder = user_vectors_dir(cfg.home, domain)
    spe = cfg.spe_emb_path or (str(latest_export(folder, "spe", code, cfg.epoch_to_load))
                               if cfg.model.use_spe else "")
    cross = cfg.cross_emb_path or (str(latest_export(folder, "cross", code, cfg.epoch_to_load))
                                   if cfg.model.use_cross else "")
    return spe, cross


def user_tables(cfg: RecConfig, user_ids: list, spe_path: str, cross_path: str) -> tuple[dict, np.ndarray | None]:
    """The exported vectors in the order of ``user_ids``: ``spe`` / ``cross`` (evaluation; None when
    unused) and, with ``model.vector_holdout=m``, ``spe_holdout`` / ``cross_holdout`` (training,
    from the ``.holdout{m}`` files). The shuffled control permutes all of them with one
    permutation, returned as the second value (None when not shuffled)."""
    m = cfg.model
    tables: dict[str, np.ndarray | None] = {}
    for what, path, use in (("spe", spe_path, m.use_spe), ("cross", cross_path, m.use_cross)):
        tables[what] = aligned_vectors(path, user_ids, what).astype(np.float32) if use else None
        if m.vector_holdout:
            tables[f"{what}_holdout"] = (aligned_vectors(holdout_companion(path, m.vector_holdout), user_ids,
                                                         f"{what} (holdout)").astype(np.float32) if use else None)
    perm = None
    if m.shuffle_user_vectors:  # the control: each user gets someone else's vectors
        perm = np.random.default_rng(m.shuffle_seed).permutation(len(user_ids))
        tables = {k: (v[perm] if v is not None else None) for k, v in tables.items()}
    return tables, perm


def train_eval(cfg: RecConfig, log=print) -> dict:
    ctx = start_run(cfg.device, cfg.seed, log=log)
    device, log = ctx.device, ctx.log
    views, folder = load_views(cfg.data)
    domain = domain_folder_name(folder, views.domain_names, cfg.data.target)
    out = store.state_root(cfg.home or None) / "rec" / store.check_name(domain, "domain")
    if cfg.run_name:
        out = out / store.check_name(cfg.run_name, "run name")
    data, local_to_global = restrict_to_domain(views.target_all, views.item_domain, cfg.data.target)
    to_local = global_to_local(local_to_global, views.n_items + 1)
    split = leave_one_out(data)

    m = cfg.model
    spe_path, cross_path = vector_paths(cfg, domain)
    tables, perm = user_tables(cfg, data.user_ids, spe_path, cross_path)
    # row u (1-based user index) of each table; row 0 unused
    on_device = {k: (torch.as_tensor(np.vstack([np.zeros((1, v.shape[1]), np.float32), v]), device=device)
                     if v is not None else None) for k, v in tables.items()}

    def vectors(users: torch.Tensor, holdout: bool = False):
        keys = ("spe_holdout", "cross_holdout") if holdout else ("spe", "cross")
        return tuple(on_device[k][users] if on_device[k] is not None else None for k in keys)

    model = TriGRecRecommender(
        data.n_items, spe_dim=tables["spe"].shape[1] if tables["spe"] is not None else 0,
        cross_dim=tables["cross"].shape[1] if tables["cross"] is not None else 0, memory_tokens=m.memory_tokens,
        gate=m.gate, **encoder_args(m)).to(device)
    if m.vector_holdout:
        train_data = HoldoutClozeDataset(split, m.maxlen, m.mask_prob, m.vector_holdout, device=device,
                                         last_mask_prob=m.last_mask_prob)
    else:
        train_data = ClozeDataset(split, m.maxlen, m.mask_prob, device=device, last_mask_prob=m.last_mask_prob,
                                  prefix_prob=m.prefix_prob, end_mask_prob=m.end_mask_prob)

    # the batches carry the user vectors (vector holdout: the cut ones; validation and test read the full ones)
    held = "_holdout" if m.vector_holdout else ""
    train_data = UserVectorRows(train_data, {what: on_device[what + held] for what in ("spe", "cross")})

    def full_score_fn(model):
        return lambda inputs, users: model.full_scores(inputs, *vectors(users))

    c2dsr = {}
    if cfg.data.c2dsr_dir:
        from core.data.c2dsr import read_c2dsr_eval

        for which in ("valid", "test"):
            ev = read_c2dsr_eval(cfg.data.c2dsr_dir, which)
            ev = ev.subset(ev.target_domain == "AB".index(cfg.data.target))
            vec = {}
            for what, path in (("spe", spe_path), ("cross", cross_path)):
                if tables[what] is not None:
                    v = aligned_vectors(c2dsr_companion(path, which), ev.lines.tolist(), f"{what} (C2DSR {which})",
                                        exact=False)
                    vec[what] = v[np.random.default_rng(m.shuffle_seed).permutation(len(v))] if perm is not None else v
            c2dsr[which] = C2DSRProtocol(ev, to_local, data.n_items, m.maxlen, vec.get("spe"), vec.get("cross"),
                                         cfg.eval.c2dsr_negatives, cfg.eval.sample_seed, device, cfg.eval.batch_size,
                                         cfg.eval.c2dsr_exclude_history)
    valid_full = Evaluator(split, "valid", m.maxlen, cfg.eval.ks, sampled=(), sample_seed=cfg.eval.sample_seed,
                           batch_size=cfg.eval.batch_size, device=device, max_users=cfg.eval.valid_max_users,
                           repeat_targets=cfg.eval.repeat_targets)
    # model selection: the C2DSR validation lines when given (the protocol reported), else full ranking
    validate = (lambda mod: c2dsr["valid"].run(mod)) if c2dsr else (lambda mod: valid_full.run(full_score_fn(mod)))

    # the folder is this run's until its results are written; eval_only rereads the run's own
    # checkpoint (load_saved checks it), so it only takes the lock
    claim = store.claim_run_dir(out, None if cfg.eval_only else to_dict(cfg), resume=cfg.training.resume,
                                overwrite=cfg.overwrite, log=log)
    with claim:
        if not cfg.eval_only:
            prepare_out_dir(out, cfg, cfg.training.resume)
        log(f"data {folder.name} target {cfg.data.target} ({views.target_name}): {data.n_users} users, {data.n_items} "
            f"items; fusion spe={spe_path or '-'} cross={cross_path or '-'} gate={m.gate}"
            f"{' SHUFFLED' if perm is not None else ''}"
            f"{f' vector_holdout={m.vector_holdout}' if m.vector_holdout else ''}; C2DSR lines: "
            f"{', '.join(f'{k} {len(v)}' for k, v in c2dsr.items()) or 'not used'} -> {out}")
        meta = {"kind": model.kind, "model_args": model.model_args, "config": to_dict(cfg),
                "data_fingerprint": data.fingerprint()}
        if cfg.eval_only:
            result = load_saved(model, out / f"maxlen{m.maxlen}.pt", meta, device)
        else:
            result = fit(model, train_data, validate, cfg.training, out, device=device, seed=cfg.seed,
                         checkpoint_meta=meta, log=log)
        model.eval()
        test_full = Evaluator(split, "test", m.maxlen, cfg.eval.ks, sampled=cfg.eval.sampled,
                              sample_seed=cfg.eval.sample_seed, batch_size=cfg.eval.batch_size, device=device,
                              repeat_targets=cfg.eval.repeat_targets)
        results = {
            "domain": domain, "target": cfg.data.target, "run_dir": str(out), "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "train_seconds": round(result.seconds, 2), "threads": result.threads,
            "sec_per_epoch": mean_epoch_seconds(out), "valid": result.best_valid,
            "test_full": test_full.run(full_score_fn(model)),
            "test_full_leak_controlled": leak_controlled_metrics(test_full, split, cfg.eval.ks),
            "popularity_full": test_full.run(popularity_score_fn(split)),
            "spe_emb_path": spe_path, "cross_emb_path": cross_path, "shuffled": perm is not None,
            "vector_holdout": m.vector_holdout,
            "c2dsr_lines": {k: len(v) for k, v in c2dsr.items()},
        }
        if c2dsr:
            results.update(c2dsr_test(c2dsr["test"], model, data, split, out))
        if is_main():  # the data read: stage 1's folder and the user vectors fused here
            from core.provenance import run_record

            results["run"] = run_record(cfg, device=device, threads=result.threads, started=result.started,
                                        data_paths=[folder, spe_path, cross_path], data_fingerprint=meta["data_fingerprint"])
        if is_main() and cfg.eval_only:
            results["checkpoint"] = str(out / f"maxlen{m.maxlen}.pt")
            store.atomic_write_json(out / "eval_results.json", results)
        elif is_main():
            final = out / f"maxlen{m.maxlen}.pt"
            if (out / "best.pt").is_file():
                with store.atomic_path(final) as tmp:
                    shutil.copyfile(out / "best.pt", tmp)
            results["checkpoint"] = str(final)
            store.atomic_write_json(out / "results.json", results)
    return results


def c2dsr_test(t: C2DSRProtocol, model, data, split, out) -> dict:
    """The C2DSR test of ``model`` (``t.run``), split by whether the target-domain training part
    (``data`` cut by ``split.train_len``) holds each line's target and its last transition; the
    per-line ranks go to ``out/test_c2dsr_ranks.npz`` (paired tests between runs read them)."""
    res = {"test_c2dsr": t.run(model)}
    # items the loss ever had as a target: the training part of each sequence
    counts = np.bincount(np.concatenate([data.sequence(u)[:n] for u, n in enumerate(split.train_len, 1)]),
                         minlength=data.n_items + 1)
    res["test_c2dsr_by_target"] = t.split_by_training_count(counts)
    # subsets of the issue-23 rows: targets training holds; transitions it does not hold verbatim
    leaked = seen_transition(transition_codes(data, split.train_len), t.previous, t.targets.numpy(), data.n_items)
    seen = counts[t.targets.numpy()] > 0
    res["test_c2dsr_subsets"] = {"lines": {"all": len(t), "seen-target": int(seen.sum()),
                                           "leak-controlled": int((~leaked).sum())},
                                 **t.subset_metrics({"seen-target": seen, "leak-controlled": ~leaked})}
    if is_main():
        store.atomic_save_npz(out / RANKS_FILE, lines=t.lines, ranks=t.last_ranks.numpy())
    return res


def c2dsr_line_ndcg(run_dir: str | Path, k: int = 10) -> dict[int, float] | None:
    """{line: NDCG@k} of each C2DSR test line of a finished run, from the ranks ``c2dsr_test`` wrote
    to ``run_dir/test_c2dsr_ranks.npz``; None without that file (a run from before it was written)."""
    path = Path(run_dir) / RANKS_FILE
    if not path.is_file():
        return None
    ranks = np.load(path)
    return ndcg_by_id(ranks["lines"], ranks["ranks"], k)


def paired_line_ndcg(base: dict, other: dict, k: int = 10) -> dict:
    """``core.metrics.paired_over_seeds`` of two models' per-line C2DSR test NDCG@k in % (each
    ``{seed: run_dir}``; a run without its rank file counts as not run)."""
    def pct(run_dir) -> dict | None:
        ndcg = c2dsr_line_ndcg(run_dir, k)
        return None if ndcg is None else {line: 100 * v for line, v in ndcg.items()}

    return paired_over_seeds(*({seed: pct(d) for seed, d in runs.items()} for runs in (base, other)))


def load_saved(model: TriGRecRecommender, path, meta: dict, device) -> FitResult:
    """``eval_only``: the run's saved weights (same kind, data and model shape, else one clear error)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no saved checkpoint to evaluate; train this run first (eval_only reads the "
                              "checkpoint of the same home, run_name and model.maxlen)")
    ckpt = store.load_checkpoint(path, kind=meta["kind"], data_fingerprint=meta["data_fingerprint"], map_location=device)
    # keys both know (an older checkpoint may lack a newer, training-only setting)
    saved, asked = ckpt.get("model_args") or {}, meta["model_args"]
    differ = {k: (saved[k], asked[k]) for k in sorted(saved.keys() & asked.keys()) if saved[k] != asked[k]}
    if differ:
        raise CheckpointError(f"{path}: saved with other model settings ("
                              + ", ".join(f"{k} {a} here {b}" for k, (a, b) in differ.items())
                              + "); pass the run's own overrides (its config.yaml)")
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not fit this model ({str(exc).splitlines()[0]}); pass the run's own "
                              "overrides (its config.yaml)") from None
    return FitResult(ckpt.get("epoch", -1), float("nan"), ckpt.get("valid", {}), 0, 0.0, "eval_only")


def main(argv=None) -> int:
    cfg, args = parse_config(RecConfig, argv, __doc__, DEFAULT_CONFIG)
    res = train_eval(cfg)
    main_rank = is_main()
    cleanup()
    if main_rank:
        print_test(res, cfg.eval.c2dsr_negatives, "eval_results" if cfg.eval_only else "results")
    return 0


def print_test(res: dict, negatives: int, results_name: str = "results") -> None:
    cols = ["NDCG@10", "HR@10", "MRR"]
    rows = [{"protocol": "full ranking", **{c: res["test_full"][c] for c in cols}},
            {"protocol": "popularity (full)", **{c: res["popularity_full"][c] for c in cols}}]
    if "test_c2dsr" in res:
        rows.append({"protocol": f"C2DSR (1 + {negatives} negatives)", **{c: res["test_c2dsr"][c] for c in cols}})
    print(f"\nTest, target {res['target']} (best validation epoch {res['best_epoch']}):")
    print(format_table(rows, ["protocol", *cols]))
    print(f"checkpoint: {res['checkpoint']}\nresults: {res['run_dir']}/{results_name}.json")


if __name__ == "__main__":
    run(main)
