"""The training stages, as functions the CLI and the benchmark call.

- ``train_source(cfg)``: SASRec on the source domain (its own leave-one-out split picks the
  epoch), then every user's source vector = the model's last hidden state over their whole
  source sequence, written to ``state_dict/embeddings/cross_domain/<dataset>/<run>/source-<S>.npy``
  (+ ``.ids.json``, + ``.meta.json`` with the source data's fingerprint).
- ``train_target(cfg, kind)``: ``baseline`` (target only), ``transfer`` (MLP bridge + gate),
  ``ptupcdr`` (personalised bridge) or ``merged`` (one SASRec over both domains' merged
  sequence, ``cross_domain.merged``) on the target's cold-start protocol; the epoch is
  chosen on validation, then test is scored once for all / cold / warm users under full
  ranking and the sampled protocol. Returns the report with per-user ranks (also written
  as ``test_ranks.npz``) for paired tests.
- ``run_experiment(cfg, kinds)``: source, then each target model, for one config and seed.

Runs live in ``state_dict/cross_domain/<dataset>/<run_name>/<stage>/`` with stages
``source-<S>``, ``baseline-<T>``, ``transfer-<S>-<T>``, ``ptupcdr-<S>-<T>``, ``merged-<S>-<T>``,
``fusion-<S>-<T>`` and ``ensemble-<S>-<T>`` (``cross_domain.fusion``, no training).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from core import store
from core.config import to_dict
from core.data.splits import leave_one_out, padded_prefixes
from core.dist import is_main
from core.errors import CheckpointError, ConfigError
from core.evaluation import Evaluator
from core.runs import start_run
from core.seqrec import encoder_args
from core.train import fit, mean_epoch_seconds, prepare_out_dir
from cross_domain.data import (BosRows, Domains, SourceInputs, aligned_vectors, cold_protocol, load_domains,
                               source_histories)
from cross_domain.evaluate import score_fn, test_report
from cross_domain.merged import merged_data, merged_score_fn
from cross_domain.model import CrossDomainSASRec

KINDS = ("baseline", "transfer", "ptupcdr", "merged")
EXPERIMENT_KINDS = KINDS[:3]  # run_experiment's default: the seed's models and the PTUPCDR bridge


# --------------------------------------------------------------------------- paths
def stage_name(kind: str, dom: Domains) -> str:
    return stage_folder(kind, dom.source_name, dom.target_name)


def stage_folder(kind: str, source: str, target: str) -> str:
    """A stage's folder in a run, from the domains' names (the benchmark reads runs by it)."""
    if kind == "source":
        return f"source-{source}"
    if kind == "baseline":
        return f"baseline-{target}"
    return f"{kind}-{source}-{target}"


def stage_dir(cfg, dom: Domains, kind: str) -> Path:
    return store.run_dir("cross_domain", dom.folder.name, cfg.run_name, cfg.home or None) / store.check_name(
        stage_name(kind, dom), "domain name")


def vectors_path(cfg, dom: Domains) -> Path:
    return (store.embeddings_dir("cross_domain", dom.folder.name, cfg.home or None)
            / store.check_name(cfg.run_name, "run name") / f"source-{dom.source_name}.npy")


def new_model(cfg, n_items: int, **extra) -> CrossDomainSASRec:
    return CrossDomainSASRec(n_items, bce_negatives=cfg.model.bce_negatives, **extra, **encoder_args(cfg.model))


def _setup(cfg, log):
    ctx = start_run(cfg.device, cfg.seed, log=log)
    return ctx.device, ctx.log


def claim_stage(cfg, out: Path, log) -> store.RunClaim:
    """The stage folder is this run's (see ``core.store.claim_run_dir``) until its results are written."""
    return store.claim_run_dir(out, to_dict(cfg), resume=cfg.training.resume, overwrite=cfg.overwrite,
                               ignore=("rl",), log=log)  # rl.*: the rl-demo's settings, not this stage's


