"""The persona evaluation protocol (``python -m benchmarks.persona`` drives it; benchmarks/README.md).

- ``Sample``: one Persona4Rec sample (``sample/<dataset>/``): held-out histories, one target per
  user (``3.5_gt``), item texts (personas, else the item summary its reviews carry), popularity,
  a fixed-seed split of the users into folds; ``candidates`` (the target + sampled negatives the
  user never reviewed) and ``training_pairs`` (other folds' users only).
- ``rank_of_target`` / ``user_metrics``: ranks and HR/NDCG/MRR from ``core.metrics``, so ties
  are broken as everywhere else in the project: pessimistically (a target tied with k other
  candidates ranks below them).
- ``baseline_ranks`` (random, popularity), ``scorer_ranks`` (an encoder through ``Scorer``),
  ``synthetic_ranks`` (the planted-structure default: full ranking and the upstream candidates
  through ``scoring.rerank_lists``), ``known_answer`` (the example candidate files).
- ``Encoders``: the zero-shot base model and fresh copies trained on a fold's pairs;
  ``evaluate_fold``: one fold of the rerank (every model's ranks of the fold's users);
  ``PlantedSample``: the planted-structure default as a test set.
- ``pool_folds``: per-user metrics pooled over folds and averaged over seeds;
  ``bootstrap_ci``: 95% percentile intervals over resampled users; ``bootstrap_summary``: the
  intervals of every model and the paired differences on NDCG@10; ``summary_rows``: both as
  result rows; ``goal_verdict``: does the trained encoder beat zero-shot and random.
- ``cache_timings``: ``pipeline.build_caches`` from scratch and reused; ``speed_rows``: the
  throughput and timing rows averaged per dataset, device and AMP state, and the AMP speed-up.
"""
from __future__ import annotations

import json
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from core.errors import DataError
from core.metrics import rank_metrics, ranks_from_scores, sample_std

KS = (5, 10, 20)
METRICS = [f"{m}@{k}" for m in ("HR", "NDCG") for k in KS] + ["MRR"]
# the paired differences on NDCG@10 that ``bootstrap_summary`` reports (a minus b)
PAIRS = (("trained", "zero-shot"), ("trained", "random"), ("zero-shot", "random"), ("trained", "popularity"))


