"""Test reports of the cross-domain models: all / cold / warm users under full ranking and
the sampled protocol, per-user ranks, and the paired test between two models.

The ranks come from ``core.evaluation.Evaluator`` (one pass over all test users, so the
sampled negatives are the same fixed-seed draws for every model); subset metrics are the
core's ``rank_metrics`` averaged over the subset's users. From the saved ranks
(``test_ranks.npz``): ``masked_reports`` scores any subset of the users (``cold_none_mask``:
the cold users cut to no target item at all), ``seed_averaged_test`` compares two models on
per-user NDCG@10 averaged over seeds (``seed_averaged_runs``: over the seeds both ran). The goal
of issues 8 and 23 on a subset: ``cold_start_goal`` (as text: ``goal_text``, ``transfer_verdict``,
``best_control_check``).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from core.data.leakage import leak_free_users
from core.data.splits import Split
from core.dist import dist_info
from core.errors import DataError
from core.evaluation import Evaluator
from core.metrics import ndcg_by_id, rank_metrics, seed_averaged_paired
from cross_domain.data import SourceInputs, TargetProtocol, cold_protocol, load_domains

SUBSETS = ("all", "cold", "warm")
POOLED = "seed-averaged NDCG@10 per user"  # the `test` of a summary's paired test over the seeds' ranks


def score_fn(model, side: SourceInputs):
    """Evaluator scoring function: begin token + history, fused with the user's source side."""
    return lambda inputs, users: model.full_scores(model.with_bos(inputs), **side(users))


def subset_metrics(ranks: np.ndarray, mask: np.ndarray, ks) -> dict[str, float]:
    if not mask.any():
        return {}
    return {name: float(v.mean()) for name, v in rank_metrics(ranks[mask], ks).items()}


def _gather(array: np.ndarray) -> np.ndarray:
    """All ranks' shares of a per-user array (torchrun); the array itself otherwise."""
    import torch.distributed as dist

    if dist_info()[1] == 1:
        return array
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


def report_from_ranks(users: np.ndarray, ranks: dict[str, np.ndarray], is_cold: np.ndarray, ks) -> dict:
    cold = is_cold[users]
    masks = {"all": np.ones(len(users), dtype=bool), "cold": cold, "warm": ~cold}
    return {"metrics": {p: {s: subset_metrics(r, masks[s], ks) for s in SUBSETS} for p, r in ranks.items()},
            "users": {s: int(m.sum()) for s, m in masks.items()},
            "ranks": {"users": users, "cold": cold, **ranks}}


@torch.no_grad()
def test_report(score, split: Split, is_cold: np.ndarray, cfg, device, which: str = "test") -> dict:
    """``{"metrics": {protocol: {subset: {metric: value}}}, "users": {subset: n}, "ranks": {...}}``
    for a scoring function on ``split`` (protocols ``full`` and ``sampled-N``)."""
    e = cfg.eval
    ev = Evaluator(split, which, cfg.model.maxlen - 1, e.ks, sampled=e.sampled, sample_seed=e.sample_seed,
                   batch_size=e.batch_size, device=device, repeat_targets=e.repeat_targets)
    ev.run(score)
    users, full = ev.last_ranks
    ranks = {"full": _gather(full), **{f"sampled-{n}": _gather(r) for n, r in ev.last_sampled_ranks.items()}}
    return report_from_ranks(_gather(users), ranks, is_cold, e.ks)


def protocol_report(model, proto: TargetProtocol, side: SourceInputs, cfg, device) -> dict:
    model.eval()
    return test_report(score_fn(model, side), proto.test, proto.is_cold, cfg, device)


def paired_test(base: np.ndarray, other: np.ndarray, k: int = 10) -> dict:
    """Wilcoxon signed-rank test over users on NDCG@k (``other`` minus ``base``; same users,
    same order: per-user 0-based ranks)."""
    from scipy import stats

    a = rank_metrics(base, [k])[f"NDCG@{k}"].numpy()
    b = rank_metrics(other, [k])[f"NDCG@{k}"].numpy()
    diff = b - a
    out = {"users": int(len(diff)), "mean_diff": float(diff.mean()) if len(diff) else 0.0,
           "better": int((diff > 0).sum()), "worse": int((diff < 0).sum())}
    out["p_wilcoxon"] = float(stats.wilcoxon(b, a, zero_method="wilcox").pvalue) if np.count_nonzero(diff) else 1.0
    return out


