"""Training datasets that live as one tensor (on the GPU when it fits).

Each training user is one row of a left-padded ``[U, maxlen + 1]`` matrix built once with
numpy. A batch is a row gather plus a few tensor ops, so no per-sample Python runs in the
training loop. Both classes are ``torch.utils.data.Dataset`` s (``__getitem__`` returns a
row) and add ``get_batch(index)`` for the fast path.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from core.data.splits import Split, padded_prefixes


def is_memory_mapped(array: np.ndarray) -> bool:
    """True when ``array`` is (a view of) a ``np.memmap`` (the npy layout of a prepared dataset)."""
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = array.base if isinstance(array.base, np.ndarray) else None
    return False


class CausalDataset(Dataset):
    """Next-item training: input = items[:-1], target = items[1:] at every real input position (0 = none).

    ``prefixes``: instead one row per training target (the items before it, as input), with
    the target at the last position only. Costs about mean-length times more rows; every
    prediction is then trained from the position that scores at evaluation (see benchmarks/README.md).

    ``repeat_padding`` (``plain`` / ``delimited``): RepPad (Dang et al., RecSys 2024). The padding
    in front of a short row is filled with 1..maxlen // n more copies of the row's own
    (input, target) pairs, drawn again every epoch, with a padding id between copies when
    ``delimited``. The real copy stays at the right end, so scoring inputs are unchanged.
    The copies are drawn per batch in ``get_batch`` (the training path); ``dataset[i]`` gives the
    row without them.

    ``materialize``: build the ``[U, maxlen + 1]`` row matrix once (fast batches; the default
    for in-memory data) or gather each batch's rows from the CSR arrays on the fly (memory
    O(batch); the default when the dataset is memory-mapped, i.e. catalog scale).
    """

    def __init__(self, split: Split, maxlen: int, device=None, materialize: bool | None = None,
                 prefixes: bool = False, repeat_padding: str = "off") -> None:
        if repeat_padding not in ("off", "plain", "delimited"):
            raise ValueError(f"repeat_padding={repeat_padding!r}: one of off, plain, delimited")
        if prefixes and repeat_padding != "off":
            raise ValueError("repeat_padding fills sequence rows; prefix rows have their target at the end only")
        self.repeat_padding = repeat_padding
        users = split.train_users
        if materialize is None:
            materialize = not is_memory_mapped(split.data.items)
        self.data, self.maxlen, self.device = split.data, maxlen, device
        self.train_len = split.train_len
        self.prefixes = prefixes
        if prefixes:
            # one row per training target t >= 2 of each user: the items before t, target at the
            # last position only. Every prediction is then made from the scoring position
            # (maxlen - 1) with positions counted back from it, exactly as at evaluation time.
            lens = split.train_len[users - 1].astype(np.int64)
            counts = np.maximum(lens - 1, 0)
            # prefix lengths 2..len of each user, without a Python loop over users
            ends = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 2
            owners = np.repeat(users, counts)
            rows = padded_prefixes(split.data, owners, ends, maxlen + 1)
            self.users = torch.as_tensor(owners, device=device)
            self.rows = torch.as_tensor(rows, device=device)
            self.lengths = (self.rows > 0).sum(1)
            self.n_items = split.data.n_items
            return
        self.users = torch.as_tensor(users, device=device)
        if materialize:
            rows = padded_prefixes(split.data, users, split.train_len[users - 1], maxlen + 1)
            self.rows = torch.as_tensor(rows, device=device)
            self.lengths = (self.rows > 0).sum(1)
        else:
            self.rows = None
            self.lengths = torch.as_tensor(np.minimum(split.train_len[users - 1], maxlen + 1), device=device)
        self.n_items = split.data.n_items

    def __len__(self) -> int:
        return len(self.users)

    def _rows(self, index: torch.Tensor) -> torch.Tensor:
        if self.rows is not None:
            return self.rows[index]
        users = self.users[index].cpu().numpy()
        rows = padded_prefixes(self.data, users, self.train_len[users - 1], self.maxlen + 1)
        return torch.as_tensor(rows, device=index.device)

    def __getitem__(self, i: int):
        row = self._rows(torch.as_tensor([i]))[0]
        if self.prefixes:
            target = torch.zeros_like(row[1:])
            target[-1] = row[-1]
            return row[:-1], target
        return row[:-1], row[1:].masked_fill(row[:-1] == 0, 0)

    def get_batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        rows = trim_padding(self._rows(index), keep=2)
        if self.repeat_padding != "off":
            inputs, target = repeated_padding(rows, self.maxlen, self.repeat_padding == "delimited", generator)
            return {"input": inputs, "target": target, "users": self.users[index]}
        inputs = rows[:, :-1]
        if self.prefixes:
            target = torch.zeros_like(inputs)
            target[:, -1] = rows[:, -1]
            return {"input": inputs, "target": target, "users": self.users[index], "last_target": True}
        # a padded input position predicts nothing (its hidden state is zero): no target there
        return {"input": inputs, "target": rows[:, 1:].masked_fill(inputs == 0, 0), "users": self.users[index]}


class ClozeDataset(Dataset):
    """Masked-item (cloze) training for bidirectional models such as BERT4Rec.

    Each non-padding position is replaced by ``mask_token`` with probability ``mask_prob``;
    rows where nothing was drawn get their last item masked, so every row trains. With
    ``last_mask_prob`` a row instead has only its last item masked, the exact form of the
    scoring input (clean history + one mask at the end). With ``prefix_prob`` that share of rows
    is first cut to a random prefix (``random_prefixes``), drawn again every epoch. With
    ``end_mask_prob`` a row's last item is also masked with that probability, on top of
    ``mask_prob``: the position scoring asks about trains more often. Targets are
    the original items at masked positions and 0 elsewhere. ``views=2`` adds a second, independent
    masking of the same rows (``input_b`` / ``target_b``) for a contrastive loss between the two.
    """

    def __init__(self, split: Split, maxlen: int, mask_prob: float, device=None, last_mask_prob: float = 0.0,
                 prefix_prob: float = 0.0, views: int = 1, end_mask_prob: float = 0.0) -> None:
        users = split.train_users
        rows = padded_prefixes(split.data, users, split.train_len[users - 1], maxlen)
        self.users = torch.as_tensor(users, device=device)
        self.rows = torch.as_tensor(rows, device=device)
        self.lengths = (self.rows > 0).sum(1)
        self.mask_prob = mask_prob
        self.last_mask_prob = last_mask_prob
        self.prefix_prob = prefix_prob
        self.views = views
        self.end_mask_prob = end_mask_prob
        self.mask_token = split.data.n_items + 1

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.rows[i]

    def get_batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        rows = self.rows[index]
        if self.prefix_prob > 0:  # no draw otherwise: runs without it keep their random stream
            rows = random_prefixes(rows, self.prefix_prob, generator)
        rows = trim_padding(rows)
        inputs, targets = cloze_mask(rows, self.mask_prob, self.mask_token, generator, self.last_mask_prob,
                                     self.end_mask_prob)
        batch = {"input": inputs, "target": targets, "users": self.users[index]}
        if self.views == 2:
            batch["input_b"], batch["target_b"] = cloze_mask(rows, self.mask_prob, self.mask_token, generator,
                                                             self.last_mask_prob, self.end_mask_prob)
        return batch


def repeated_padding(rows: torch.Tensor, width: int, delimited: bool,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-item targets [B, <= width] of left-padded ``rows`` [B, L + 1] with the
    padding filled by repeated copies of each row's pairs (RepPad; see ``CausalDataset``).

    A row of n items has m = n - 1 (input, target) pairs. It gets k copies in front of its own,
    k uniform in 1..width // m (none when width // m <= 1), each followed by a (0, 0) delimiter
    when ``delimited``; the result keeps its last ``width`` positions. As rows are right-aligned,
    the pair r places before the row's end sits in the row's columns -2 - r (input) and -1 - r
    (target) for every row, so one gather builds the batch.
    """
    n = (rows > 0).sum(1)
    m = (n - 1).clamp(min=0)
    most = torch.div(width, m.clamp(min=1), rounding_mode="floor")
    draw = torch.rand(len(rows), generator=generator, device=rows.device if generator is None else generator.device)
    copies = torch.where((most > 1) & (m > 0), 1 + (draw.to(rows.device) * most).long().clamp(max=most - 1), 0)
    period = m + int(delimited)
    total = (copies + 1) * m + copies * int(delimited)
    back = torch.arange(width - 1, -1, -1, device=rows.device)  # places before the row's end, per column
    r = back[None, :] % period.clamp(min=1)[:, None]
    keep = (back[None, :] < total[:, None]) & (r < m[:, None])
    cols = rows.shape[1]
    inputs = rows.gather(1, (cols - 2 - r).clamp(min=0)) * keep
    target = rows.gather(1, (cols - 1 - r).clamp(min=0)) * keep
    used = int(keep.any(0).nonzero()[0]) if keep.any() else width - 1
    return inputs[:, used:], target[:, used:]