def stable_seed(*parts) -> list[int]:
    """A numpy seed sequence from strings/ints (stable across processes, unlike ``hash``)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def rank_of_target(scores) -> int:
    """0-based rank of ``scores[0]`` (the target) among all; ties pessimistic (``core.metrics``)."""
    s = torch.as_tensor(np.asarray(scores, dtype=np.float64)).view(1, -1)
    return int(ranks_from_scores(s, torch.zeros(1, dtype=torch.long))[0])


def user_metrics(ranks: Sequence[int | None], ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """Per-user HR/NDCG@k and MRR of one target at 0-based ``ranks`` (None = not in the list)."""
    r = np.array([np.inf if x is None else float(x) for x in ranks])
    m = rank_metrics(r, ks)
    return {name: m[name].numpy() for name in [f"{x}@{k}" for x in ("HR", "NDCG") for k in ks] + ["MRR"]}


def pooled_metrics(per_seed: dict[int, dict[str, int | None]]) -> tuple[list[str], dict[str, np.ndarray], dict]:
    """Ranks ``{seed: {user: rank}}`` (a seed's folds together) -> (users, each user's metrics
    averaged over the seeds that scored them, each metric's mean over users for every seed that
    scored them all)."""
    users = sorted({u for got in per_seed.values() for u in got})
    total, count = {m: np.zeros(len(users)) for m in METRICS}, np.zeros(len(users))
    seed_means: dict[str, list[float]] = {m: [] for m in METRICS}
    for _seed, got in sorted(per_seed.items()):
        mask = np.array([u in got for u in users])
        vals = user_metrics([got.get(u) for u in users])
        for m in METRICS:
            total[m][mask] += vals[m][mask]
            if mask.all():
                seed_means[m].append(float(vals[m].mean()))
        count += mask
    return users, {m: total[m] / count for m in METRICS}, seed_means


def bootstrap_ci(values: np.ndarray, idx: np.ndarray) -> tuple[float, float, np.ndarray]:
    """95% percentile interval of the mean of ``values`` over the resamples ``idx`` [B, n]."""
    boots = values[idx].mean(1)
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)), boots


def pool_folds(records: Sequence[dict]) -> dict[str, dict]:
    """Per model, the per-user ranks of its folds pooled: ``records`` hold one model, fold and
    seed each (``model``, ``seeds`` = [seed], ``users``, ``ranks``, optional ``fold`` and
    ``settings``: the ``user_ranks`` rows of ``python -m benchmarks.persona rerank``). Per model:
    ``users``, ``values`` and ``seed_means`` (``pooled_metrics``), ``seeds``, ``folds``,
    ``settings`` (each distinct setting but ``limit`` -> its folds), ``limited`` (a fold scored
    only some of its users) and its ``records``. A user scored by two folds of one seed raises
    ``DataError``."""
    out: dict[str, dict] = {}
    for model in sorted({r["model"] for r in records}):
        mine = [r for r in records if r["model"] == model]
        per_seed: dict[int, dict[str, object]] = {}
        folds, settings = set(), {}
        for r in mine:
            seed = r["seeds"][0]
            got = per_seed.setdefault(seed, {})
            for u, k in zip(r["users"], r["ranks"]):
                if u in got:
                    raise DataError(f"{model} seed {seed}: user {u} scored by two folds; rerun with one fold layout")
                got[u] = k
            folds.add(r.get("fold"))
            key = json.dumps({k: v for k, v in (r.get("settings") or {}).items() if k != "limit"}, sort_keys=True)
            settings.setdefault(key, []).append(r.get("fold"))
        users, values, seed_means = pooled_metrics(per_seed)
        out[model] = {"users": users, "values": values, "seeds": sorted(per_seed), "seed_means": seed_means,
                      "folds": sorted(f for f in folds if f is not None), "settings": settings, "records": mine,
                      "limited": any(r.get("settings", {}).get("limit") for r in mine)}
    return out


def bootstrap_summary(pooled: dict[str, dict], resamples: int, seed: int = 0,
                      pairs: Sequence[tuple[str, str]] = PAIRS) -> tuple[list[str], dict, dict]:
    """Over the users every model of ``pooled`` (``pool_folds``) scored, one set of ``resamples``
    bootstrap resamples of users serves every model and pair: (those users, per model and metric
    ``mean`` / ``ci_low`` / ``ci_high`` / ``se`` (the std of the resampled means), per pair (a, b)
    present the NDCG@10 difference a - b with ``mean`` / ``ci_low`` / ``ci_high`` / ``p_boot``,
    the share of resamples where it is <= 0)."""
    users = sorted(set.intersection(*(set(d["users"]) for d in pooled.values())))
    idx = np.random.default_rng(seed).integers(0, len(users), size=(resamples, len(users)))
    vecs: dict[str, dict[str, np.ndarray]] = {}
    stats: dict[str, dict[str, dict]] = {}
    for model, d in pooled.items():
        pos = {u: j for j, u in enumerate(d["users"])}
        sel = np.array([pos[u] for u in users], dtype=int)
        vecs[model] = {m: d["values"][m][sel] for m in METRICS}
        stats[model] = {}
        for m, v in vecs[model].items():
            low, high, boots = bootstrap_ci(v, idx)
            stats[model][m] = {"mean": float(v.mean()), "ci_low": low, "ci_high": high, "se": float(boots.std(ddof=1))}
    diffs = {}
    for a, b in pairs:
        if a in vecs and b in vecs:
            diff = vecs[a]["NDCG@10"] - vecs[b]["NDCG@10"]
            low, high, boots = bootstrap_ci(diff, idx)
            diffs[(a, b)] = {"mean": float(diff.mean()), "ci_low": low, "ci_high": high, "p_boot": float((boots <= 0).mean())}
    return users, stats, diffs


def summary_rows(records: Sequence[dict], resamples: int, seed: int = 0,
                 command: Callable[[dict], str] = lambda d: d["records"][0]["command"]) -> tuple[list[dict], dict]:
    """The result rows of one dataset's and protocol's ``user_ranks`` records (``pool_folds``,
    ``bootstrap_summary`` over ``resamples`` resamples): per model and metric the mean over users,
    its std over seeds (``seed_means``), 95% interval and standard error; per pair the paired
    NDCG@10 difference (command ``summarize``). A model's rows carry the devices of its records
    and ``command(its pool_folds entry)``. Also returns ``pool_folds``' output ({} for no records)."""
    pooled = pool_folds(records)
    if not pooled:
        return [], {}
    users, stats, diffs = bootstrap_summary(pooled, resamples, seed)

    def head(model: str, metric: str, value: float, std: float, cmd: str) -> dict:
        d = pooled[model]
        return {"dataset": records[0]["dataset"], "model": model, "protocol": records[0]["protocol"],
                "metric": metric, "value": value, "std": std, "seeds": d["seeds"],
                "device": "; ".join(sorted({r["device"] for r in d["records"]})), "command": cmd}

    note = f"{len(users)} users: a small sample, read the intervals"
    paired = "paired over users; p_boot = share of bootstrap resamples with difference <= 0"
    rows = [head(model, m, s["mean"], sample_std(pooled[model]["seed_means"][m]), command(pooled[model]))
            | {"ci_low": s["ci_low"], "ci_high": s["ci_high"], "se_users": s["se"], "users": len(users),
               "folds": pooled[model]["folds"], "bootstrap": resamples, "note": note}
            for model, per_metric in stats.items() for m, s in per_metric.items()]
    # the same bootstrap resamples of users for both models
    rows += [head(a, f"NDCG@10_minus_{b}", t["mean"], 0.0, "summarize")
             | {"ci_low": t["ci_low"], "ci_high": t["ci_high"], "p_boot": t["p_boot"], "users": len(users),
                "bootstrap": resamples, "note": paired}
             for (a, b), t in diffs.items()]
    return rows, pooled


