"""SASRec for the target domain, optionally fused with the user's source-domain vector.

``CrossDomainSASRec`` is the core SASRec plus

- a begin token ``bos`` (= n_items + 1, never scored) in front of every input window, so a
  user with no target history still has a hidden state (learned from predicting first items);
- with ``source_dim > 0``, a bridge that maps the source vector s into the target space
  (b) and a learned gate that mixes it with the sequence state h, per dimension, as the
  seed does: ``g = sigmoid(W [LN(h); LN(b)] + c + u[n])``, ``fused = g * h + (1 - g) * b``,
  where ``u[n]`` is a learned term for the number n of target items the state has seen
  (capped at ``GATE_LENGTHS``), so the gate can open for short histories and close for long
  ones. A user whose source vector is all zeros has none and keeps ``h`` exactly (the
  fallback). Bridges: ``mlp`` (one map for everyone, the seed's) or ``ptupcdr`` (PTUPCDR,
  Zhu et al. 2022: a meta network turns an attention-weighted summary of the user's source
  items into that user's own bridge matrix). Options: ``source_dropout`` hides the source
  vector of a share of training users; ``fuse_max_known`` >= 0 fuses only where at most that
  many target items are known (warm users then get exactly the sequence model's scores).
- loss ``bce`` is the seed's: binary cross-entropy over 1 positive + ``bce_negatives``
  sampled negatives per position, averaged over all of those logits (``ce`` and
  ``sampled_softmax`` are the core's).

The baseline is the same class with ``source_dim = 0``: the same begin token, loss and
encoder, so the only difference to the transfer model is the source vector.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.data.batches import sample_train_negatives
from core.models.sasrec import SASRec
from cross_domain.data import with_bos

BRIDGES = ("mlp", "ptupcdr")
GATE_LENGTHS = 10  # history lengths the gate tells apart (longer ones share the last entry)


def _zero(layer: nn.Linear) -> None:
    """A bridge starts at b = 0: an untrained bridge adds nothing, so the transfer model starts
    as the sequence-only model instead of diluting its scores with noise (measured on the
    synthetic default: a random initial b left both cold and warm users far behind the
    baseline after the same number of epochs)."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


