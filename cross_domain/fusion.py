"""Late fusion of the target-only and merged-domain models (stage ``fusion-<S>-<T>``, rows
``fusion``): a user's score of target item i is

    (1 - w) * log p_target(i) + w * log p_merged(i)

(each model's softmax over the target catalog), with one weight for cold users and one for
warm users, each the best of ``WEIGHTS`` on validation NDCG@10. Whether a user is cold is
known at serving time (how many target items they have), so a per-group weight uses nothing
the test holds. The two models stay as trained (``train-target-baseline`` and
``train-target-merged`` with the same config and run name); nothing is trained here.

The control (stage ``ensemble-<S>-<T>``, rows ``ensemble``): the same fusion of two
target-only baselines (two seeds), which gains what any two-model ensemble gains; the
fusion's gain over it is what the source domain adds.

Why: the two models fail on different users. On Food-Kitchen the target-only model is far
ahead on warm users and at popularity level where the target history says nothing; the
merged model is far ahead there and behind on warm users. Fused, cold users gain 13-19% over
the target-only ensemble in both directions (``benchmarks/README.md``, "Fusion").
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from core import store
from core.errors import ConfigError
from core.evaluation import Evaluator
from core.metrics import rank_metrics
from core.runs import start_run
from cross_domain.data import cold_protocol, load_domains
from cross_domain.evaluate import score_fn, test_report
from cross_domain.merged import merged_data, merged_score_fn
from cross_domain.transfer import claim_stage, load_trained, stage_dir

WEIGHTS = tuple(i / 10 for i in range(11))  # 0: target-only model alone, 1: merged model alone


def fused_score_fn(target_fn, merged_fn, cold: torch.Tensor, w_cold: float, w_warm: float):
    """Evaluator scoring function of the fusion; ``cold``: bool by user index."""
    def score(inputs, users):
        a = torch.log_softmax(target_fn(inputs, users).float(), dim=1)
        b = torch.log_softmax(merged_fn(inputs, users).float(), dim=1)
        w = torch.where(cold[users], w_cold, w_warm).to(a.dtype)[:, None]
        out = (1 - w) * a + w * b
        out[:, 0] = -torch.inf  # the padding column, the only -inf one (where 0 * -inf made it nan)
        return out
    return score


def choose_weights(run_valid, cold_of_users, weights=WEIGHTS, metric: str = "NDCG@10") -> dict:
    """Best weight per user group on validation. ``run_valid(w)`` -> (users, 0-based ranks) of a
    validation pass with weight ``w`` for everyone; ``cold_of_users(users)`` -> bool flags.
    Ties go to the smaller weight (the target-only side)."""
    k = int(metric.split("@")[1])
    grid = {"cold": [], "warm": []}
    for w in weights:
        users, ranks = run_valid(w)
        ndcg = rank_metrics(torch.as_tensor(ranks), [k])[f"NDCG@{k}"].numpy()
        cold = cold_of_users(users)
        grid["cold"].append(float(ndcg[cold].mean()) if cold.any() else 0.0)
        grid["warm"].append(float(ndcg[~cold].mean()) if (~cold).any() else 0.0)
    best = {group: weights[int(np.argmax(values))] for group, values in grid.items()}
    return {"w_cold": best["cold"], "w_warm": best["warm"], "weights": list(weights),
            "valid_cold": grid["cold"], "valid_warm": grid["warm"], "metric": metric}


def fuse(cfg, partner_run: str | None = None, log=print) -> dict:
    """The fusion of this run's baseline and merged models; with ``partner_run``, the control
    instead: this run's baseline fused with the baseline of run ``partner_run`` (another seed),
    a target-only ensemble that shows what fusing two models gains without the source."""
    ctx = start_run(cfg.device, cfg.seed, threads=cfg.training.threads, log=log)  # no fit here to set the threads
    device, log = ctx.device, ctx.log
    dom = load_domains(cfg.data)
    proto = cold_protocol(dom.target, cfg.cold.k, cfg.cold.fraction, cfg.cold.seed)
    fingerprint = proto.train.fingerprint()
    target_model, side, target_path = load_trained(cfg, dom, "baseline", fingerprint, device)
    cold = torch.as_tensor(proto.is_cold, device=device)
    if partner_run:
        if partner_run == cfg.run_name:
            raise ConfigError("--partner-run must name another run (another seed's baseline), not this one")
        partner, _, partner_path = load_trained(dataclasses.replace(cfg, run_name=partner_run), dom, "baseline",
                                                fingerprint, device)
        kind, partner_fn = "ensemble", lambda split: score_fn(partner, side)
    else:
        partner, _, partner_path = load_trained(cfg, dom, "merged", fingerprint, device)
        merged = merged_data(dom, proto, cfg.model.maxlen - 1)
        rows = {split: torch.as_tensor(r, device=device) for split, r in (("valid", merged.valid_rows),
                                                                          ("test", merged.test_rows))}
        kind, partner_fn = "fusion", lambda split: merged_score_fn(partner, rows[split], merged.n_target)

    def scorer(split: str, w_cold: float, w_warm: float):
        return fused_score_fn(score_fn(target_model, side), partner_fn(split), cold, w_cold, w_warm)

    e = cfg.eval
    # every validation user, not the training-time sample: two weights are chosen here, once
    valid = Evaluator(proto.valid, "valid", cfg.model.maxlen - 1, e.ks, sampled=(), sample_seed=e.sample_seed,
                      batch_size=e.batch_size, device=device, repeat_targets=e.repeat_targets)

    def run_valid(w: float):
        valid.run(scorer("valid", w, w))
        return valid.last_ranks

    out = stage_dir(cfg, dom, kind)
    log(f"{kind} of {target_path} and {partner_path}: choosing the weights on {len(valid)} validation users")
    with claim_stage(cfg, out, log):
        choice = choose_weights(run_valid, lambda users: proto.is_cold[users])
        log(f"weights: cold {choice['w_cold']}, warm {choice['w_warm']} (validation NDCG@10 cold "
            f"{max(choice['valid_cold']):.4f}, warm {max(choice['valid_warm']):.4f})")
        report = test_report(scorer("test", choice["w_cold"], choice["w_warm"]), proto.test, proto.is_cold, cfg, device)
        res = {"run_dir": str(out), "stage": kind, "dataset": dom.folder.name, "source": dom.source_name,
               "target": dom.target_name, "models": {"baseline": str(target_path), "partner": str(partner_path)},
               "choice": choice, "test": report["metrics"], "users": report["users"], "protocol": proto.counts(),
               "threads": torch.get_num_threads()}
        from core.provenance import run_record

        res["run"] = run_record(cfg, device=device, threads=torch.get_num_threads(), data_paths=[dom.folder],
                                data_fingerprint=fingerprint)
        store.atomic_write_json(out / "results.json", res)
        store.atomic_save_npz(out / "test_ranks.npz", **report["ranks"])
    res["ranks"] = report["ranks"]
    return res