def goal_verdict(dataset: str, by: dict, planted: bool = False) -> str:
    """The goal "trained beats zero-shot and random on NDCG@10" on ``summary_rows`` of one dataset
    and protocol (``by``: (model, metric) -> row): met on the point estimates or not, and whether
    both paired differences' 95% intervals exclude 0; ``planted`` adds whether zero-shot beats random."""
    t, z, r = (by.get((m, "NDCG@10")) for m in ("trained", "zero-shot", "random"))
    if not (t and z and r):
        return f"{dataset}: incomplete"
    dz, dr = by.get(("trained", "NDCG@10_minus_zero-shot")), by.get(("trained", "NDCG@10_minus_random"))
    beats = t["value"] > z["value"] and t["value"] > r["value"]
    sure = dz and dr and dz["ci_low"] > 0 and dr["ci_low"] > 0
    text = (f"{dataset}: trained {t['value']:.3f}, zero-shot {z['value']:.3f}, random {r['value']:.3f}: "
            + ("met" if beats else "NOT met") + (" (both paired differences' 95% intervals exclude 0)" if sure else
                                                 " on the point estimates only (a paired difference's 95% interval "
                                                 "includes 0)" if beats else ""))
    if planted:
        zr = by.get(("zero-shot", "NDCG@10_minus_random"))
        text += f"; zero-shot > random: {'yes' if z['value'] > r['value'] else 'no'}" + (
            f" (interval [{zr['ci_low']:.3f}, {zr['ci_high']:.3f}])" if zr else "")
    return text


