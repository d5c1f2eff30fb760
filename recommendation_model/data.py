"""Stage-2 inputs: exported user vectors aligned to the data, and the C2DSR protocol."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from core.data.batches import ClozeDataset, trim_padding
from core.data.c2dsr import C2DSREval
from core.data.splits import Split
from core.errors import DataError
from core.metrics import MetricAccumulator, rank_metrics, ranks_from_scores, sample_negatives
from core.store import aligned_vectors as align_rows, load_embeddings

C2DSR_KS = (1, 5, 10)


def latest_export(folder: Path, kind: str, domain_code: str, epoch: int = 0) -> Path:
    """``<folder>/<kind>_emb_ep{E}_{D}.npy`` for ``epoch`` (0 = the highest exported)."""
    pat = re.compile(rf"^{kind}_emb_ep(\d+)_{domain_code}\.npy$")
    found = {int(m.group(1)): p for p in folder.glob(f"{kind}_emb_ep*_{domain_code}.npy") if (m := pat.match(p.name))}
    if not found:
        raise DataError(f"{folder}: no {kind}_emb_ep*_{domain_code}.npy; run python -m user_representation_module.inference "
                        f"first or set {kind}_emb_path")
    if epoch and epoch not in found:
        raise DataError(f"{folder}: no {kind} embeddings of epoch {epoch}; exported epochs: {sorted(found)}")
    return found[epoch or max(found)]


def aligned_vectors(path: str | Path, user_ids: list, what: str, exact: bool = True) -> np.ndarray:
    """Rows of an exported embedding file in the order of ``user_ids``, checked (``exact``:
    the file must hold exactly these users; else it may hold more). See ``core.store.aligned_vectors``."""
    return align_rows(*load_embeddings(path), user_ids, mode="strict", source=path, what=what, exact=exact,
                      hint="python -m user_representation_module.inference")


def c2dsr_companion(path: str | Path, which: str) -> Path:
    """``spe_emb_ep10_A.npy`` -> ``spe_emb_ep10_A.c2dsr-valid.npy`` (written by the export)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.c2dsr-{which}.npy")


def holdout_companion(path: str | Path, m: int) -> Path:
    """``spe_emb_ep10_A.npy`` -> ``spe_emb_ep10_A.holdout1.npy`` (written by ``export.holdout_last=1``);
    a missing one is an error that names the export command."""
    p = Path(path)
    out = p.with_name(f"{p.stem}.holdout{m}.npy")
    if not (out.is_file() and out.with_suffix(".ids.json").is_file()):
        found = re.search(r"_ep(\d+)_([AB])$", p.stem)
        over = f"export.holdout_last={m}" + (f",EPOCH_TO_LOAD={found[1]},SPE_DOMAIN={found[2]}" if found else "")
        raise DataError(f"{out}: holdout vectors for model.vector_holdout={m} not found; export them: python -m "
                        f"user_representation_module.inference --override \"{over}\" (with the stage-1 --config)")
    return out


