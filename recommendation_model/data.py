"""Stage-2 inputs: exported user vectors aligned to the data, and the vector-holdout cloze rows
(the C2DSR protocol is ``core.evaluation.C2DSRProtocol``)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from core.data.batches import ClozeDataset, trim_padding
from core.data.splits import Split
from core.errors import DataError
from core.store import aligned_vectors as align_rows, load_embeddings


def exported(folder: Path, kind: str, domain_code: str) -> dict[int, Path]:
    """{epoch: ``<folder>/<kind>_emb_ep{E}_{D}.npy``} of every epoch stage 1 exported there."""
    pat = re.compile(rf"^{kind}_emb_ep(\d+)_{domain_code}\.npy$")
    return {int(m.group(1)): p for p in Path(folder).glob(f"{kind}_emb_ep*_{domain_code}.npy") if (m := pat.match(p.name))}


def latest_export(folder: Path, kind: str, domain_code: str, epoch: int = 0) -> Path:
    """``<folder>/<kind>_emb_ep{E}_{D}.npy`` for ``epoch`` (0 = the highest exported)."""
    found = exported(folder, kind, domain_code)
    if not found:
        raise DataError(f"{folder}: no {kind}_emb_ep*_{domain_code}.npy; run python -m user_representation_module.inference "
                        f"first or set {kind}_emb_path")
    if epoch and epoch not in found:
        raise DataError(f"{folder}: no {kind} embeddings of epoch {epoch}; exported epochs: {sorted(found)}")
    return found[epoch or max(found)]


def missing_export(folder: Path, domain_code: str, epoch: int = 0, holdout: int = 0) -> int | None:
    """None when ``folder`` holds what stage 2 reads for ``domain_code``: the spe vectors of ``epoch``
    (0: the latest exported) and, with ``holdout`` m > 0, that epoch's ``.holdout{m}`` spe and cross
    files; else the epoch to export (0: the latest saved)."""
    found = exported(folder, "spe", domain_code)
    epoch = epoch or max(found, default=0)
    held = (Path(folder) / f"{k}_emb_ep{epoch}_{domain_code}.holdout{holdout}.npy" for k in ("spe", "cross"))
    return None if epoch in found and (not holdout or all(p.is_file() for p in held)) else epoch


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


class UserVectorRows:
    """Training rows whose batches also carry the user vectors: ``tables[name][users]`` under
    ``name`` (``spe`` / ``cross``; tables by 1-based user index, row 0 unused; None = unused), so
    that ``TriGRecRecommender.training_loss`` reads them from the batch and ``core.train.fit``
    needs no per-recipe loss closure. Everything else is the wrapped rows'."""

    def __init__(self, rows, tables: dict[str, torch.Tensor | None]) -> None:
        self.rows = rows
        self.tables = {k: v for k, v in tables.items() if v is not None}

    def __len__(self) -> int:
        return len(self.rows)

    def __getattr__(self, name: str):  # lengths, set_epoch, epoch_batches, mask_token ... of the rows
        if name in ("rows", "tables"):
            raise AttributeError(name)
        return getattr(self.rows, name)

    def get_batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        batch = self.rows.get_batch(index, generator)
        return {**batch, **{k: t[batch["users"]] for k, t in self.tables.items()}}