class Sample:
    """One dataset's sample (``root/sample/<dataset>/``): see the module docstring."""

    def __init__(self, root: str | Path, dataset: str, fields: str = "N,D,I", pool: str = "reviewed",
                 folds: int = 5, fold_seed: int = 0) -> None:
        from core.candidates import read_ground_truth
        from persona_training import schema, texts

        sample = Path(root) / "sample" / dataset
        self.dataset = dataset
        self.data = schema.load_data({"persona": sample / "3.5_persona_with_summary.jsonl",
                                      "loo_history": sample / "3.5_history_loo.jsonl",
                                      "item_summary": sample / "2_summary.jsonl"}, dataset)
        full = schema.load_history(sample / "3.5_history.jsonl", dataset)
        gt = read_ground_truth(sample / "3.5_gt.jsonl")
        bad = [u for u, items in gt.items() if len(items) != 1]
        if bad:
            raise SystemExit(f"{sample / '3.5_gt.jsonl'}: users with more than one target: {bad[:3]}")
        self.target = {u: next(iter(items)) for u, items in gt.items()}
        self.users = sorted(self.data.history)
        missing = [u for u in self.users if u not in self.target]
        if missing:
            raise SystemExit(f"{len(missing)} history users have no target in 3.5_gt.jsonl, e.g. {missing[0]}")
        # item text: the item summaries carried by reviews are the same for every review of an item
        # (checked on both samples), so the full histories supply the held-out items' summaries too;
        # a review's own title/facets/rating never enter an item's text
        both = schema.PersonaData(dataset, personas=self.data.personas, items=self.data.items,
                                  history={**self.data.history, **{f"full:{u}": r for u, r in full.items()}})
        texts_all = texts.item_texts(both, fields, "summary", fallback="summary")
        reviewed = {r.item_id for h in (self.data.history, full) for rs in h.values() for r in rs}
        pool_items = set(texts_all) if pool == "all" else reviewed & set(texts_all)
        self.item_text = {i: [t for _rid, t in texts_all[i]]
                          for i in sorted(pool_items | (set(self.target.values()) & set(texts_all)))}
        self.from_personas = {i for i in self.item_text if i in self.data.personas}
        self.pool = sorted(pool_items)
        self.own = {u: {r.item_id for r in self.data.history[u]} | {r.item_id for r in full.get(u, [])} for u in self.users}
        self.scorable = [u for u in self.users if self.target[u] in self.item_text]
        self.popularity: dict[str, int] = {}
        for rs in self.data.history.values():
            for r in rs:
                self.popularity[r.item_id] = self.popularity.get(r.item_id, 0) + 1
        perm = np.random.default_rng(fold_seed).permutation(len(self.users))
        self.fold_of = {self.users[j]: pos % folds for pos, j in enumerate(perm)}

    def fold(self, fold: int) -> tuple[list[str], list[str], list[str]]:
        """(test users with a scorable target, test users without one, training users) of ``fold``."""
        test = [u for u in self.scorable if self.fold_of[u] == fold]
        skipped = [u for u in self.users if self.fold_of[u] == fold and u not in self.scorable]
        return test, skipped, [u for u in self.users if self.fold_of[u] != fold]

    def candidates(self, u: str, n_neg: int, seed: int) -> list[str]:
        """The target first, then ``n_neg`` items of the pool the user never reviewed."""
        others = [i for i in self.pool if i not in self.own[u] and i != self.target[u]]
        if len(others) < n_neg:
            raise SystemExit(f"user {u}: only {len(others)} items to sample {n_neg} negatives from")
        rng = np.random.default_rng(stable_seed(seed, u, "negatives"))
        return [self.target[u]] + [others[j] for j in rng.choice(len(others), n_neg, replace=False)]

    def training_pairs(self, users, seed: int, max_history: int, positions: str = "all") -> list:
        """``texts.Pair``s from the given users only: every prefix of a held-out history -> its
        next item (``positions="all"``) and the whole held-out history -> the held-out item; one
        text per target item (a persona picked by a fixed hash)."""
        from persona_training import texts

        pairs = []
        for u in users:
            reviews = self.data.history[u]
            steps = [(reviews[:j], reviews[j].item_id) for j in range(1, len(reviews))] if positions == "all" else []
            steps.append((reviews, self.target[u]))
            for prefix, item in steps:
                if item not in self.item_text:
                    continue
                hist = texts.history_texts(prefix, "summary", max_history, exclude_items=[item])
                if not hist:
                    continue
                options = self.item_text[item]
                target = options[zlib.crc32(f"{seed}:{u}:{item}".encode()) % len(options)]
                pairs.append(texts.Pair(hist, target, item, u))
        return pairs

    def histories(self, users, max_history: int) -> dict[str, list[str]]:
        from persona_training import texts

        return {u: texts.history_texts(self.data.history[u], "summary", max_history) for u in users}


