"""``Pipeline``: the universal recommender as one object (train, save, load, predict).

    from universal import Pipeline
    pipe = Pipeline(cfg)                      # a UniversalConfig (core.config.load_config)
    pipe.add_encoder("audio", MyEncoder(128, 64))   # a new feature type, before fit/load
    report = pipe.fit("data.json")            # split, features, core.train.fit, test once
    out = pipe.predict("input.json", top_k=10)
    pipe = Pipeline.load("state_dict/universal/<dataset>/<run>/best.pt")

Training rows are the training interactions; each gets ``negative_sampling_ratio`` items drawn
with the fit loop's fixed-seed generator among the items the user has *not* interacted with in
training (held-out items are unknown to the sampler: excluding them would tell the model
which items come next).
"""
from __future__ import annotations

import json
import math
import resource
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core import store
from core.cli import resolve_device
from core.config import load_config, to_dict
from core.dist import is_main
from core.errors import CheckpointError, ConfigError, DataError
from core.runs import start_run
from core.train import fit, prepare_out_dir
from universal.config import UniversalConfig, dataset_name
from universal.data import BUILTIN_TYPES, Dataset, load_dataset, subsample_users
from universal.evaluate import TRAIN, HoldoutEvaluator, pairs_by_user, popularity_score_fn, temporal_holdout
from universal.features import build_tables, fit_schema, text_model
from universal.model import UniversalModel


def gather(table: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in table.items()}


class PairKeys:
    """Membership of (user, item) pairs via one sorted key array (no dense user x item matrix)."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_items: int) -> None:
        self.stride = n_items + 1
        self.keys = torch.sort(users * self.stride + items).values

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        key = users * self.stride + items
        pos = torch.searchsorted(self.keys, key).clamp(max=len(self.keys) - 1)
        return self.keys[pos] == key


def sample_negatives(users: torch.Tensor, k: int, seen: PairKeys, n_items: int, generator: torch.Generator) -> torch.Tensor:
    """[B, k] items in 1..n_items, none of them a training item of its row's user."""
    dev = users.device
    cand = torch.randint(1, n_items + 1, (len(users), k), generator=generator, device=dev)
    users = users.view(-1, 1).expand(-1, k)
    for _ in range(64):  # rejection: each round redraws only the pairs that hit a seen item
        bad = seen.contains(users, cand)
        if not bad.any():
            return cand
        cand[bad] = torch.randint(1, n_items + 1, (int(bad.sum()),), generator=generator, device=dev)
    # users who have seen nearly every item: draw exactly from what they have not seen
    for r in torch.nonzero(seen.contains(users, cand).any(1)).flatten().tolist():
        all_items = torch.arange(1, n_items + 1, device=dev)
        free = all_items[~seen.contains(users[r, :1].expand(n_items), all_items)]
        cand[r] = free[torch.randint(len(free), (k,), generator=generator, device=dev)]
    return cand


class TrainRows:
    """The training interactions as ``core.train.fit`` rows: features gathered, negatives sampled."""

    def __init__(self, users: np.ndarray, items: np.ndarray, tables: dict, n_items: int, cfg, device) -> None:
        self.device = device
        self.users = torch.as_tensor(users, device=device)
        self.items = torch.as_tensor(items, device=device)
        self.tables = {side: {k: v.to(device) for k, v in t.items()} for side, t in tables.items()}
        self.n_items = n_items
        self.seen = PairKeys(self.users, self.items, n_items)
        self.ratio = cfg.negative_sampling_ratio
        self.bce = cfg.loss_type in ("bce", "bce+softmax", "sampled_softmax")  # rows with sampled negatives
        self.softmax = cfg.loss_type in ("softmax", "bce+softmax", "sampled_softmax")
        full = np.bincount(users, minlength=int(users.max()) + 1) >= n_items
        if self.bce and full.any():
            raise DataError(f"user row {int(np.flatnonzero(full)[0])} has interacted with every item in training: "
                            "no negatives can be sampled; drop such users or add items")

    def __len__(self) -> int:
        return len(self.users)

    def get_batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        u, i = self.users[index], self.items[index]
        batch = {"user": gather(self.tables["user"], u), "pos": gather(self.tables["item"], i)}
        if self.bce:
            k = math.ceil(self.ratio)
            neg = sample_negatives(u, k, self.seen, self.n_items, generator)
            weight = torch.ones(len(u), k, device=self.device)
            if k != self.ratio:  # a fractional ratio: the last negative of a row counts with that probability
                weight[:, -1] = (torch.rand(len(u), generator=generator, device=self.device) < self.ratio - k + 1).float()
            batch["neg"] = gather(self.tables["item"], neg.flatten())
            batch["neg_weight"] = weight
        if self.softmax:  # another row's item that this user has also seen is not a negative
            seen = self.seen.contains(u.view(-1, 1).expand(-1, len(i)), i.view(1, -1).expand(len(u), -1))
            batch["inbatch_seen"] = seen & ~torch.eye(len(u), dtype=torch.bool, device=self.device)
        return batch