def _fit(cfg, model, rows, validate, out: Path, device, log, meta: dict, loss_fn=None):
    prepare_out_dir(out, cfg, cfg.training.resume)
    meta = {"kind": model.kind, "model_args": model.model_args, "config": to_dict(cfg), **meta}
    result = fit(model, rows, validate, cfg.training, out, device=device, seed=cfg.seed, checkpoint_meta=meta,
                 log=log, **({"loss_fn": loss_fn} if loss_fn is not None else {}))
    model.eval()
    return {"run_dir": str(out), "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "train_seconds": round(result.seconds, 2), "threads": result.threads, "sec_per_epoch": mean_epoch_seconds(out), "stopped": result.stopped,
            "valid": result.best_valid, "started": result.started}  # started: for the run record, popped there


# --------------------------------------------------------------------------- source
@torch.no_grad()
def encode_users(model: CrossDomainSASRec, data, device, how: str = "item_mean",
                 batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """One vector per user with at least one item: the mean of the model's item vectors over
    the whole sequence (``item_mean``), or the last hidden state over its last items (``last``)."""
    users = np.flatnonzero(data.lengths >= 1) + 1
    if how == "item_mean":
        table = model.item_emb.weight.detach().float().cpu().numpy()
        user_of = np.repeat(np.arange(data.n_users), data.lengths)
        sums = np.zeros((data.n_users, table.shape[1]), dtype=np.float64)
        np.add.at(sums, user_of, table[data.items])
        return users, (sums[users - 1] / data.lengths[users - 1, None]).astype(np.float32)
    out = []
    for start in range(0, len(users), batch_size):
        u = users[start:start + batch_size]
        rows = torch.as_tensor(padded_prefixes(data, u, data.lengths[u - 1], model.maxlen - 1), device=device)
        out.append(model.last_hidden(model.with_bos(rows)).float().cpu().numpy())
    return users, (np.concatenate(out) if out else np.zeros((0, model.item_emb.embedding_dim), np.float32))


def train_source(cfg, log=print) -> dict:
    device, log = _setup(cfg, log)
    dom = load_domains(cfg.data)
    out = stage_dir(cfg, dom, "source")
    split = leave_one_out(dom.source)
    model = new_model(cfg, dom.source.n_items).to(device)
    rows = BosRows(dom.source, split.train_len, cfg.model.maxlen, model.bos, device)
    e = cfg.eval
    valid = Evaluator(split, "valid", cfg.model.maxlen - 1, e.ks, sampled=(), sample_seed=e.sample_seed,
                      batch_size=e.batch_size, device=device, max_users=e.valid_max_users,
                      repeat_targets=e.repeat_targets)
    none = SourceInputs(None, None)
    log(f"source {dom.source_name} of {dom.folder.name}: {dom.source.n_users} users, {dom.source.n_items} items, "
        f"{dom.source.n_interactions} interactions; {len(rows)} training rows -> {out}")
    path = vectors_path(cfg, dom)
    with claim_stage(cfg, out, log):  # the exported vectors belong to this run too
        res = _fit(cfg, model, rows, lambda m: valid.run(score_fn(m, none)), out, device, log,
                   {"data_fingerprint": dom.source.fingerprint(), "stage": "source"})
        users, vectors = encode_users(model, dom.source, device, cfg.transfer.source_vector, e.batch_size)
        if is_main():
            store.save_embeddings(path.parent, path.stem, vectors, [dom.user_ids[u - 1] for u in users])
            store.atomic_write_json(path.with_suffix(".meta.json"), {
                "dataset": dom.folder.name, "source": dom.source_name, "source_fingerprint": dom.source.fingerprint(),
                "checkpoint": str(out / "best.pt"), "dim": int(vectors.shape[1]), "users": int(len(users)),
                "vector": cfg.transfer.source_vector})
        res.update(stage="source", source=dom.source_name, vectors=str(path), users_with_vectors=int(len(users)))
        if is_main():
            from core.provenance import run_record

            res["run"] = run_record(cfg, device=device, threads=res["threads"], started=res.pop("started"),
                                    data_paths=[dom.folder], data_fingerprint=dom.source.fingerprint())
            store.atomic_write_json(out / "results.json", res)
    log(f"source vectors of {len(users)} users -> {path}")
    return res


# --------------------------------------------------------------------------- target
def load_source_side(cfg, dom: Domains, kind: str, device, path: str | Path | None = None,
                     expect_fingerprint: str | None = None) -> tuple[SourceInputs, dict, torch.Tensor | None]:
    """The source vectors (and, for ``ptupcdr``, source histories + the source model's item
    vectors) of every target user; checks they belong to this data."""
    if kind in ("baseline", "merged"):  # merged: the source items are in its input sequence
        return SourceInputs(None, None), {}, None
    default = vectors_path(cfg, dom)
    path = Path(path or cfg.transfer.source_vectors or default)
    hint = (f"run `python -m cross_domain train-source --source {dom.source_name}` with the same --config/--override "
            "first")
    if not path.is_file():
        raise CheckpointError(f"{path}: no source vectors; " + (hint if path == default else "check transfer.source_vectors"))
    side_meta = {}
    if path.with_suffix(".meta.json").is_file():
        side_meta = json.loads(path.with_suffix(".meta.json").read_text(encoding="utf-8"))
        if side_meta.get("source_fingerprint") not in (None, dom.source.fingerprint()):
            raise CheckpointError(f"{path}: made from other source data than {dom.source_name} of {dom.folder.name} "
                                  "here (dataset or max_items_src changed); " + hint)
        if expect_fingerprint is None and side_meta.get("vector") not in (None, cfg.transfer.source_vector):
            raise CheckpointError(f"{path}: exported as {side_meta['vector']!r} vectors, the config asks for "
                                  f"{cfg.transfer.source_vector!r}; " + hint)
    vectors = aligned_vectors(path, dom.user_ids)
    info = {"source_vectors": str(path), "source_fingerprint": store.fingerprint_arrays(vectors),
            "users_with_source": int(np.any(vectors != 0, axis=1).sum())}
    if expect_fingerprint and expect_fingerprint != info["source_fingerprint"]:
        raise CheckpointError(f"{path}: the source vectors changed since this model was trained; train it again")
    history, items = None, None
    if kind == "ptupcdr":
        ckpt_path = Path(side_meta.get("checkpoint") or stage_dir(cfg, dom, "source") / "best.pt")
        ckpt = store.load_checkpoint(ckpt_path, kind=CrossDomainSASRec.kind, data_fingerprint=dom.source.fingerprint())
        items = ckpt["model_state"]["item_emb.weight"][: dom.source.n_items + 1].float()
        if items.shape[1] != vectors.shape[1]:
            raise ConfigError(f"{path}: {vectors.shape[1]}-d vectors but the source model's items are {items.shape[1]}-d; "
                              "the ptupcdr bridge needs vectors of that source model")
        history = source_histories(dom.source, cfg.transfer.source_history)
        info["source_checkpoint"] = str(ckpt_path)
    return SourceInputs(vectors, history, device), info, items


def build_target_model(cfg, dom: Domains, kind: str, side: SourceInputs, items: torch.Tensor | None):
    if kind == "baseline":
        return new_model(cfg, dom.target.n_items)
    t = cfg.transfer
    model = new_model(cfg, dom.target.n_items, source_dim=side.dim, bridge="mlp" if kind == "transfer" else "ptupcdr",
                      bridge_hidden=t.bridge_hidden, meta_hidden=t.meta_hidden, n_source_items=dom.source.n_items,
                      gate_bias=t.gate_bias, source_dropout=t.source_dropout, fuse_max_known=t.fuse_max_known)
    if items is not None:
        model.bridge.items.copy_(items)
    return model


def train_target(cfg, kind: str, log=print) -> dict:
    """Train one target model (``baseline``, ``transfer`` or ``ptupcdr``) and score test."""
    if kind not in KINDS:
        raise ConfigError(f"model kind {kind!r} is not one of {', '.join(KINDS)}")
    device, log = _setup(cfg, log)
    dom = load_domains(cfg.data)
    proto = cold_protocol(dom.target, cfg.cold.k, cfg.cold.fraction, cfg.cold.seed)
    side, info, items = load_source_side(cfg, dom, kind, device)
    out = stage_dir(cfg, dom, kind)
    e = cfg.eval
    if kind == "merged":
        merged = merged_data(dom, proto, cfg.model.maxlen - 1, (cfg.data.max_items_src, cfg.data.max_items_tgt))
        model = new_model(cfg, merged.train.n_items).to(device)
        rows = BosRows(merged.train, merged.train.lengths, cfg.model.maxlen, model.bos, device)
        valid_rows, test_rows = (torch.as_tensor(r, device=device) for r in (merged.valid_rows, merged.test_rows))
        valid_score = lambda m: merged_score_fn(m, valid_rows, merged.n_target)  # noqa: E731
        test_score = lambda m: merged_score_fn(m, test_rows, merged.n_target)  # noqa: E731
        info = {"merged_items": merged.train.n_items, "merged_interactions": merged.train.n_interactions}
    else:
        model = build_target_model(cfg, dom, kind, side, items).to(device)
        rows = BosRows(proto.train, proto.train.lengths, cfg.model.maxlen, model.bos, device, side=side)
        valid_score = test_score = lambda m: score_fn(m, side)  # noqa: E731
    valid = Evaluator(proto.valid, "valid", cfg.model.maxlen - 1, e.ks, sampled=(), sample_seed=e.sample_seed,
                      batch_size=e.batch_size, device=device, max_users=e.valid_max_users,
                      repeat_targets=e.repeat_targets)
    counts = proto.counts()
    log(f"target {dom.target_name} of {dom.folder.name} ({kind}" + (f", source {dom.source_name}: vectors for "
        f"{info['users_with_source']} of {dom.target.n_users} users" if "users_with_source" in info else "") + f"): {dom.target.n_items} items; "
        f"test users {counts['all']} = {counts['cold']} cold ({counts['cut']} cut to <= {cfg.cold.k} items, "
        f"{counts['no_target_history']} of them to none) + {counts['warm']} warm -> {out}")
    with claim_stage(cfg, out, log):
        res = _fit(cfg, model, rows, lambda m: valid.run(valid_score(m)), out, device, log,
                   {"data_fingerprint": proto.train.fingerprint(), "stage": kind, **info})
        report = test_report(test_score(model), proto.test, proto.is_cold, cfg, device)
        res.update(stage=kind, dataset=dom.folder.name, source=dom.source_name, target=dom.target_name,
                   test=report["metrics"], users=report["users"], protocol=counts, **info)
        if is_main():
            from core.provenance import run_record

            res["run"] = run_record(cfg, device=device, threads=res["threads"], started=res.pop("started"),
                                    data_paths=[dom.folder], data_fingerprint=proto.train.fingerprint())
            store.atomic_write_json(out / "results.json", res)
            store.atomic_save_npz(out / "test_ranks.npz", **report["ranks"])
    res["ranks"] = report["ranks"]  # in memory only: numpy arrays for paired tests
    return res


def run_experiment(cfg, kinds=EXPERIMENT_KINDS, log=print) -> dict:
    """Source model and vectors, then each target model, for one config (seed = ``cfg.seed``;
    give each seed its own ``run_name``). ``{"source": ..., kind: report}``."""
    out = {"source": train_source(cfg, log)}
    for kind in kinds:
        out[kind] = train_target(cfg, kind, log)
    return out


def load_trained(cfg, dom: Domains, kind: str, train_fingerprint: str | None, device):
    """A trained target model and its source side, checked against the data it was trained on
    (``train_fingerprint``: the cold protocol's training data; None skips that check)."""
    path = stage_dir(cfg, dom, kind) / "best.pt"
    if not path.is_file():
        flag = "" if kind == "baseline" else f" --source {dom.source_name}"
        sub = "train-target-baseline" if kind == "baseline" else "train-target-transfer"
        extra = ' --override "transfer.bridge=ptupcdr"' if kind == "ptupcdr" else ""
        raise CheckpointError(f"{path}: no trained {kind} model; run `python -m cross_domain {sub}{flag} "
                              f"--target {dom.target_name}{extra}` with the same --config/--override first")
    ckpt = store.load_checkpoint(path, kind=CrossDomainSASRec.kind, data_fingerprint=train_fingerprint,
                                 map_location=device)
    side, _, _ = load_source_side(cfg, dom, kind, device, path=ckpt.get("source_vectors"),
                                  expect_fingerprint=ckpt.get("source_fingerprint"))
    model = CrossDomainSASRec(**ckpt["model_args"]).to(device)
    model.load_state_dict(ckpt["model_state"])
    return model.eval(), side, path
