"""Catalog-scale training losses: sampled softmax with log-Q correction, and the full-softmax guard.

Sampled softmax scores each target position against the positive and ``num_negatives``
items shared by the batch, instead of the whole catalog. The negatives come from a sampler:

- ``uniform``: items drawn uniformly from 1..n_items (the default; the correction is a
  constant shift, so none is applied and the loss is the one this repo always had);
- ``popularity``: items drawn in proportion to their training frequency (hard, popular
  negatives; needs ``set_item_counts``);
- ``in_batch``: negatives drawn from the batch's own target items (no extra embedding
  lookups beyond the batch; popular items are over-represented, as in two-tower practice).

Non-uniform samplers over-sample popular items, which would teach the model to push
popular items down; the log-Q correction (Bengio & Senecal 2008; Blanc & Rendle 2018; Yi
et al. 2019 for in-batch) subtracts ``log(expected count of the item among the draws)`` from
each sampled negative's logit, so that the negatives' sum of exp(logit) is an unbiased
estimate of the catalog's and the loss estimates full-softmax cross-entropy (tested). The
positive keeps its plain logit. Draws equal to a row's positive ("accidental hits") are
masked out. ``uniform`` keeps the uncorrected loss this repo always had (its correction is
one constant for all negatives).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from core.errors import ConfigError

SAMPLERS = ("uniform", "popularity", "in_batch")


def draw_negatives(sampler: str, num: int, n_items: int, positives: torch.Tensor, generator: torch.Generator | None,
                   popularity: tuple[torch.Tensor, torch.Tensor] | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``num`` negatives shared by the batch and, for non-uniform samplers, their log Q (the
    log of each one's expected number of draws).

    ``popularity`` = (cdf [n_items] float64 over items 1..n, log p [n_items + 1]) from
    ``popularity_tables``; ``positives`` [N] are the batch's targets. Returns (negs [num],
    logq [num] or None).
    """
    device = positives.device
    if sampler == "uniform":
        return torch.randint(1, n_items + 1, (num,), device=device, generator=generator), None
    if sampler == "popularity":
        if popularity is None:
            raise ConfigError("model.negative_sampler=popularity needs item counts (model.set_item_counts); "
                              "train through core.seqrec or use negative_sampler=uniform")
        cdf, logp = popularity
        u = torch.rand(num, device=cdf.device, dtype=cdf.dtype, generator=generator)
        negs = torch.searchsorted(cdf, u, right=True).clamp(max=n_items - 1) + 1
        return negs, logp[negs] + math.log(num)
    if sampler == "in_batch":
        pick = torch.randint(0, len(positives), (num,), device=device, generator=generator)
        negs = positives[pick]
        # the exact sampling law given the batch: an item's share of the batch's target positions
        uniq, inverse, counts = torch.unique(positives, return_inverse=True, return_counts=True)
        share = counts.to(torch.float32) / len(positives)
        return negs, torch.log(num * share[inverse])[pick]
    raise ConfigError(f"model.negative_sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")


def popularity_tables(counts, smoothing: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cdf over items 1..n, log p over 0..n) of sampling items in proportion to
    ``counts + smoothing`` (``counts``: [n_items + 1], entry 0 = padding, never drawn)."""
    w = torch.as_tensor(counts, dtype=torch.float64)[1:] + smoothing
    p = w / w.sum()
    cdf = torch.cumsum(p, 0)
    cdf[-1] = 1.0
    logp = torch.cat([torch.full((1,), -math.inf, dtype=torch.float64), torch.log(p)]).to(torch.float32)
    return cdf, logp


def sampled_softmax_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor, positives: torch.Tensor,
                         negs: torch.Tensor, logq: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy of the positive ([N, 1]) against shared negatives ([N, num]), whose logits
    are log-Q corrected when ``logq`` is given."""
    if logq is not None:
        neg_logits = neg_logits - logq.view(1, -1)
    neg_logits = neg_logits.masked_fill(negs.view(1, -1) == positives.view(-1, 1), -math.inf)  # accidental hits
    logits = torch.cat([pos_logits, neg_logits], dim=1).float()
    return F.cross_entropy(logits, torch.zeros(len(positives), dtype=torch.long, device=logits.device))


# --------------------------------------------------------------------------- memory guard
def available_memory_bytes(device: torch.device | str = "cpu") -> int:
    """Memory of ``device``: the GPU's total (``torch.cuda.mem_get_info``), else physical RAM.

    Totals rather than what is free right now, so that whether a config may run does not
    depend on what else happens to run on the machine (the guard is about the method, not
    about the moment)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # no sysconf names (non-Linux): read MemTotal
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
        raise


def full_softmax_bytes(batch_size: int, seq_len: int, n_items: int, bytes_per_value: int = 4) -> int:
    """Logits plus their gradient for one batch of full softmax: B x L x (n_items + 1) x 2 values."""
    return 2 * batch_size * seq_len * (n_items + 1) * bytes_per_value


def check_full_softmax(loss: str, batch_size: int, seq_len: int, n_items: int, device: torch.device | str = "cpu",
                       available: int | None = None, where: str = "model") -> None:
    """Refuse a full-softmax run whose per-batch logits would not fit in memory.

    The CE loss is computed in recomputed row chunks, but it still produces every one of
    these logits each step; past the memory size the run is either out of memory (without
    chunking) or hours per epoch, and sampled softmax is the method that scales.
    """
    if loss not in ("ce", "full"):
        return
    need = full_softmax_bytes(batch_size, seq_len, n_items)
    have = available_memory_bytes(device) if available is None else available
    if need > have:
        raise ConfigError(
            f"full softmax over {n_items} items would need {need / 2**30:.1f} GiB of logits per batch "
            f"(batch {batch_size} x length {seq_len} x {n_items + 1} items x 4 B x 2 for the gradient) but "
            f"{torch.device(device).type} has {have / 2**30:.1f} GiB; set {where}.loss=sampled_softmax "
            f"(with {where}.num_negatives and {where}.negative_sampler) or lower training.batch_size")
