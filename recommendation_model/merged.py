"""TriGRec's merged-domain peer: one SASRec over each user's time-ordered merge of both domains,
scored on the target domain's items under stage 2's own protocols (issue 23).

    python -m recommendation_model.merged                                       # synthetic default
    python -m recommendation_model.merged --config configs/trigrec/merged/food.yaml [--override "seed=2"]

It reads what TriGRec's encoders read (stage 1's cross view: the target's training part merged
in time with the whole other domain) and learns no user vector: the standard single-model peer
of cross-domain sequential papers. Item space: the target's items keep stage 2's indexes 1..n_t
and item ``s`` of the other domain becomes ``n_t + s``, so the candidates, the sampled negatives
(same seed) and the excluded history are stage 2's, and only the model's input differs. The
checkpoint is chosen on the C2DSR validation lines when ``data.c2dsr_dir`` is set (else full
ranking of the validation targets); test: full ranking on the pickles' leave-two-out split and
the C2DSR protocol with its subsets. Writes ``state_dict/rec/<domain>/<run_name>/`` as stage 2
does (``results.json``, ``metrics.jsonl``, ``best.pt``, ``test_c2dsr_ranks.npz``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from core import store
from core.cli import parse_config, run
from core.config import to_dict
from core.data.batches import CausalDataset, left_padded_rows, trim_padding
from core.data.domains import DOMAIN_CODES, DomainDataConfig, domain_folder_name, domain_items, global_to_local, \
    load_views, merged_item_index, restrict_to_domain
from core.data.sequences import SequenceData
from core.data.splits import EvalSplit, Split, leave_one_out
from core.dist import cleanup, is_main
from core.errors import ConfigError, DataError
from core.evaluation import C2DSRProtocol, Evaluator, leak_controlled_metrics, popularity_score_fn
from core.runs import start_run
from core.seqrec import TRAINING_ALIASES, ModelConfig, make_model
from core.train import TrainConfig, fit, mean_epoch_seconds, prepare_out_dir
from recommendation_model.config import RecEvalConfig
from recommendation_model.train_eval import c2dsr_test, print_test

DEFAULT_CONFIG = "configs/trigrec/merged/synthetic.yaml"
CAUSAL = ("sasrec", "bsarec")


@dataclass(frozen=True)
class MergedConfig:
    ALIASES: ClassVar[dict] = dict(TRAINING_ALIASES)
    seed: int = 42
    device: str = "auto"
    home: str = ""
    run_name: str = "sasrec-merged"  # state_dict/rec/<domain>/<run_name>/, beside stage 2's runs
    overwrite: bool = False
    data: DomainDataConfig = field(default_factory=DomainDataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(maxlen=15))
    training: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=60, batch_size=256, eval_every=2,
                                                                     patience=5))
    eval: RecEvalConfig = field(default_factory=lambda: RecEvalConfig(sampled=[]))

    def __post_init__(self) -> None:
        if self.model.model_type not in CAUSAL:
            raise ConfigError(f"model.model_type={self.model.model_type}: the merged peer is a next-item model; "
                              f"use one of {', '.join(CAUSAL)}")
        if not self.run_name:
            raise ConfigError("run_name is empty: name the run's folder (default sasrec-merged)")


def train_merged(cfg: MergedConfig, log=print) -> dict:
    ctx = start_run(cfg.device, cfg.seed, threads=cfg.training.threads, log=log)
    device, log = ctx.device, ctx.log
    views, folder = load_views(cfg.data)
    domain = domain_folder_name(folder, views.domain_names, cfg.data.target)
    out = store.state_root(cfg.home or None) / "rec" / store.check_name(domain, "domain") / \
        store.check_name(cfg.run_name, "run name")
    # the target domain exactly as stage 2 reads it: its split, history exclusion and subsets
    data, local_to_global = restrict_to_domain(views.target_all, views.item_domain, cfg.data.target)
    split = leave_one_out(data)
    other = domain_items(views.item_domain, DOMAIN_CODES[1 - DOMAIN_CODES.index(cfg.data.target)])
    index, order = merged_item_index(local_to_global, other, len(views.item_domain))
    n_t = data.n_items
    seqs = []
    for u in range(1, data.n_users + 1):
        seq = index[views.cross.sequence(u).astype(np.int64)]
        if not np.array_equal(seq[seq <= n_t], data.sequence(u)[:split.train_len[u - 1]]):
            raise DataError(f"{folder}: user {data.user_ids[u - 1]!r}: the cross view's {views.target_name} items "
                            "differ from that domain's training part; prepare the data again")
        seqs.append(seq)
    merged = SequenceData.from_lists(seqs, len(order), list(data.user_ids),
                                     [views.cross.item_ids[g - 1] for g in order])
    # every merged item is training data: validation and test are the target's held-out two
    none = EvalSplit(*(np.zeros(0, np.int64),) * 3)
    train = Split(merged, merged.lengths, none, none)
    width = cfg.model.maxlen
    target_seqs = [data.sequence(u) for u in range(1, data.n_users + 1)]
    with_valid = [np.append(s, t[-2]) if len(t) >= 3 else s for s, t in zip(seqs, target_seqs)]
    rows = {which: torch.as_tensor(left_padded_rows(s, width), device=device)
            for which, s in (("valid", seqs), ("test", with_valid))}  # test rows also hold the validation target

    def score_fn(model, which: str):
        return lambda inputs, users: model.full_scores(trim_padding(rows[which][users]))[:, :n_t + 1]

    model = make_model(cfg.model, merged.n_items).to(device)
    c2dsr = {}
    if cfg.data.c2dsr_dir:
        from core.data.c2dsr import read_c2dsr_eval

        to_local = global_to_local(local_to_global, views.n_items + 1)
        for which in ("valid", "test"):
            ev = read_c2dsr_eval(cfg.data.c2dsr_dir, which)
            ev = ev.subset(ev.target_domain == "AB".index(cfg.data.target))
            c2dsr[which] = C2DSRProtocol(ev, to_local, n_t, width, None, None, cfg.eval.c2dsr_negatives,
                                         cfg.eval.sample_seed, device, cfg.eval.batch_size,
                                         cfg.eval.c2dsr_exclude_history, input_map=index)
    evaluators = {which: Evaluator(split, which, width, cfg.eval.ks, sampled=(), sample_seed=cfg.eval.sample_seed,
                                   batch_size=cfg.eval.batch_size, device=device,
                                   max_users=cfg.eval.valid_max_users if which == "valid" else 0,
                                   repeat_targets=cfg.eval.repeat_targets) for which in ("valid", "test")}
    validate = (lambda m: c2dsr["valid"].run(m)) if c2dsr else (lambda m: evaluators["valid"].run(score_fn(m, "valid")))
    with store.claim_run_dir(out, to_dict(cfg), resume=cfg.training.resume, overwrite=cfg.overwrite, log=log):
        prepare_out_dir(out, cfg, cfg.training.resume)
        log(f"data {folder.name} target {cfg.data.target} ({views.target_name}): {merged.n_users} merged sequences "
            f"over {n_t} target + {merged.n_items - n_t} other items; C2DSR lines: "
            f"{', '.join(f'{k} {len(v)}' for k, v in c2dsr.items()) or 'not used'} -> {out}")
        meta = {"kind": model.kind, "model_args": model.model_args, "config": to_dict(cfg),
                "data_fingerprint": merged.fingerprint()}
        train_rows = CausalDataset(train, width, device=device, prefixes=cfg.model.train_samples == "prefixes",
                                   repeat_padding=cfg.model.repeat_padding)
        result = fit(model, train_rows, validate, cfg.training, out, device=device, seed=cfg.seed, checkpoint_meta=meta,
                     log=log)
        model.eval()
        test = evaluators["test"]
        results = {
            "domain": domain, "target": cfg.data.target, "run_dir": str(out), "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "train_seconds": round(result.seconds, 2), "threads": result.threads,
            "sec_per_epoch": mean_epoch_seconds(out), "valid": result.best_valid,
            "test_full": test.run(score_fn(model, "test")),
            "test_full_leak_controlled": leak_controlled_metrics(test, split, cfg.eval.ks),
            "popularity_full": test.run(popularity_score_fn(split)),
            "c2dsr_lines": {k: len(v) for k, v in c2dsr.items()}, "checkpoint": str(out / "best.pt"),
        }
        if c2dsr:
            results.update(c2dsr_test(c2dsr["test"], model, data, split, out))
        if is_main():
            from core.provenance import run_record

            results["run"] = run_record(cfg, device=device, threads=result.threads, started=result.started,
                                        data_paths=[folder], data_fingerprint=meta["data_fingerprint"])
            store.atomic_write_json(out / "results.json", results)
    return results


def main(argv=None) -> int:
    cfg, _ = parse_config(MergedConfig, argv, __doc__, DEFAULT_CONFIG)
    res = train_merged(cfg)
    main_rank = is_main()
    cleanup()
    if main_rank:
        print_test(res, cfg.eval.c2dsr_negatives)
    return 0


if __name__ == "__main__":
    run(main)