class Pipeline:
    def __init__(self, cfg: UniversalConfig | None = None, log=print) -> None:
        self.cfg = cfg or UniversalConfig()
        self.log = log
        self.custom: dict[str, nn.Module] = {}
        self.model: UniversalModel | None = None
        self.meta: dict = {}
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------ extension
    def add_encoder(self, name: str, module: nn.Module) -> "Pipeline":
        """Encode data blocks ``{name: {field: number or [numbers]}}`` with ``module`` ([B, in] -> [B, out])."""
        if name in BUILTIN_TYPES:
            raise ConfigError(f"add_encoder({name!r}): {name} is a built-in feature type; pick a new type name")
        if not isinstance(module, nn.Module):
            raise ConfigError(f"add_encoder({name!r}): expected an nn.Module instance, got {type(module).__name__}")
        self.custom[name] = module
        return self

    def custom_types(self) -> dict[str, str]:
        out = {name: "python" for name in self.custom}
        for name, spec in self.cfg.custom_encoders.items():
            if name in BUILTIN_TYPES:
                raise ConfigError(f"custom_encoders.{name}: {name} is a built-in feature type; pick a new type name")
            out.setdefault(name, spec)
        return out

    def feature_types(self) -> tuple[str, ...]:
        return BUILTIN_TYPES + tuple(self.custom_types())

    def _text_cache(self) -> Path:
        return store.state_root(self.cfg.home or None) / "cache" / "text"

    def _tables(self, data: Dataset, item_index, user_id_of, item_id_of, drop_items=None) -> dict:
        schema = self.meta["schema"]
        kw = dict(text_cache=self._text_cache(), source=data.source, log=self.log, item_index=item_index)
        tables = {"user": build_tables(schema["user"], data.users, self.cfg, drop_items=drop_items, **kw),
                  "item": build_tables(schema["item"], data.items, self.cfg, **kw)}
        tables["user"]["_id"] = torch.as_tensor([0] + [user_id_of(u) for u in data.users.ids], dtype=torch.long)
        tables["item"]["_id"] = torch.as_tensor([0] + [item_id_of(i) for i in data.items.ids], dtype=torch.long)
        return tables

    # ------------------------------------------------------------------ training
    def fit(self, data_path: str | Path) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        ctx = start_run(cfg.device, cfg.seed, log=self.log)  # the process group only when started by torchrun
        self.device = device = ctx.device
        self.log = log = ctx.log  # rank 0 speaks for all ranks
        data = load_dataset(data_path, self.feature_types())
        data = subsample_users(data, cfg.data.max_users, cfg.data.sample_seed)
        for note in data.notes:
            log(f"notice: {note}")
        part = temporal_holdout(data, cfg.data.train_split, cfg.data.min_interactions)
        if not (part > TRAIN).any():
            raise DataError(f"{data.source}: no user has {cfg.data.min_interactions}+ interactions, so nothing is held "
                            "out for validation and test; add interactions or lower data.min_interactions")
        train = part == TRAIN
        text_model(cfg, log)  # the notice about a GloVe name, once
        if cfg.scorer == "dot" and (cfg.interaction != type(cfg.interaction)() or cfg.classifier != type(cfg.classifier)()):
            log("notice: interaction_* and classifier_* shape the classifier head only; this run scores with a dot "
                "product (scorer=dot). Set scorer=classifier to use them")
        schema = fit_schema(data, train, cfg, self.custom_types(), log)
        notes = schema.pop("notes")
        heldout = pairs_by_user(data.user_idx[~train], data.item_idx[~train]) \
            if cfg.temporal_encoder_config.user_item_lists == "restrict" else None
        name = dataset_name(cfg, data_path)
        self.meta = {"schema": schema, "n_users": data.n_users, "n_items": data.n_items, "dataset": name,
                     "user_ids": list(data.users.ids), "item_ids": list(data.items.ids)}
        tables = self._tables(data, data.items.lookup, data.users.lookup, data.items.lookup, drop_items=heldout)
        self.meta["text_dim"] = int(tables["user"].get("text/x", tables["item"].get("text/x", torch.zeros(1, 1, 0))).shape[-1])
        self.model = self._new_model().to(device)
        if cfg.logq_correction:
            self.model.set_item_counts(np.bincount(data.item_idx[train], minlength=data.n_items + 1))
        rows = TrainRows(data.user_idx[train], data.item_idx[train], tables, data.n_items, cfg, device)
        e = cfg.eval
        evals = {which: HoldoutEvaluator(data, part, code, e.ks, e.auc_negatives, e.sample_seed, e.batch_size, device)
                 for which, code in (("valid", 1), ("test", 2))}
        score = lambda model: self._score_fn(model, rows.tables)  # noqa: E731
        out = store.run_dir("universal", name, cfg.run_folder_name(), cfg.home or None)
        # the folder is this run's until results and embeddings are written, or nothing is
        with store.claim_run_dir(out, to_dict(cfg), resume=cfg.training.resume, overwrite=cfg.overwrite, log=log):
            prepare_out_dir(out, cfg, cfg.training.resume)
            return self._fit_in(out, data, part, train, rows, evals, score, name, notes, t0)

    def _fit_in(self, out, data, part, train, rows, evals, score, name, notes, t0) -> dict:
        cfg, log, device = self.cfg, self.log, self.device
        log(f"{data.source}: {data.n_users} users, {data.n_items} items, {len(part)} interactions "
            f"(train {int(train.sum())}, valid {int((part == 1).sum())}, test {int((part == 2).sum())}) -> {out}")
        meta = {"kind": UniversalModel.kind, "model_args": self.meta, "config": to_dict(cfg),
                "data_fingerprint": store.fingerprint_arrays(data.user_idx, data.item_idx, part)}
        result = fit(self.model, rows, lambda m: evals["valid"].run(score(m)), cfg.training, out, device=device,
                     seed=cfg.seed, checkpoint_meta=meta, log=log)
        self.model.eval()
        test = evals["test"].run(score(self.model))
        pop = {which: ev.run(popularity_score_fn(data, part)) for which, ev in evals.items()}
        report = {
            "dataset": name, "data": str(data.source), "run_dir": str(out), "checkpoint": str(out / "best.pt"),
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped": result.stopped,
            "train_seconds": round(result.seconds, 2), "threads": result.threads, "seconds": round(time.perf_counter() - t0, 2),
            "counts": {"users": data.n_users, "items": data.n_items, "interactions": int(len(part)),
                       "train": int(train.sum()), "valid": int((part == 1).sum()), "test": int((part == 2).sum()),
                       "valid_users": len(evals["valid"]), "test_users": len(evals["test"])},
            "valid": result.best_valid, "test": test, "popularity": pop, "notes": data.notes + notes,
        }
        if is_main():
            from core.provenance import run_record

            report["run"] = run_record(cfg, device=device, threads=result.threads, started=result.started,
                                       data_paths=[data.source], data_fingerprint=meta["data_fingerprint"])
            store.atomic_write_json(out / "results.json", report)
            self._export_embeddings(rows.tables, name)
        return report

    def _new_model(self) -> UniversalModel:
        m = self.meta
        return UniversalModel(m["schema"], self.cfg, m["n_users"], m["n_items"], m["text_dim"], self.custom)

    @torch.no_grad()
    def _item_vectors(self, model, item_table: dict, chunk: int = 4096) -> torch.Tensor:
        n = len(item_table["_id"])
        return torch.cat([model.item_vectors(gather(item_table, torch.arange(s, min(n, s + chunk), device=self.device)))
                          for s in range(0, n, chunk)])

    def _score_fn(self, model, tables: dict):
        model.eval()
        items = self._item_vectors(model, tables["item"])

        @torch.no_grad()
        def score(users: np.ndarray) -> torch.Tensor:
            u = model.user_vectors(gather(tables["user"], torch.as_tensor(users, device=self.device)))
            s = model.score_matrix(u, items)
            s[:, 0] = float("-inf")
            return s
        return score

    @torch.no_grad()
    def _user_vectors(self, model, user_table: dict, chunk: int = 4096) -> torch.Tensor:
        n = len(user_table["_id"])
        return torch.cat([model.user_vectors(gather(user_table, torch.arange(s, min(n, s + chunk), device=self.device)))
                          for s in range(0, n, chunk)])

    def _export_embeddings(self, tables: dict, name: str) -> None:
        """User and item vectors of the training data (users' item lists without held-out items)."""
        folder = store.embeddings_dir("universal", name, self.cfg.home or None)
        users = self._user_vectors(self.model, tables["user"])[1:]
        items = self._item_vectors(self.model, tables["item"])[1:]
        run = store.check_name(self.cfg.run_folder_name(), "run name")
        store.save_embeddings(folder, f"{run}.users", users.cpu().numpy(), self.meta["user_ids"])
        store.save_embeddings(folder, f"{run}.items", items.cpu().numpy(), self.meta["item_ids"])

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def load(cls, path: str | Path, cfg: UniversalConfig | None = None, custom: dict[str, nn.Module] | None = None,
             log=print, overrides: str = "") -> "Pipeline":
        """Rebuild from a checkpoint; ``cfg`` (e.g. the --config of inference) may change run settings
        (device, batch sizes) but not the model: a model key that differs is an error. Without
        ``cfg`` the checkpoint's config is used, with ``overrides`` applied over it."""
        ckpt = store.load_checkpoint(path, kind=UniversalModel.kind)
        trained = load_config(UniversalConfig, None, overrides, base=ckpt["config"])
        if cfg is not None:
            from universal.config import MODEL_KEYS

            a, b = to_dict(cfg), to_dict(trained)
            for key in MODEL_KEYS:
                if a[key] != b[key]:
                    raise CheckpointError(f"{path}: the config's {key} ({a[key]}) differs from the checkpoint's "
                                          f"({b[key]}); pass the config the model was trained with")
        pipe = cls(trained if cfg is None else cfg, log)
        for name, module in (custom or {}).items():
            pipe.add_encoder(name, module)
        pipe.meta = ckpt["model_args"]
        pipe.device = resolve_device(pipe.cfg.device)
        try:
            pipe.model = pipe._new_model()
        except ConfigError as exc:  # e.g. a custom encoder the checkpoint names but this process did not allow
            raise CheckpointError(f"{path}: {exc}") from None
        try:
            pipe.model.load_state_dict(ckpt["model_state"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit the model ({str(exc).splitlines()[0][:160]})") from None
        pipe.model.to(pipe.device).eval()
        return pipe

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, data: str | Path | Dataset, top_k: int = 10, with_scores: bool = True) -> dict:
        """Embeddings, scores and top-K unseen items for the users and items of ``data`` (raw ids).

        ``data`` has the training format; its interactions (optional) are the items each user
        has seen (left out of the top-K) and nothing else. Items and users the model was not
        trained on are scored from their features (their id embedding is the unknown one)."""
        if self.model is None:
            raise CheckpointError("no model: call fit() or Pipeline.load(checkpoint) first")
        if not isinstance(data, Dataset):
            data = load_dataset(data, self.feature_types(), require_interactions=False)
        if not len(data.items) or not len(data.users):
            raise DataError(f"{data.source}: inference needs user_data (who to score) and item_data (the candidates)")
        m = self.meta
        train_users = {str(u): n + 1 for n, u in enumerate(m["user_ids"])}
        train_items = {str(i): n + 1 for n, i in enumerate(m["item_ids"])}
        tables = self._tables(data, lambda raw: train_items.get(str(raw), 0), lambda raw: train_users.get(str(raw), 0),
                              lambda raw: train_items.get(str(raw), 0))
        tables = {side: {k: v.to(self.device) for k, v in t.items()} for side, t in tables.items()}
        self.model.eval()
        items = self._item_vectors(self.model, tables["item"])[1:]
        users = self._user_vectors(self.model, tables["user"])[1:]
        scores = self.model.score_matrix(users, items)
        masked = scores.clone()
        if len(data.user_idx):
            masked[torch.as_tensor(data.user_idx - 1), torch.as_tensor(data.item_idx - 1)] = float("-inf")
        k = min(top_k, len(data.items))
        top_scores, top_idx = masked.topk(k, dim=1)
        out_users = {}
        for r, uid in enumerate(data.users.ids):
            recs = [{"item_id": data.items.ids[j], "score": float(s)}
                    for j, s in zip(top_idx[r].tolist(), top_scores[r].tolist()) if s != float("-inf")]
            out_users[str(uid)] = {"user_id": uid, "embedding": users[r].cpu().tolist(), "top_k": recs}
        result = {"top_k": k, "scorer": self.cfg.scorer, "users": out_users,
                  "items": {str(i): {"item_id": i, "embedding": items[j].cpu().tolist()} for j, i in enumerate(data.items.ids)}}
        if with_scores:
            result["scores"] = {str(u): dict(zip(map(str, data.items.ids), scores[r].cpu().tolist()))
                                for r, u in enumerate(data.users.ids)}
        return result


def measure_fit(cfg: UniversalConfig, data_path: str | Path, log=print) -> dict:
    """``Pipeline(cfg).fit(data_path)`` measured in this process: ``load_seconds`` (from the call
    to the start of its fit loop: read, validate, split, schema, feature tables, model,
    evaluators), the training rate over the first epoch's logged time (the rows it trained:
    ``cfg.training.max_steps_per_epoch`` batches at most) with ``sec_per_epoch`` extrapolated to
    every training row, and this process's peak RSS after the load and at the end (MB; the peak
    GPU memory too when CUDA was used)."""
    mark: dict = {}

    def watch(msg: str) -> None:  # the fit loop starts right after the line that gives the split and the run folder
        log(msg)
        if "load" not in mark and " interactions (train " in msg:
            mark.update(load=time.perf_counter(), rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    t0 = time.perf_counter()
    report = Pipeline(cfg, log=watch).fit(data_path)
    lines = (Path(report["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    epoch = next(r for r in (json.loads(x) for x in lines if x.strip()) if "epoch_seconds" in r)
    n, bs, cap = report["counts"], cfg.training.batch_size, cfg.training.max_steps_per_epoch
    rows_timed = min(n["train"], cap * bs) if cap else n["train"]
    rate = rows_timed / epoch["epoch_seconds"]
    out = {"load_seconds": mark["load"] - t0, "interactions": n["interactions"], "train_interactions": n["train"],
           "users": n["users"], "items": n["items"], "batches_timed": -(-rows_timed // bs), "rows_timed": rows_timed,
           "train_seconds_timed": epoch["epoch_seconds"], "interactions_per_s": rate, "sec_per_epoch": n["train"] / rate,
           "batch_size": bs, "negatives_per_row": cfg.negative_sampling_ratio, "final_loss": epoch["train_loss"],
           "peak_rss_after_load_mb": mark["rss"], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "threads": torch.get_num_threads()}
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure_fit_fresh(cfg: UniversalConfig, data_path: str | Path) -> dict:
    """``measure_fit`` in a fresh (spawned) process, so that its peak RSS is the fit's and none of the
    caller's; its log lines are printed as they come."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure_fit, cfg, str(data_path), partial(print, flush=True)).result()