def random_prefixes(rows: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cut a ``prob`` share of left-padded ``rows`` to a prefix of uniform length in [2, n]
    (rows shorter than 2 stay whole), right-aligned again.

    The sampled form of the prefix augmentation that RecBole and the S3-Rec family apply to every
    sequential model: over epochs a row trains as each of its prefixes, so the masked items near
    a row's end, the position scoring asks about, come from many contexts, not one per user.
    """
    lengths = (rows > 0).sum(1)
    shortest = lengths.clamp(max=2)
    draw = torch.rand(rows.shape[0], device=rows.device, generator=generator)
    cut_draw = torch.rand(rows.shape[0], device=rows.device, generator=generator)
    cut = (cut_draw * (lengths - shortest + 1)).long()
    cut = torch.where(draw < prob, cut, torch.zeros_like(cut))
    source = torch.arange(rows.shape[1], device=rows.device) - cut[:, None]
    return rows.gather(1, source.clamp(min=0)).masked_fill(source < 0, 0)


def cloze_mask(rows: torch.Tensor, mask_prob: float, mask_token: int, generator: torch.Generator | None = None,
               last_mask_prob: float = 0.0, end_mask_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a cloze batch from left-padded ``rows`` (see ``ClozeDataset``)."""
    real = rows > 0
    draw = torch.rand(rows.shape, device=rows.device, generator=generator) < mask_prob
    if end_mask_prob > 0:  # no draw otherwise: runs without it keep their random stream
        draw[:, -1] |= torch.rand(rows.shape[0], device=rows.device, generator=generator) < end_mask_prob
    masked = draw & real
    if last_mask_prob > 0:
        only_last = torch.rand(rows.shape[0], device=rows.device, generator=generator) < last_mask_prob
        masked[only_last] = False
    none = ~masked.any(dim=1)
    masked[none, -1] = real[none, -1]
    return rows.masked_fill(masked, mask_token), rows.masked_fill(~masked, 0)


def left_padded_rows(seqs: list[np.ndarray], width: int) -> np.ndarray:
    """[U + 1, width] int64 rows, row u = the last ``width`` items of ``seqs[u - 1]`` right-aligned
    after zero padding (row 0 unused: rows are indexed by 1-based user)."""
    out = np.zeros((len(seqs) + 1, width), dtype=np.int64)
    for u, s in enumerate(seqs, 1):
        s = s[-width:]
        if len(s):
            out[u, width - len(s):] = s
    return out


def trim_padding(rows: torch.Tensor, keep: int = 1) -> torch.Tensor:
    """Drop leading columns that are padding in every row (rows are left-padded).

    Positions are right-aligned in the models, so this changes no output; on short-sequence
    data such as Amazon (median length 6 of 50) it removes most of the attention/FFN work.
    """
    longest = int((rows > 0).sum(1).max()) if rows.numel() else 0
    return rows[:, -max(longest, keep):]


def length_bucketed(order: torch.Tensor, lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                    window: int = 50) -> list[torch.Tensor]:
    """Batches of similar length: sort each window of ``window`` batches by length, then shuffle
    the batch order. Random like plain shuffling at the window scale, far less padding."""
    batches = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[torch.argsort(lengths[chunk].cpu(), stable=True)]
        batches.extend(chunk.split(batch_size))
    perm = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in perm]


def sample_train_negatives(seqs: torch.Tensor, n_items: int, shape: tuple[int, ...], generator: torch.Generator | None = None,
                           max_rounds: int = 50) -> torch.Tensor:
    """Uniform negatives per row of ``seqs`` ([B, L] item ids, 0 = pad) that are not in that row.

    Returns [B, *shape] item ids in 1..n_items. Rejection sampling with a sorted-row
    ``searchsorted`` membership test: memory is O(B * (L + draws)), not O(B * n_items).
    """
    batch = seqs.shape[0]
    sorted_rows = seqs.sort(dim=1).values
    flat = int(np.prod(shape)) if shape else 1
    draws = torch.randint(1, n_items + 1, (batch, flat), device=seqs.device, generator=generator)
    for _ in range(max_rounds):
        pos = torch.searchsorted(sorted_rows, draws).clamp(max=sorted_rows.shape[1] - 1)
        clash = sorted_rows.gather(1, pos) == draws
        if not clash.any():
            break
        redraw = torch.randint(1, n_items + 1, (int(clash.sum()),), device=seqs.device, generator=generator)
        draws[clash] = redraw
    else:
        raise RuntimeError("could not draw negatives outside the history; is the catalog nearly exhausted?")
    return draws.view(batch, *shape)