def holdout_cloze_mask(rows: torch.Tensor, m: int, mask_prob: float, mask_token: int,
                       generator: torch.Generator | None = None,
                       last_mask_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, fused targets, plain targets) from left-padded ``rows``: the last ``m`` real
    positions of every row are always masked (fused targets); earlier real positions are masked
    with ``mask_prob`` (plain targets; with ``last_mask_prob`` a row gets none of them). Targets
    are the original items at those positions, 0 elsewhere."""
    real = rows > 0
    held = torch.zeros_like(real)
    held[:, -m:] = True  # rows are left-padded: the last m columns are the last m items
    held &= real
    draw = (torch.rand(rows.shape, device=rows.device, generator=generator) < mask_prob) & real & ~held
    if last_mask_prob > 0:
        only_last = torch.rand(rows.shape[0], device=rows.device, generator=generator) < last_mask_prob
        draw[only_last] = False
    return rows.masked_fill(held | draw, mask_token), rows.masked_fill(~held, 0), rows.masked_fill(~draw, 0)


class HoldoutClozeDataset(ClozeDataset):
    """``ClozeDataset`` rows masked by ``holdout_cloze_mask``: batches hold ``input``,
    ``target_fused`` (the last ``holdout`` items), ``target_plain`` and ``users``."""

    def __init__(self, split: Split, maxlen: int, mask_prob: float, holdout: int, device=None,
                 last_mask_prob: float = 0.0) -> None:
        super().__init__(split, maxlen, mask_prob, device=device, last_mask_prob=last_mask_prob)
        self.holdout = holdout

    def get_batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        inputs, fused, plain = holdout_cloze_mask(trim_padding(self.rows[index]), self.holdout, self.mask_prob,
                                                  self.mask_token, generator, self.last_mask_prob)
        return {"input": inputs, "target_fused": fused, "target_plain": plain, "users": self.users[index]}


class C2DSRProtocol:
    """The target ranked against ``n_neg`` items of the target domain (fixed seed) other than the
    target (as C2DSR samples them; ``exclude_history`` also keeps the line's own target-domain
    history out); MRR, NDCG@1/5/10, HR@1/5/10."""

    def __init__(self, ev: C2DSREval, global_to_local: np.ndarray, n_items: int, maxlen: int,
                 spe: np.ndarray | None, cross: np.ndarray | None, n_neg: int = 999, seed: int = 0,
                 device="cpu", batch_size: int = 1024, exclude_history: bool = False) -> None:
        self.device, self.batch_size = torch.device(device), batch_size
        hist = [global_to_local[h] for h in ev.histories]
        hist = [h[h > 0] for h in hist]  # the target domain's part of the history
        self.inputs = torch.zeros(len(ev), maxlen, dtype=torch.long)
        for i, h in enumerate(hist):
            if len(h):
                self.inputs[i, -min(len(h), maxlen):] = torch.as_tensor(h[-maxlen:])
        targets = global_to_local[ev.targets]
        if (targets == 0).any():
            raise DataError(f"{ev.source}: a target item is outside the target domain")
        gen = torch.Generator().manual_seed(seed)
        cands = []
        for start in range(0, len(ev), batch_size):
            stop = min(start + batch_size, len(ev))
            exclude = torch.zeros(stop - start, n_items + 1, dtype=torch.bool)
            if exclude_history:
                for r, h in enumerate(hist[start:stop]):
                    exclude[r, torch.as_tensor(h, dtype=torch.long)] = True
            exclude[torch.arange(stop - start), torch.as_tensor(targets[start:stop])] = True
            cands.append(sample_negatives(exclude, n_items, n_neg, gen))
        self.candidates = torch.cat([torch.as_tensor(targets).view(-1, 1), torch.cat(cands)], dim=1)
        self.spe = torch.as_tensor(spe, dtype=torch.float32) if spe is not None else None
        self.cross = torch.as_tensor(cross, dtype=torch.float32) if cross is not None else None
        self.targets = torch.as_tensor(targets, dtype=torch.long)  # local ids
        self.lines = np.asarray(ev.lines)  # 0-based line numbers in the C2DSR file, for per-line ranks
        self.last_ranks: torch.Tensor | None = None  # 0-based rank of each line's target, last run

    def __len__(self) -> int:
        return len(self.inputs)

    @torch.no_grad()
    def run(self, model) -> dict[str, float]:
        acc, all_ranks = MetricAccumulator(), []
        for start in range(0, len(self), self.batch_size):
            sl = slice(start, start + self.batch_size)
            vec = lambda t: t[sl].to(self.device) if t is not None else None  # noqa: E731
            scores = model.candidate_scores(self.inputs[sl].to(self.device), self.candidates[sl].to(self.device),
                                            vec(self.spe), vec(self.cross)).float()
            ranks = ranks_from_scores(scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device))
            all_ranks.append(ranks.cpu())
            m = rank_metrics(ranks.cpu(), C2DSR_KS)
            acc.add({k: v for k, v in m.items() if k == "MRR" or k.startswith(("HR@", "NDCG@"))})
        self.last_ranks = torch.cat(all_ranks) if all_ranks else torch.zeros(0, dtype=torch.long)
        return acc.result()

    def split_by_training_count(self, item_counts: np.ndarray) -> dict:
        """Metrics of the last run over lines whose target the training data holds at least once
        (``seen``) and never (``unseen``), with the unseen share. C2DSR trained on its own file,
        which is not available; ~40% of its Food-Kitchen test targets never occur in the pickles,
        and no model trained on them can rank such an item (its embedding only ever got pushed
        down as a sampled negative)."""
        if self.last_ranks is None:
            raise RuntimeError("run() first")
        seen = torch.as_tensor(item_counts[self.targets.numpy()] > 0)
        out: dict = {"unseen_target_share": float((~seen).float().mean()) if len(seen) else 0.0}
        for name, mask in (("seen", seen), ("unseen", ~seen)):
            if mask.any():
                m = rank_metrics(self.last_ranks[mask], C2DSR_KS)
                out[name] = {k: float(v.mean()) for k, v in m.items() if k == "MRR" or k.startswith(("HR@", "NDCG@"))}
        return out