class MLPBridge(nn.Module):
    def __init__(self, source_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        # vectors of other pipelines come at any scale: normalise the input
        self.net = nn.Sequential(nn.LayerNorm(source_dim), nn.Linear(source_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim))
        _zero(self.net[-1])

    def forward(self, source: torch.Tensor, source_history: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(source)


class MetaBridge(nn.Module):
    """PTUPCDR's personalised bridge: ``b_u = s_u W_u`` with ``W_u = meta(p_u)`` and
    ``p_u = sum_j softmax(a(e_j)) e_j`` over the user's source items ``j`` (item vectors of the
    source model, frozen in the ``items`` buffer)."""

    def __init__(self, source_dim: int, hidden: int, out_dim: int, n_source_items: int) -> None:
        super().__init__()
        self.source_dim, self.out_dim = source_dim, out_dim
        self.register_buffer("items", torch.zeros(n_source_items + 1, source_dim))
        self.attention = nn.Sequential(nn.Linear(source_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1, bias=False))
        self.meta = nn.Sequential(nn.Linear(source_dim, hidden), nn.ReLU(), nn.Linear(hidden, source_dim * out_dim))
        _zero(self.meta[-1])

    def forward(self, source: torch.Tensor, source_history: torch.Tensor | None = None) -> torch.Tensor:
        if source_history is None:
            raise ValueError("the ptupcdr bridge needs the users' source histories")
        e = self.items[source_history]  # [B, H, Ds]
        logits = self.attention(e).squeeze(-1).masked_fill(source_history == 0, float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # no source items: p_u = 0
        p = (weights.unsqueeze(-1) * e).sum(1)
        w = self.meta(p).view(-1, self.source_dim, self.out_dim)
        return torch.bmm(source.unsqueeze(1), w).squeeze(1)


class CrossDomainSASRec(SASRec):
    """``core.models.base.Recommender``; scoring inputs carry the begin token (``with_bos``); side
    inputs ``source`` ([B, source_dim], a zero row = none) and, for ``ptupcdr``, ``source_history``
    ([B, H] source item ids): batch entries in training, keywords of the scorers."""

    kind = "cross-domain-sasrec"

    def __init__(self, n_items: int, source_dim: int = 0, bridge: str = "mlp", bridge_hidden: int = 128,
                 meta_hidden: int = 64, n_source_items: int = 0, bce_negatives: int = 4, gate_bias: float = 0.0,
                 source_dropout: float = 0.0, fuse_max_known: int = -1, **sasrec_args) -> None:
        super().__init__(n_items, extra_tokens=1, **sasrec_args)
        if bridge not in BRIDGES:
            raise ValueError(f"bridge must be one of {BRIDGES}, got {bridge!r}")
        self._args.update(source_dim=source_dim, bridge=bridge, bridge_hidden=bridge_hidden, meta_hidden=meta_hidden,
                          n_source_items=n_source_items, bce_negatives=bce_negatives, gate_bias=gate_bias,
                          source_dropout=source_dropout, fuse_max_known=fuse_max_known)
        self.bos = n_items + 1
        self.bce_negatives, self.source_dropout, self.fuse_max_known = bce_negatives, source_dropout, fuse_max_known
        d = self.item_emb.embedding_dim
        self.bridge: nn.Module | None = None
        if source_dim:
            self.bridge = (MLPBridge(source_dim, bridge_hidden, d, sasrec_args.get("dropout_rate", 0.2)) if bridge == "mlp"
                           else MetaBridge(source_dim, meta_hidden, d, n_source_items))
            self.gate = nn.Linear(2 * d, d)
            # the gate also sees how many target items precede the position (capped): the
            # source vector matters most where the sequence says little
            self.gate_length = nn.Embedding(GATE_LENGTHS + 1, d)
            nn.init.zeros_(self.gate_length.weight)
            nn.init.normal_(self.gate.weight, std=sasrec_args.get("initializer_range", 0.02))
            nn.init.constant_(self.gate.bias, gate_bias)

    def with_bos(self, inputs: torch.Tensor) -> torch.Tensor:
        return with_bos(inputs, self.bos)

    # ------------------------------------------------------------------ fusion
    def gate_values(self, h: torch.Tensor, b: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Per-dimension gate in (0, 1); ``known``: target items before each position."""
        d = h.shape[-1]
        x = torch.cat([F.layer_norm(h, (d,)), F.layer_norm(b, (d,))], dim=-1)
        return torch.sigmoid(self.gate(x) + self.gate_length(known.clamp(max=GATE_LENGTHS)))

    def fuse(self, h: torch.Tensor, source: torch.Tensor | None = None, source_history: torch.Tensor | None = None,
             known: torch.Tensor | None = None) -> torch.Tensor:
        """``h`` ([B, D] or [B, L, D]) mixed with the bridged source vector ([B, Ds]) through the
        gate; rows whose source vector is all zeros return ``h`` unchanged. ``known`` ([B] or
        [B, L]): target items the state has seen (0 = the begin token only)."""
        if self.bridge is None or source is None:
            return h
        has = source.ne(0).any(-1)
        b = self.bridge(source, source_history)
        if h.dim() == 3:
            b = b.unsqueeze(1).expand_as(h)
        if known is None:
            known = torch.zeros(h.shape[:-1], dtype=torch.long, device=h.device)
        g = self.gate_values(h, b, known)
        fused = g * h + (1 - g) * b
        use = has.view(-1, *([1] * (known.dim() - 1))).expand_as(known)
        if self.fuse_max_known >= 0:
            use = use & (known <= self.fuse_max_known)
        return torch.where(use.unsqueeze(-1), fused, h)

    # ------------------------------------------------------------------ scoring (inputs already carry the begin token)
    @staticmethod
    def known_items(input_ids: torch.Tensor) -> torch.Tensor:
        """[B, L] number of target items up to each position (the begin token counts 0)."""
        return ((input_ids > 0).long().cumsum(1) - 1).clamp(min=0)

    def last_hidden(self, input_ids: torch.Tensor, source=None, source_history=None) -> torch.Tensor:
        return self.fuse(self(input_ids, last_only=True)[:, -1], source, source_history, self.known_items(input_ids)[:, -1])

    def full_scores(self, input_ids, source=None, source_history=None) -> torch.Tensor:
        return self.logits_all(self.last_hidden(input_ids, source, source_history))

    def candidate_scores(self, input_ids, candidates, source=None, source_history=None) -> torch.Tensor:
        return self.logits_of(self.last_hidden(input_ids, source, source_history), candidates)

    # ------------------------------------------------------------------ training
    def training_loss(self, batch: dict, generator: torch.Generator | None = None, source=None,
                      source_history=None) -> torch.Tensor:
        """Next-item loss of a batch; the source side is the batch's ``source`` / ``source_history``
        entries (rows of its ``users``) unless given here."""
        source = batch.get("source") if source is None else source
        source_history = batch.get("source_history") if source_history is None else source_history
        if source is not None and self.source_dropout > 0:
            # hide the source vector of some training users: the shared encoder must stay a good
            # sequence-only model (the fallback), and the bridge cannot stand in for it
            keep = torch.rand(len(source), device=source.device, generator=generator) >= self.source_dropout
            source = source * keep.unsqueeze(1)
        hidden = self.fuse(self(batch["input"]), source, source_history, self.known_items(batch["input"]))
        seqs = torch.cat([batch["input"], batch["target"]], dim=1)
        return self.prediction_loss(hidden, batch["target"], seqs, generator)

    def prediction_loss(self, hidden, targets, seqs, generator=None) -> torch.Tensor:
        if self.loss_name != "bce":
            return super().prediction_loss(hidden, targets, seqs, generator)
        sel = targets > 0
        # negatives outside the row's items (the begin token is above n_items, never drawn)
        negs = sample_train_negatives(seqs, self.n_items, (targets.shape[1], self.bce_negatives), generator)[sel]
        items = torch.cat([targets[sel].unsqueeze(1), negs], dim=1)
        logits = self.logits_of(hidden[sel], items).float()
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)


def build(model_args: dict) -> CrossDomainSASRec:
    return CrossDomainSASRec(**model_args)
