"""One interface for the sequential recommenders (SASRec, BERT4Rec, and pipelines built on them).

- ``forward(input_ids, return_layers)``: hidden states [B, L, D] (and per-layer states);
- ``training_loss(batch, generator)``: scalar loss for a batch of ``core.data.batches``;
- ``full_scores(input_ids)``: [B, n_items + 1] scores of every item for the next position;
- ``candidate_scores(input_ids, candidates)``: [B, C] scores of given items;
- ``model_args``: constructor kwargs, stored in checkpoints so a model rebuilds from its file.

Losses (``loss``): ``ce`` (alias ``full``) = softmax cross-entropy over the whole catalog;
``sampled_softmax`` (alias ``sampled``) = softmax over the positive and ``num_negatives``
items shared by the batch, drawn by ``negative_sampler`` (``uniform``, ``popularity`` or
``in_batch``, the last two log-Q corrected; see ``core.models.sampled_softmax``), for
catalogs too large for ``ce``; ``bce`` = the original SASRec binary loss with one sampled
negative per position.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.data.batches import sample_train_negatives
from core.models.full_softmax import fused_full_softmax
from core.models.sampled_softmax import SAMPLERS, draw_negatives, popularity_tables, sampled_softmax_loss
from core.models.transformer import TransformerBlock, attention_mask


# ---------------------------------------------------------------------- the model contract
@runtime_checkable
class Recommender(Protocol):
    """What every model of the repository offers: SASRec / BERT4Rec / BSARec (below), TriGRec's
    stage 1 (``TriGRecRep``) and stage 2 (``TriGRecRecommender``), the cross-domain SASRec,
    the universal two-tower model and its MF baseline (``tests/test_model_contract.py``).

    - ``kind``: the name checkpoints are stored under and checked against;
    - ``model_args``: constructor keyword arguments; ``type(m)(**m.model_args)`` rebuilds the model;
    - ``training_loss(batch, generator)``: scalar loss (or ``{"loss": ..., parts to log}``) of a
      batch of the model's training rows;
    - ``full_scores(inputs, **side)``: [B, n_items + 1] scores of every item (column 0 never ranks);
    - ``candidate_scores(inputs, candidates, **side)``: [B, C] scores of the given items, the
      same values as those columns of ``full_scores``.

    Side inputs (TriGRec's ``spe`` / ``cross`` user vectors, the cross-domain ``source`` /
    ``source_history``, the universal ``items`` table) are batch entries under the names the
    scorers take as keywords: ``training_loss`` reads them from the batch.
    """

    kind: str
    model_args: dict

    def training_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor | dict: ...

    def full_scores(self, inputs, **side) -> torch.Tensor: ...

    def candidate_scores(self, inputs, candidates: torch.Tensor, **side) -> torch.Tensor: ...


LOSSES = ("ce", "sampled_softmax", "bce")
LOSS_ALIASES = {"full": "ce", "sampled": "sampled_softmax"}
CE_IMPLS = ("fused", "checkpointed")  # how the full softmax gets its gradient (chunked_cross_entropy)


class SequentialRecommender(nn.Module):
    causal: bool = True
    kind: str = "base"
    # SASRec scales item embeddings by sqrt(d) before adding positions; BERT adds them as
    # they are, which keeps the position signal strong enough for bidirectional attention
    scale_item_embeddings: bool = True

    def __init__(
        self,
        n_items: int,
        maxlen: int = 50,
        hidden_units: int = 64,
        num_blocks: int = 2,
        num_heads: int = 2,
        dropout_rate: float = 0.2,
        initializer_range: float = 0.02,
        loss: str = "ce",
        num_negatives: int = 256,
        extra_tokens: int = 0,
        negative_sampler: str = "uniform",
        ce_from_epoch: int = 0,
        position_from: str = "newest",
        ce_impl: str = "fused",
    ) -> None:
        super().__init__()
        loss = LOSS_ALIASES.get(loss, loss)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if negative_sampler not in SAMPLERS:
            raise ValueError(f"negative_sampler must be one of {SAMPLERS}, got {negative_sampler!r}")
        self._args = dict(n_items=n_items, maxlen=maxlen, hidden_units=hidden_units, num_blocks=num_blocks,
                          num_heads=num_heads, dropout_rate=dropout_rate, initializer_range=initializer_range,
                          loss=loss, num_negatives=num_negatives)
        if negative_sampler != "uniform":  # only then: checkpoints of existing configs keep their exact args
            self._args["negative_sampler"] = negative_sampler
        if ce_from_epoch:
            if loss == "ce":
                raise ValueError("ce_from_epoch switches a sampled or bce loss to the full softmax; "
                                 "the loss is ce already")
            self._args["ce_from_epoch"] = ce_from_epoch
        if position_from not in ("newest", "oldest"):
            raise ValueError(f"position_from must be newest or oldest, got {position_from!r}")
        if position_from == "oldest":  # only then: checkpoints of existing configs keep their exact args
            self._args["position_from"] = position_from
        self.position_from = position_from
        if ce_impl not in CE_IMPLS:
            raise ValueError(f"ce_impl must be one of {CE_IMPLS}, got {ce_impl!r}")
        if ce_impl != "fused":  # only then: checkpoints of existing configs keep their exact args
            self._args["ce_impl"] = ce_impl
        self.ce_impl = ce_impl
        self.n_items = n_items
        self.maxlen = maxlen
        self.loss_name = loss
        self.num_negatives = num_negatives
        self.negative_sampler = negative_sampler
        self._popularity: tuple[torch.Tensor, torch.Tensor] | None = None
        self.item_emb = nn.Embedding(n_items + 1 + extra_tokens, hidden_units, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen, hidden_units)
        self.emb_drop = nn.Dropout(dropout_rate)
        self.emb_norm = nn.LayerNorm(hidden_units) if not self.scale_item_embeddings else nn.Identity()
        self.blocks = nn.ModuleList(self.make_block(hidden_units, num_heads, dropout_rate) for _ in range(num_blocks))
        self.final_ln = nn.LayerNorm(hidden_units) if self.final_norm else nn.Identity()
        self._init(initializer_range)

    # pre-LayerNorm blocks need a norm after the last one; post-LayerNorm blocks end normalised
    final_norm: bool = True
    # what padded positions hold: "zero" (ours) or "position" (BSARec's code; see core.models.bsarec)
    padding: str = "zero"

    def make_block(self, hidden: int, heads: int, dropout: float) -> nn.Module:
        return TransformerBlock(hidden, heads, dropout)

    @property
    def model_args(self) -> dict:
        return dict(self._args)

    def set_item_counts(self, counts) -> None:
        """Training frequency of items 0..n_items, for ``negative_sampler=popularity`` (not saved
        in checkpoints: it is a property of the training data, not of the model)."""
        cdf, logp = popularity_tables(counts)
        device = self.item_emb.weight.device
        self._popularity = (cdf.to(device), logp.to(device))

    def _init(self, std: float) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    # ------------------------------------------------------------------ encoder
    def forward(self, input_ids: torch.Tensor, return_layers: bool = False, last_only: bool = False):
        """Hidden states [B, L, D]; with ``return_layers`` also a list of each block's output;
        with ``last_only`` the last position's state alone, [B, 1, D] (what scoring reads)."""
        input_ids = input_ids[:, -self.maxlen :]
        width = input_ids.shape[1]
        if self.padding == "position":  # the whole window, as the padded positions carry state
            input_ids = F.pad(input_ids, (self.maxlen - width, 0))
        length = input_ids.shape[1]
        if self.position_from == "oldest":  # the k-th item of the window from its oldest one gets position k,
            # whatever the length (BERT4Rec's and RecBole's left-aligned convention): appending an item
            # leaves the others' positions as they were
            positions = ((input_ids > 0).long().cumsum(1) - 1).clamp(min=0)
        else:  # counted back from the newest position of the window: the newest item always at maxlen - 1
            positions = torch.arange(self.maxlen - length, self.maxlen, device=input_ids.device)
        x = self.item_emb(input_ids)
        if self.scale_item_embeddings:
            x = x * math.sqrt(self.item_emb.embedding_dim)
        x = self.emb_norm(x + self.pos_emb(positions))
        # "zero": padding rows are zero everywhere (the Fourier filter mixes positions);
        # "position": they keep their position embedding and whatever the blocks make of it
        real = (input_ids > 0).unsqueeze(-1) if self.padding == "zero" else torch.ones_like(input_ids[..., None], dtype=torch.bool)
        x = self.emb_drop(x) * real
        mask = attention_mask(input_ids, self.causal, "self" if self.padding == "zero" else "all")
        layers = []
        for i, block in enumerate(self.blocks):
            last = last_only and i == len(self.blocks) - 1
            if last:
                real = real[:, -1:]
            x = block(x, mask, last) * real
            layers.append(x)
        h = self.final_ln(x) * real
        if width < length and not last_only:  # back to the caller's (trimmed) width
            h, layers = h[:, -width:], [layer[:, -width:] for layer in layers]
        return (h, layers) if return_layers else h

    def item_weights(self) -> torch.Tensor:
        """Output embedding of items 0..n_items (tied with the input embedding)."""
        return self.item_emb.weight[: self.n_items + 1]

    # ------------------------------------------------------------------ scoring
    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Output head applied to hidden states before scoring (identity for SASRec)."""
        return hidden

    def output_bias(self) -> torch.Tensor | None:
        return None

    def last_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The representation that scores the next item, [B, D]."""
        return self.project(self(input_ids, last_only=True)[:, -1])

    def logits_all(self, h: torch.Tensor) -> torch.Tensor:
        """Scores of items 0..n_items for rows of ``h`` [N, D]; padding column set to -inf."""
        logits = h @ self.item_weights().T
        bias = self.output_bias()
        if bias is not None:
            logits = logits + bias
        logits[:, 0] = -math.inf
        return logits

    def logits_of(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of given ``items`` ([N, C]) for rows of ``h`` ([N, D])."""
        logits = (self.item_emb(items) * h.unsqueeze(1)).sum(-1)
        bias = self.output_bias()
        return logits + bias[items] if bias is not None else logits

    def full_scores(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.logits_all(self.last_hidden(input_ids))

    def candidate_scores(self, input_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.logits_of(self.last_hidden(input_ids), candidates)

    def set_epoch(self, epoch: int) -> None:
        """Staged loss (``ce_from_epoch``): the cheap sampled loss for the early epochs, the
        full softmax from that (1-based) epoch on, when the cosine anneals. Called by
        ``core.train.fit`` before every epoch, so a resumed run trains each epoch the same."""
        start = self._args.get("ce_from_epoch", 0)
        if start:
            self.loss_name = "ce" if epoch >= start else self._args["loss"]

    # ------------------------------------------------------------------ losses
    def prediction_loss(self, hidden: torch.Tensor, targets: torch.Tensor, seqs: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Loss of predicting ``targets`` ([B, L], 0 = no target) from projected ``hidden`` ([B, L, D]).

        ``seqs`` ([B, L'] item ids) are the items the BCE negatives must avoid.
        """
        sel = targets > 0
        h = hidden[sel]
        pos = targets[sel]
        if self.loss_name == "ce":
            return self.chunked_cross_entropy(h, pos)
        if self.loss_name == "sampled_softmax":
            # negatives shared by the whole batch: one [N, num_negatives] matmul
            pop = self._popularity
            if pop is not None and pop[0].device != h.device:
                pop = self._popularity = (pop[0].to(h.device), pop[1].to(h.device))
            negs, logq = draw_negatives(self.negative_sampler, self.num_negatives, self.n_items, pos, generator, pop)
            neg_logits = h @ self.item_emb(negs).T
            bias = self.output_bias()
            if bias is not None:
                neg_logits = neg_logits + bias[negs]
            return sampled_softmax_loss(self.logits_of(h, pos.view(-1, 1)), neg_logits, pos, negs, logq)
        # bce: one negative per position, outside the user's sequence
        negs = sample_train_negatives(seqs, self.n_items, (targets.shape[1],), generator)[sel]
        pair = self.logits_of(h, torch.stack([pos, negs], dim=1)).float()
        return F.binary_cross_entropy_with_logits(pair[:, 0], torch.ones_like(pair[:, 0])) + \
            F.binary_cross_entropy_with_logits(pair[:, 1], torch.zeros_like(pair[:, 1]))

    # at most this many logits (rows x catalog) exist at once in the full-softmax loss; 2M (8 MB)
    # rather than 8M: same step time on Beauty, but glibc's heap then fragments far less (peak
    # RSS ~560 MB instead of ~900 MB over 40 steps; benchmarks/README.md, "Memory")
    ce_chunk_elements: int = 1 << 21
    # ...but never fewer rows than this: on 64k-item catalogs (TriGRec) tiny chunks would add
    # per-chunk overhead, so those keep about the chunks they had under the 8M budget
    ce_min_rows: int = 128

    def chunked_cross_entropy(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Full-catalog softmax cross-entropy, in row chunks.

        Peak memory is one chunk's logits (~8 MB) instead of [positions x catalog] three times
        over (logits, log-softmax, gradient), which on Amazon-sized data was ~2 GB per batch.
        ``fused`` (default) computes each chunk's gradient in the forward pass
        (``core.models.full_softmax``); ``checkpointed`` recomputes the chunks in backward under
        autograd, the path of every run before stop 40, which its rows reproduce to the last digit.
        """
        rows = max(self.ce_min_rows, self.ce_chunk_elements // (self.n_items + 1))
        if self.ce_impl == "fused" and torch.is_grad_enabled():
            return fused_full_softmax(h, self.item_weights(), self.output_bias(), targets, rows)
        if len(h) <= rows:
            return F.cross_entropy(self.logits_all(h).float(), targets)
        total = h.new_zeros((), dtype=torch.float32)
        for start in range(0, len(h), rows):
            total = total + checkpoint(self._ce_sum, h[start:start + rows], targets[start:start + rows], use_reentrant=False)
        return total / len(h)

    def _ce_sum(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits_all(h).float(), targets, reduction="sum")

    def training_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        if batch.get("last_target"):  # prefix rows: only the last position has a target
            hidden = self.project(self(batch["input"], last_only=True))
            seqs = torch.cat([batch["input"], batch["target"][:, -1:]], dim=1)
            return self.prediction_loss(hidden, batch["target"][:, -1:], seqs, generator)
        hidden = self.project(self(batch["input"]))
        seqs = torch.cat([batch["input"], batch["target"]], dim=1)
        return self.prediction_loss(hidden, batch["target"], seqs, generator)
