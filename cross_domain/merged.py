"""The merged-domain peer (stage ``merged-<S>-<T>``, rows ``sasrec-merged``): one SASRec over
each user's time-ordered merge of both domains, scored on the target's items only.

This is the standard strong single-model peer of cross-domain sequential papers: it sees
everything a transfer model sees (the whole source sequence and the target's training part),
with no bridge. It is scored under the target-only protocol itself (``cold_protocol``: the same
users, targets, cold cuts, history exclusion and sampled negatives), so its figures sit beside
the baseline's: only the model's input differs, the merged history instead of the target one.

Item space: target items keep their local indexes 1..n_t and source item ``s`` becomes
``n_t + s``, so the first ``n_t + 1`` score columns are the target catalog. A cold user's
merged sequence keeps the same target items the baseline trains on (the last 0..k before
validation) and the whole source sequence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data.batches import left_padded_rows
from core.data.domains import load_domain_views, merged_item_index
from core.data.sequences import SequenceData
from core.errors import ConfigError, DataError


@dataclass
class MergedData:
    train: SequenceData  # merged training sequences, merged item space (n_target + n_source items)
    valid_rows: np.ndarray  # [U + 1, width] left-padded merged history before validation (row 0 unused)
    test_rows: np.ndarray  # [U + 1, width] the same + the validation target
    n_target: int


def merged_data(dom, proto, width: int, caps: tuple[int, int] = (0, 0)) -> MergedData:
    """Merged sequences of the users of ``dom`` (``cross_domain.data.Domains``) under the cold
    protocol ``proto``; ``width``: history items a scoring row holds (the model's maxlen - 1)."""
    if any(caps):
        raise ConfigError("the merged model reads each user's merged sequence as the data holds it; set "
                          "data.max_items_src=0 and data.max_items_tgt=0")
    views = load_domain_views(dom.folder, dom.target_code)
    n_t = dom.target.n_items
    merged_index, _ = merged_item_index(dom.target_l2g, dom.source_l2g, len(views.item_domain))
    train, valid, test = [], [], []
    for u in range(1, dom.target.n_users + 1):
        full = dom.target.sequence(u).astype(np.int64)
        m, keep = len(full), int(proto.kept[u])
        seq = merged_index[views.cross.sequence(u).astype(np.int64)]
        is_target = (seq >= 1) & (seq <= n_t)
        own = full[:m - 2] if m >= 3 else full
        if not np.array_equal(seq[is_target], own):
            raise DataError(f"{views.source}: user {dom.user_ids[u - 1]!r}: the merged view's {dom.target_name} items "
                            f"differ from that domain's training part; prepare the data again")
        if keep >= 0:  # a cut cold user keeps its last `keep` training items of the target, as the baseline does
            drop = np.flatnonzero(is_target)[:len(own) - keep]
            seq = np.delete(seq, drop)
        train.append(seq)
        valid.append(seq)
        test.append(np.append(seq, full[m - 2]) if m >= 3 else seq)
    common = dict(n_items=n_t + dom.source.n_items, user_ids=dom.user_ids,
                  item_ids=list(dom.target.item_ids) + list(dom.source.item_ids))
    return MergedData(SequenceData.from_lists(train, **common), left_padded_rows(valid, width),
                      left_padded_rows(test, width), n_t)


def merged_score_fn(model, rows, n_target: int):
    """Evaluator scoring function: the user's merged row (``rows``: tensor [U + 1, width] on the
    model's device) in place of the target-only history, scores over the target catalog."""
    return lambda inputs, users: model.full_scores(model.with_bos(rows[users]))[:, :n_target + 1]