def baseline_ranks(sample: Sample, users, cands: dict, seed: int) -> dict[str, dict[str, int]]:
    """``random`` (fixed-seed uniform scores per user) and ``popularity`` (held-out-history counts)."""
    return {"random": {u: rank_of_target(np.random.default_rng(stable_seed(seed, u, "random")).random(len(cands[u])))
                       for u in users},
            "popularity": {u: rank_of_target([sample.popularity.get(i, 0) for i in cands[u]]) for u in users}}


def scorer_ranks(scorer, hist: dict[str, list[str]], item_text: dict[str, list[str]], users, cands: dict) -> dict[str, int]:
    """Each user's target rank among their candidates by a ``scoring.Scorer`` (texts encoded once)."""
    scorer.embed(list(dict.fromkeys([t for u in users for t in hist[u]] +
                                    [t for u in users for i in cands[u] for t in item_text[i]])))
    return {u: rank_of_target(scorer.scores([hist[u]], [item_text[i] for i in cands[u]])[0]) for u in users}


def synthetic_ranks(score_fns: dict[str, Callable], test, target: dict, items, own: dict,
                    candidates: dict) -> dict[tuple[str, str], dict]:
    """Planted-structure protocols per model ``score_fns[name](user, items) -> scores``: ``full``
    (the target among every item outside the user's history) and ``candidates`` (the upstream list
    reranked by ``scoring.rerank_lists``, a 1-d "vector" carrying the score; ``upstream`` = as given)."""
    from persona_training.scoring import rerank_lists

    ranks: dict[tuple[str, str], dict] = {}
    for name, fn in score_fns.items():
        ranks[("full", name)] = {u: rank_of_target(fn(u, [target[u]] + [i for i in items if i != target[u] and i not in own[u]]))
                                 for u in test}
        reranked = {}
        for u in test:
            listed = [i for i, _s in candidates[u] if i]
            sc = dict(zip(listed, fn(u, listed)))
            out, _c = rerank_lists({u: candidates[u]}, lambda _u: np.ones(1, np.float32),
                                   lambda i: np.array([[sc[i]]], np.float32) if i in sc else None)
            reranked[u] = [e["item_id"] for e in out[u]]
        ranks[("candidates", name)] = {u: reranked[u].index(target[u]) if target[u] in reranked[u] else None for u in test}
    ranks[("candidates", "upstream")] = {u: [i for i, _s in candidates[u]].index(target[u]) for u in test}
    return ranks


def known_answer(root: str | Path, dataset: str, scorer: Callable, fields: str = "N,D,I", max_history: int = 20) -> dict:
    """The example files ``evaluation/<dataset>/{candidate,gt}.jsonl`` in their upstream order and
    reranked (``scoring.rerank_lists``; ``scorer()`` is called only if something can be scored: a
    candidate with personas for a user with a history in the sample). Returns the metrics of both
    (``core.candidates``), the rerank's counts and how many unscored entries left their slot."""
    from core.candidates import candidate_metrics, read_ground_truth, read_scored_candidates
    from persona_training import schema, texts
    from persona_training.scoring import as_ranked, rerank_lists

    root = Path(root)
    candidates = read_scored_candidates(root / "evaluation" / dataset / "candidate.jsonl")
    truth = read_ground_truth(root / "evaluation" / dataset / "gt.jsonl")
    upstream = candidate_metrics({u: [item for item, _s in rows] for u, rows in candidates.items()}, truth, list(KS))
    sample = root / "sample" / dataset
    data = schema.load_data({"persona": sample / "3.5_persona_with_summary.jsonl",
                             "loo_history": sample / "3.5_history_loo.jsonl"}, dataset)

    def user_vec(u):
        reviews = data.history.get(u)
        return None if not reviews else scorer().user_vectors([texts.history_texts(reviews, "summary", max_history)])[0]

    def item_rows(i):
        ps = data.personas.get(i)
        return None if not ps else scorer().embed([texts.persona_text(p, fields) for p in ps])

    reranked, counts = rerank_lists(candidates, user_vec, item_rows)
    moved = sum(1 for es in reranked.values() for j, e in enumerate(es) if not e["scored"] and e["upstream_rank"] != j + 1)
    return {"upstream": upstream, "reranked": candidate_metrics(as_ranked(reranked), truth, list(KS)),
            "counts": counts, "unscored_moved": moved}