def paired_tests(base: dict, other: dict, k: int = 10) -> dict:
    """``paired_test`` for every protocol and subset of two reports on the same users."""
    rb, ro = base["ranks"], other["ranks"]
    if not np.array_equal(rb["users"], ro["users"]):
        raise ValueError("the two reports rank different users")
    masks = {"all": np.ones(len(rb["users"]), dtype=bool), "cold": rb["cold"], "warm": ~rb["cold"]}
    protocols = [p for p in rb if p not in ("users", "cold")]
    return {p: {s: paired_test(rb[p][m], ro[p][m], k) for s, m in masks.items() if m.any()} for p in protocols}


def _target_protocol(cfg):
    target = load_domains(cfg.data).target
    return target, cold_protocol(target, cfg.cold.k, cfg.cold.fraction, cfg.cold.seed)


def user_masks(cfg) -> dict[str, np.ndarray]:
    """[n_users + 1] bool masks by 1-based user index under the cold protocol of ``cfg`` (the same
    for every seed), from one load of the data:

    - ``cold``: the protocol's cold users;
    - ``cold-none``: the cold users cut to no target item at all (only the source can say
      anything about them);
    - ``leak-controlled``: the user's test transition (the item before the test target in the
      uncut sequence -> the target) stands verbatim in no training sequence of the protocol
      (``core.data.leakage``). Food-Kitchen's "users" are overlapping windows of the same people:
      this is the view where another window of the same person cannot hand the model the answer.
      The uncut transition is used for cut cold users too, so that the view is the same set of
      events whatever a model is shown;
    - ``cold-leak-controlled``: the cold users among those."""
    target, proto = _target_protocol(cfg)
    users = proto.test.test.users
    free = leak_free_users(proto.train, None, target, users, target.lengths[users - 1] - 1)
    return {"cold": proto.is_cold, "cold-none": proto.kept == 0, "leak-controlled": free,
            "cold-leak-controlled": free & proto.is_cold}


@lru_cache
def config_user_masks(path: str) -> dict[str, np.ndarray]:
    """``user_masks`` of the config file ``path`` (cached: the cold split does not depend on the seed)."""
    from cross_domain.config import load_file

    return user_masks(load_file(path))


def cold_none_mask(cfg) -> np.ndarray:
    """``user_masks(cfg)["cold-none"]``."""
    return _target_protocol(cfg)[1].kept == 0


def leak_free_mask(cfg) -> np.ndarray:
    """``user_masks(cfg)["leak-controlled"]``."""
    return user_masks(cfg)["leak-controlled"]


def subset_masks(cfg, users: np.ndarray, cold: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks over test users (``users``, 1-based, with their ``cold`` flags as in
    ``test_ranks.npz``): all, cold, warm and the finer subsets of ``user_masks``."""
    by_user = user_masks(cfg)
    return {"all": np.ones(len(users), bool), "cold": cold, "warm": ~cold,
            **{name: by_user[name][users] for name in ("cold-none", "leak-controlled", "cold-leak-controlled")}}


def popularity_report(proto: TargetProtocol, cfg, device="cpu") -> dict:
    """``test_report`` of the popularity baseline (counts of ``proto``'s training data)."""
    from core.evaluation import popularity_score_fn
    from cross_domain.data import training_split

    return test_report(popularity_score_fn(training_split(proto.train)), proto.test, proto.is_cold, cfg, device)


def popularity_ranks(cfg, device="cpu") -> dict:
    """``popularity_report`` ranks on the cold protocol of ``cfg``."""
    return popularity_report(_target_protocol(cfg)[1], cfg, device)["ranks"]


def popularity_ndcg(cfg, users: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Full-ranking NDCG@10 of ``popularity_ranks`` on each non-empty subset of ``masks`` (over the test
    ``users`` of a model's ``test_ranks.npz``, which the popularity baseline must have scored too)."""
    pop = popularity_ranks(cfg)
    if not np.array_equal(pop["users"], users):
        raise DataError("popularity scored other users than the baseline's test_ranks.npz")
    return {s: subset_metrics(pop["full"], m, cfg.eval.ks)["NDCG@10"] for s, m in masks.items() if m.any()}


def masked_reports(ranks: dict, mask: np.ndarray, ks, base: str = "baseline") -> dict:
    """Saved test ranks (model -> its ``test_ranks.npz``, the same users in the same order)
    restricted to the users where ``mask`` is true: ``{model: {protocol: (metrics, paired test
    against base)}}``, the test None for ``base`` itself; empty when ``mask`` selects nobody."""
    if not mask.any():
        return {}
    return {kind: {name: (subset_metrics(z[name], mask, ks),
                          None if kind == base else paired_test(ranks[base][name][mask], z[name][mask]))
                   for name in z if name not in ("users", "cold")} for kind, z in ranks.items()}


def seed_averaged_test(base_files: list, other_files: list, protocol: str, subset: str,
                       user_mask: np.ndarray | None = None) -> dict:
    """``core.metrics.seed_averaged_paired`` on per-user NDCG@10 under ``protocol``, from one
    ``test_ranks.npz`` per seed and model (``other`` minus ``base``, seeds in the same order);
    ``subset``: all, cold, warm, or any finer one given as ``user_mask`` ([n_users + 1] bool by
    user index, e.g. ``cold_none_mask``, ``leak_free_mask``; the cold protocol is the same for
    every seed)."""
    def per_user(path) -> dict:
        z = np.load(path)
        flags = {"all": np.ones(len(z["users"]), bool), "cold": z["cold"], "warm": ~z["cold"]}
        mask = flags[subset] if subset in flags else user_mask[z["users"]]
        return ndcg_by_id(z["users"][mask], z[protocol][mask])

    return seed_averaged_paired([per_user(p) for p in base_files], [per_user(p) for p in other_files])


def seed_averaged_runs(base: dict, other: dict, protocol: str, subset: str, user_mask=None) -> dict | None:
    """``seed_averaged_test`` over the seeds both models ran (``{seed: test_ranks.npz}`` each), with
    those ``seeds``: None with fewer than two, or when a file of one of them is gone. ``user_mask``:
    as there, or a function that returns it (called only when the test runs)."""
    seeds = sorted(set(base) & set(other))
    if len(seeds) < 2 or not all(Path(runs[s]).is_file() for runs in (base, other) for s in seeds):
        return None
    mask = user_mask() if callable(user_mask) else user_mask
    test = seed_averaged_test([base[s] for s in seeds], [other[s] for s in seeds], protocol, subset, mask)
    return {**test, "seeds": seeds}


def pooled_test_rows(runs: list[dict], stored: list[dict], pooled, device: str) -> list[dict]:
    """One paired-test row per dataset, model, protocol, subset and model compared with (the baseline; a fusion
    also its control, the ensemble) of a summary's per-seed rows ``runs``: the seed-averaged test ``pooled(dataset,
    model, protocol, subset, base)`` (``seed_averaged_runs``, None where the ranks are gone); else the row of an
    earlier summary (``stored``: computed where they were; a fresh clone has none) when it covers the same seeds;
    else, against the baseline, the largest per-seed p. ``device``: the new rows' own."""
    tests = {}  # (dataset, model, protocol, subset, the model compared with) -> per-seed test rows
    for r in runs:
        if r["metric"] == "p_wilcoxon_vs_baseline":
            for base in ("baseline", "ensemble") if r["model"].startswith("fusion") else ("baseline",):
                tests.setdefault((r["dataset"], r["model"], r["protocol"], r["subset"], base), []).append(r)
    stored = {(r["dataset"], r["model"], r["protocol"], r["subset"], r["metric"]): r
              for r in stored if r.get("test") == POOLED}
    out = []
    for (label, kind, proto, subset, base), rs in sorted(tests.items()):
        test = pooled(label, kind, proto, subset, base)
        metric, seeds = f"p_wilcoxon_vs_{base}", sorted(s for r in rs for s in r["seeds"])
        old = stored.get((label, kind, proto, subset, metric))
        if test is None and old and (base != "baseline" or old["seeds"] == seeds):
            out.append(old)
        elif test or base == "baseline":  # against the ensemble: the pooled test only (no per-seed rows)
            by_seed = sorted(rs, key=lambda r: r["seeds"])
            per_seed = {"per_seed_p": [r["value"] for r in by_seed]} if base == "baseline" else {}
            out.append({"dataset": label, "model": kind, "protocol": proto, "metric": metric,
                        "value": test["wilcoxon_p"] if test else max(r["value"] for r in rs), "std": 0.0,
                        "seeds": seeds if base == "baseline" else test["seeds"], "device": device,
                        "command": rs[0]["command"], "subset": subset, "test": POOLED if test else "largest per-seed p",
                        **per_seed, "mean_ndcg10_diff": test["mean_diff"] if test
                        else float(np.mean([r["mean_ndcg10_diff"] for r in rs]))})
    return out


def cold_start_goal(subset: str, gain: float, p: float | None, min_gain: float = 0.05, alpha: float = 0.05) -> bool:
    """The cold-start goal (issues 8 and 23) on one subset, from a model's relative NDCG@10 change
    over the model it is compared with (``gain``) and the paired test's p (None: no test): on warm
    users, not significantly worse; on any other subset (cold, leak-controlled, ...), a gain above
    ``min_gain`` with p < ``alpha``."""
    if subset == "warm":
        return gain >= 0 or p is None or p >= alpha
    return gain > min_gain and p is not None and p < alpha


def goal_text(subset: str, gain: float, p: float | None, over: str = "") -> str:
    """``cold_start_goal`` as text: ``cold +6.1% over ensemble (p=0.003) met`` (``MISSED``; warm
    users: ``not hurt`` / ``HURT``); ``over``: the model compared with, if it is to be named."""
    ok = cold_start_goal(subset, gain, p)
    mark = ("not hurt" if ok else "HURT") if subset == "warm" else ("met" if ok else "MISSED")
    return (f"{subset} {100 * gain:+.1f}%" + (f" over {over}" if over else "")
            + (f" (p={p:.2g})" if p is not None else "") + f" {mark}")


def best_control_check(subset: str, model: dict, controls: dict[str, dict], p) -> tuple[str, bool] | None:
    """``goal_text`` and ``cold_start_goal`` of a model's NDCG@10 ({seed: value}) over the best (highest mean) of the
    ``controls`` ({name: {seed: value}}) that ran all of its seeds, with ``p(name)``: the paired test's p (or None);
    None without one."""
    over = {k: [x for s, x in v.items() if s in model] for k, v in controls.items() if model and set(model) <= set(v)}
    if not over:
        return None
    best = max(over, key=lambda k: float(np.mean(over[k])))
    gain = float(np.mean(list(model.values()))) / float(np.mean(over[best])) - 1
    return goal_text(subset, gain, p(best), over=best), cold_start_goal(subset, gain, p(best))


def transfer_verdict(label: str, by: dict) -> str:
    """Issue 8's goal on one dataset's summary rows (``by``: (dataset, model, protocol, subset,
    metric) -> row): per transfer model and protocol, ``goal_text`` of its cold and warm NDCG@10
    against the target-only baseline's, with the paired test ``p_wilcoxon_vs_baseline``."""
    parts = []
    for kind in ("transfer", "ptupcdr"):
        for proto in ("full", "sampled-100"):
            rows = (("baseline", "NDCG@10"), (kind, "NDCG@10"), (kind, "p_wilcoxon_vs_baseline"))
            cells = {s: [by.get((label, m, proto, s, metric)) for m, metric in rows] for s in ("cold", "warm")}
            if all(all(c) for c in cells.values()):
                parts.append(f"{kind} {proto}: " + ", ".join(
                    goal_text(s, m["value"] / b["value"] - 1, p["value"]) for s, (b, m, p) in cells.items()))
    return f"{label}: " + ("; ".join(parts) if parts else "not run")