@dataclass(frozen=True)
class Encoders:
    """The encoders the protocol compares, on one device: the base model (``zero-shot``) and
    fresh copies of it trained on a fold's pairs (``trained``); both score with
    ``max_seq_length`` tokens per text and ``agg`` over an item's personas. ``train`` (a
    ``persona_training.config.TrainSection``) says how a copy is trained (None: nothing is)."""
    model: str = "default"
    device: str = "cpu"
    amp: bool = True
    agg: str = "max"
    max_seq_length: int = 128
    train: object | None = None

    def base(self, max_seq_length: int | None = None):
        """The base model, cutting texts at ``max_seq_length`` tokens (default: the scoring length)."""
        from persona_training.encoder import load_encoder

        return load_encoder(self.model, self.device, self.max_seq_length if max_seq_length is None else max_seq_length)

    def scorer(self, model, agg: bool = True):
        """A ``scoring.Scorer`` of ``model`` (``agg`` false: the Scorer's own default)."""
        from persona_training.scoring import Scorer

        return Scorer(model, amp=self.amp, **({"agg": self.agg} if agg else {}))

    def trained(self, pairs, warmup: int | None = None, log: Callable[[str], None] = print):
        """A fresh base model trained on ``pairs`` as ``train`` says: (the model, set back to the
        scoring length, and the ``TrainResult``). ``warmup`` (a speed measurement): the model is
        loaded at the training length and trained that many untimed steps first."""
        from persona_training.encoder import train_pairs

        model = self.base(self.train.max_seq_length if warmup is not None else None)
        if warmup:
            train_pairs(pairs, replace(self.train, max_steps=warmup, log_every=max(1, warmup // 4)), model=model,
                        show_progress=False, log=lambda s: None)
        res = train_pairs(pairs, self.train, model=model, show_progress=False, log=log)
        model.max_seq_length = self.max_seq_length
        return model, res


def evaluate_fold(sample: Sample, fold: int, encoders: Encoders, zero_shot, *, negatives: int, sample_seed: int,
                  max_history: int, seed: int, train_max_history: int, pair_positions: str = "all", limit: int = 0,
                  log: Callable[[str], None] = print) -> dict:
    """One fold of the rerank: its scorable users (the first ``limit`` only if given) rank their
    target among ``negatives`` sampled items by ``random``, ``popularity``, ``zero_shot`` (a
    ``Scorer`` of the base model, shared by the folds) and a fresh encoder trained on the other
    folds' users (``training_pairs`` with ``seed``). Returns ``test`` / ``skipped`` /
    ``train_users``, ``candidates``, ``ranks`` (model -> {user: rank}), ``pairs``, the
    ``TrainResult`` (``train``) and the seconds of the zero-shot and trained scoring and of the fold."""
    t_fold = time.perf_counter()
    test, skipped, train_users = sample.fold(fold)
    test = test[:limit] if limit else test
    cands = {u: sample.candidates(u, negatives, sample_seed) for u in test}
    hist = sample.histories(test, max_history)
    ranks = baseline_ranks(sample, test, cands, sample_seed)
    t = time.perf_counter()
    ranks["zero-shot"] = scorer_ranks(zero_shot, hist, sample.item_text, test, cands)
    zero_shot_seconds = time.perf_counter() - t
    pairs = sample.training_pairs(train_users, seed, train_max_history, pair_positions)
    assert not {p.user_id for p in pairs} & set(test)
    model, res = encoders.trained(pairs, log=log)
    t = time.perf_counter()
    ranks["trained"] = scorer_ranks(encoders.scorer(model), hist, sample.item_text, test, cands)
    trained_seconds = time.perf_counter() - t
    return {"test": test, "skipped": skipped, "train_users": train_users, "candidates": cands, "ranks": ranks,
            "pairs": pairs, "train": res, "zero_shot_seconds": zero_shot_seconds, "trained_seconds": trained_seconds,
            "fold_seconds": time.perf_counter() - t_fold}


class PlantedSample:
    """The planted-structure default of ``persona_training.synthetic`` (seed ``data_seed``) as a
    test set: its test users (never in a training pair), one target each and their upstream
    candidates; item texts from the personas (``fields``), popularity over every history, the
    test users' last ``max_history`` interaction texts; training pairs from the selections."""

    def __init__(self, data_seed: int = 0, fields: str = "N,D,I", max_history: int = 20) -> None:
        from core.candidates import read_ground_truth, read_scored_candidates
        from persona_training import schema, synthetic, texts

        with tempfile.TemporaryDirectory(prefix="persona-syn-") as tmp:
            files = synthetic.generate(tmp, seed=data_seed)
            keys = ("persona", "loo_history", "selected", "item_summary")
            self.data = schema.load_data({k: files[k] for k in keys}, "synthetic", with_selections=True)
            meta = json.loads(files["meta"].read_text())
            self.target = {u: next(iter(i)) for u, i in read_ground_truth(files["gt_loo"]).items()}
            self.candidates = read_scored_candidates(files["candidates"])
        self.fields, self.max_history = fields, max_history
        self.test = sorted(u for u, m in meta["users"].items() if m["split"] == "test")
        self.items = sorted(self.data.personas)
        self.item_text = {i: [texts.persona_text(p, fields) for p in self.data.personas[i]] for i in self.items}
        self.popularity = Counter(r.item_id for rs in self.data.history.values() for r in rs)
        self.hist = {u: texts.history_texts(self.data.history[u], "summary", max_history) for u in self.test}
        self.own = {u: {r.item_id for r in self.data.history[u]} for u in self.test}

    def training_pairs(self, seed: int) -> tuple[list, dict]:
        """``texts.build_pairs`` from the selected personas, and its counts."""
        from persona_training import texts

        pairs, stats = texts.build_pairs(self.data, fields=self.fields, max_history=self.max_history,
                                         source="selected", seed=seed)
        assert not {p.user_id for p in pairs} & set(self.test)
        return pairs, stats

    def ranks(self, scorers: dict, seed: int) -> dict[tuple[str, str], dict]:
        """``synthetic_ranks`` of ``random`` (seeded by ``seed``), ``popularity`` and each
        ``Scorer`` of ``scorers`` (name -> scorer)."""
        def scored_by(s):
            return lambda u, its: s.scores([self.hist[u]], [self.item_text[i] for i in its])[0]

        score_fns = {"random": lambda u, its: np.random.default_rng(stable_seed(seed, u, "random")).random(len(its)),
                     "popularity": lambda u, its: np.array([self.popularity.get(i, 0) for i in its], float),
                     **{name: scored_by(s) for name, s in scorers.items()}}
        return synthetic_ranks(score_fns, self.test, self.target, self.items, self.own, self.candidates)


def cache_timings(dataset: str, data_dir: str | Path, data_seed: int = 0, log: Callable[[str], None] = print,
                  **rerank) -> tuple[dict, float, float]:
    """``pipeline.build_caches`` of one sample (``data_dir/sample/<dataset>``; ``synthetic``: the
    default files of ``data_seed``) in a temporary folder, from scratch and then again with both
    caches fresh: (the first call's info, its seconds, the second call's seconds). ``rerank``:
    ``RerankSection`` keys (``force`` is set here)."""
    from persona_training import synthetic
    from persona_training.config import DataSection, RerankSection, RerankStage
    from persona_training.pipeline import build_caches

    infos, seconds = [], []
    with tempfile.TemporaryDirectory(prefix="persona-cache-") as tmp:
        if dataset == "synthetic":
            files = synthetic.generate(Path(tmp) / "data", seed=data_seed)
            persona, history = files["persona"], files["loo_history"]
        else:
            sample = Path(data_dir) / "sample" / dataset
            persona, history = sample / "3.5_persona_with_summary.jsonl", sample / "3.5_history_loo.jsonl"
        data = DataSection(persona=str(persona), loo_history=str(history), out_root=str(Path(tmp) / "out"))
        for force in (True, False):
            t0 = time.perf_counter()
            _, _, info = build_caches(RerankStage(data=data, rerank=RerankSection(**rerank, force=force)), dataset,
                                      log=log)
            seconds.append(time.perf_counter() - t0)
            infos.append(info)
    assert not infos[1]["interactions"]["built"] and not infos[1]["personas"]["built"]
    return infos[0], seconds[0], seconds[1]


# the speed rows ``speed_rows`` summarizes, the fields they are grouped by, and the settings a
# summary row carries: fields of the speed and cache rows, and of a rerank or synthetic row's settings
SPEED_METRICS = ("pairs_per_s", "cache_build_s", "cache_reuse_s", "fold_seconds")
SPEED_GROUP = ("dataset", "model", "protocol", "metric", "device", "amp", "piece")
SPEED_FIELDS = ("batch_size", "max_seq_length", "train_layers", "train_max_history", "texts_per_pair",
                "interaction_rows", "persona_rows", "devices")
SETTING_FIELDS = ("batch_size", "train_max_seq_length", "train_layers", "train_max_history", "steps")


def speed_rows(runs: Sequence[dict], command: Callable[[str, bool], str]) -> list[dict]:
    """Mean ± std (sample std) of each ``SPEED_METRICS`` row with a value per ``SPEED_GROUP``,
    with ``command(the first row's command, several rows)``, then the AMP speed-up
    (``amp_speedup``) of each ``pairs_per_s`` with AMP on over the same dataset's without it on
    the same GPU."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r["metric"] in SPEED_METRICS and r["value"] is not None:
            groups.setdefault(tuple(r.get(k) for k in SPEED_GROUP), []).append(r)
    out = []
    for key, rs in sorted(groups.items(), key=lambda kv: [str(x) for x in kv[0]]):
        ds, model, proto, metric, device, amp, piece = key
        values, settings = [r["value"] for r in rs], rs[0].get("settings") or {}
        keep = {k: rs[0][k] for k in SPEED_FIELDS if k in rs[0]}
        keep |= {k: settings[k] for k in SETTING_FIELDS if k in settings}
        out.append({"dataset": ds, "model": model, "protocol": proto, "metric": metric, "value": float(np.mean(values)),
                    "std": sample_std(values), "seeds": sorted({s for r in rs for s in r["seeds"]}), "device": device,
                    "command": command(rs[0]["command"], len(rs) > 1), "amp": amp, "runs": len(rs), "piece": piece,
                    **keep})
    gpu = lambda r: r["device"].split(", AMP")[0]  # noqa: E731
    for r in [x for x in out if x["metric"] == "pairs_per_s" and x.get("amp") is True]:
        off = [x for x in out if x["metric"] == "pairs_per_s" and x.get("amp") is False and x["dataset"] == r["dataset"]
               and gpu(x) == gpu(r)]
        if off:
            out.append({"dataset": r["dataset"], "model": "trained", "protocol": "full", "metric": "amp_speedup",
                        "value": r["value"] / off[0]["value"], "std": 0.0, "seeds": r["seeds"] or [], "device": gpu(r),
                        "command": "summarize", "amp": True})
    return out
