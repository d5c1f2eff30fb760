"""Two towers over feature tokens, fusion per tower, and the interaction scorer.

- ``Tower``: one encoder per feature spec -> tokens (each projected to ``embedding_dim``) ->
  simple fusion (concatenate + MLP) or attention fusion (a transformer over the tokens with
  an optional CLS token) -> one vector.
- ``UniversalModel``: user and item towers; items always have a learned id embedding table
  (a token when ``item.use_id_embedding``, and the vectors that temporal item-id lists read),
  users optionally. Scorer ``dot`` (retrieval: u . i) or ``classifier`` (the upstream's MLP head
  over the fused pair); ``score_matrix`` ranks every item for a batch of users either way.
- Loss: BCE on positives and sampled negatives, an in-batch softmax, both, or
  ``sampled_softmax``: one softmax per row over the in-batch items and the row's own uniform
  negatives (mixed negative sampling, Yang et al. 2020). With ``logq_correction`` every
  sampled logit loses log(its expected count among the draws): B x training share for an
  in-batch item (Yi et al. 2019: in-batch negatives are drawn by popularity), k / n_items for
  a uniform one, so both kinds estimate the same full softmax.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import CheckpointError, ConfigError
from universal.encoders import (CategoricalEncoder, ContinuousEncoder, CustomEncoder, ImageEncoder,
                                TemporalItemsEncoder, TextEncoder, VectorEncoder, mlp, resolve_encoder)
from universal.features import SERIES_STATS


class SimpleFusion(nn.Module):
    def __init__(self, n_tokens: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = mlp([n_tokens * dim, 2 * dim, dim], dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens.flatten(1))


class AttentionFusion(nn.Module):
    """A transformer over the feature tokens (each with a learned slot embedding)."""

    def __init__(self, n_tokens: int, dim: int, layers: int, heads: int, dropout: float, cls: bool, norm: bool) -> None:
        super().__init__()
        self.slots = nn.Parameter(torch.randn(n_tokens + int(cls), dim) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if cls else None
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1)
        tokens = tokens + self.slots
        if self.encoder is not None:
            tokens = self.encoder(tokens)
        fused = tokens[:, 0] if self.cls is not None else tokens.mean(1)
        return self.out(self.norm(fused))


def build_encoder(spec: dict, cfg, dim: int, text_dim: int, custom: dict[str, nn.Module]) -> nn.Module:
    kind = spec["kind"]
    if kind == "text":
        tc = cfg.text_encoder_config
        return TextEncoder(len(spec["fields"]), text_dim, cfg.token_dim(tc.embedding_dim), tc.aggregation_strategy == "mean")
    if kind == "categorical":
        cc = cfg.categorical_encoder_config
        return CategoricalEncoder([spec["rows"][f] for f in spec["fields"]], cfg.token_dim(cc.embedding_dim),
                                  cc.aggregation_strategy == "mean", list(cc.mlp_hidden_dims))
    if kind == "continuous":
        cc = cfg.continuous_encoder_config
        return ContinuousEncoder(len(spec["fields"]), cfg.token_dim(cc.embedding_dim), list(cc.hidden_dims), cc.dropout)
    if kind == "temporal_items":
        tc = cfg.temporal_encoder_config
        return TemporalItemsEncoder(dim, cfg.token_dim(tc.output_dim), tc.aggregation_strategy)
    if kind == "temporal_series":
        return VectorEncoder(len(SERIES_STATS), cfg.token_dim(cfg.temporal_encoder_config.output_dim), [dim])
    if kind == "image":
        ic = cfg.image_encoder_config
        return ImageEncoder(list(ic.channels), cfg.token_dim(ic.embedding_dim))
    if kind == "image_vector":
        return VectorEncoder(spec["dim"], cfg.token_dim(cfg.image_encoder_config.embedding_dim))
    if kind == "custom":
        where = f"feature type {spec['type']!r}"
        if spec["type"] in custom:  # pipeline.add_encoder: the same instance for every field of the type
            return CustomEncoder(custom[spec["type"]], spec["dim"], where)
        if spec["encoder"] == "python":
            raise CheckpointError(f"{where} was trained with an encoder added in Python; call "
                                  f"pipeline.add_encoder({spec['type']!r}, module) before loading the checkpoint")
        cls = resolve_encoder(spec["encoder"], f"custom_encoders.{spec['type']}")
        return CustomEncoder(cls(spec["dim"], dim), spec["dim"], where)
    raise ConfigError(f"unknown feature kind {kind!r}")


class Tower(nn.Module):
    def __init__(self, name: str, specs: list[dict], tower_cfg, cfg, text_dim: int, custom: dict) -> None:
        super().__init__()
        dim = cfg.embedding_dim
        self.names = [s["name"] for s in specs]
        self.encoders = nn.ModuleList(build_encoder(s, cfg, dim, text_dim, custom) for s in specs)
        self.projs = nn.ModuleList()
        for enc in self.encoders:  # attention needs one token size; encoders may choose their own
            self.projs.append(nn.Linear(enc.out_dim, dim) if enc.out_dim != dim else nn.Identity())
        self.use_ids = tower_cfg.use_id_embedding
        n_tokens = sum(e.n_tokens for e in self.encoders) + int(self.use_ids)
        if n_tokens == 0:
            raise ConfigError(f"the {name} tower has no inputs: the {name}s carry no features; "
                              f"set {name}_use_id_embedding=true or add features to the data")
        if tower_cfg.use_simple_fusion:
            self.fusion = SimpleFusion(n_tokens, dim, tower_cfg.dropout)
        else:
            self.fusion = AttentionFusion(n_tokens, dim, tower_cfg.num_attention_layers, tower_cfg.num_heads,
                                          tower_cfg.dropout, tower_cfg.use_cls_token, tower_cfg.use_layer_norm)

    def forward(self, feats: dict, id_vectors: torch.Tensor | None, ctx: dict) -> torch.Tensor:
        tokens = []
        for name, enc, proj in zip(self.names, self.encoders, self.projs):
            part = {k[len(name) + 1:]: v for k, v in feats.items() if k.startswith(name + "/")}
            tokens.append(proj(enc(part, ctx)))
        if self.use_ids:
            tokens.append(id_vectors.unsqueeze(1))
        return self.fusion(torch.cat(tokens, 1))


class PairClassifier(nn.Module):
    """The upstream's classifier head: [u, i, u*i] (or a transformer over the two tokens) -> MLP -> logit."""

    def __init__(self, cfg) -> None:
        super().__init__()
        dim, ic = cfg.embedding_dim, cfg.interaction
        self.attention = None
        if not ic.use_simple_fusion and ic.num_attention_layers:
            layer = nn.TransformerEncoderLayer(dim, ic.num_heads, 2 * dim, ic.dropout, batch_first=True, norm_first=True)
            self.attention = nn.TransformerEncoder(layer, ic.num_attention_layers, enable_nested_tensor=False)
            self.slots = nn.Parameter(torch.randn(2, dim) * 0.02)
        self.head = mlp([3 * dim, *cfg.classifier.hidden_dims, 1], cfg.classifier.dropout)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            pair = self.attention(torch.stack([u, i], 1) + self.slots)
            u, i = pair[:, 0], pair[:, 1]
        return self.head(torch.cat([u, i, u * i], -1)).squeeze(-1)


class UniversalModel(nn.Module):
    """``core.models.base.Recommender``: scoring inputs are the users' feature rows (a user table
    gathered at their rows); side input ``items``: the item table (rows 0..n_items) or its
    ``item_vectors``."""

    kind = "universal"

    def __init__(self, schema: dict, cfg, n_users: int, n_items: int, text_dim: int,
                 custom: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        # the constructor's arguments as objects (checkpoints store the schema, sizes and config
        # themselves: universal.pipeline)
        self.model_args = dict(schema=schema, cfg=cfg, n_users=n_users, n_items=n_items, text_dim=text_dim,
                               custom=custom)
        custom = custom or {}
        dim = cfg.embedding_dim
        self.item_ids = nn.Embedding(n_items + 1, dim)  # row 0: an item unknown to the model
        nn.init.normal_(self.item_ids.weight, std=0.1)
        self.user_ids = nn.Embedding(n_users + 1, dim) if cfg.user.use_id_embedding else None
        if self.user_ids is not None:
            nn.init.normal_(self.user_ids.weight, std=0.1)
        self.user_tower = Tower("user", schema["user"], cfg.user, cfg, text_dim, custom)
        self.item_tower = Tower("item", schema["item"], cfg.item, cfg, text_dim, custom)
        self.scorer = cfg.scorer
        self.classifier = PairClassifier(cfg) if cfg.scorer == "classifier" else None
        self.loss_type = cfg.loss_type
        self.logq_correction = getattr(cfg, "logq_correction", False)
        # log of each item's training share, for the log-Q correction; not a parameter and not
        # saved (it belongs to the training data), set by ``set_item_counts``
        self.register_buffer("item_logq", torch.zeros(n_items + 1), persistent=False)

    def set_item_counts(self, counts) -> None:
        """Training interactions per item row (0..n_items) for the in-batch log-Q correction."""
        c = torch.as_tensor(counts, dtype=torch.float64) + 1.0  # +1: an unseen item is rare, not impossible
        self.item_logq.copy_(torch.log(c / c.sum()).to(self.item_logq))

    # ------------------------------------------------------------------ vectors and scores
    def user_vectors(self, feats: dict, exclude_items: torch.Tensor | None = None) -> torch.Tensor:
        ids = self.user_ids(feats["_id"]) if self.user_ids is not None else None
        return self.user_tower(feats, ids, {"item_table": self.item_ids, "exclude_items": exclude_items})

    def item_vectors(self, feats: dict) -> torch.Tensor:
        return self.item_tower(feats, self.item_ids(feats["_id"]), {"item_table": self.item_ids})

    def score_pairs(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return (u * i).sum(-1) if self.classifier is None else self.classifier(u, i)

    def score_matrix(self, u: torch.Tensor, items: torch.Tensor, pairs_per_chunk: int = 1 << 16) -> torch.Tensor:
        """[B, D] x [N, D] -> [B, N]; the classifier head runs over item chunks of bounded size."""
        if self.classifier is None:
            return u @ items.T
        chunk = max(1, pairs_per_chunk // max(1, len(u)))
        out = []
        for start in range(0, len(items), chunk):
            it = items[start:start + chunk]
            uu = u.unsqueeze(1).expand(-1, len(it), -1).reshape(-1, u.shape[1])
            ii = it.unsqueeze(0).expand(len(u), -1, -1).reshape(-1, u.shape[1])
            out.append(self.classifier(uu, ii).view(len(u), len(it)))
        return torch.cat(out, 1)

    def full_scores(self, users: dict, items: dict | torch.Tensor) -> torch.Tensor:
        """[B, n_items + 1] scores of every item row for the users' feature rows; ``items``: the
        item table or its vectors. Column 0 (an item unknown to the model) never ranks."""
        s = self.score_matrix(self.user_vectors(users), items if torch.is_tensor(items) else self.item_vectors(items))
        s[:, 0] = float("-inf")
        return s

    def candidate_scores(self, users: dict, candidates: torch.Tensor, items: dict | torch.Tensor) -> torch.Tensor:
        """[B, C] scores of the item rows ``candidates`` for the users' feature rows."""
        u = self.user_vectors(users)
        flat = candidates.reshape(-1)
        vec = items[flat] if torch.is_tensor(items) else self.item_vectors({k: v[flat] for k, v in items.items()})
        pairs = u.unsqueeze(1).expand(-1, candidates.shape[1], -1).reshape(len(flat), -1)
        return self.score_pairs(pairs, vec).view(candidates.shape)

    # ------------------------------------------------------------------ training
    def training_loss(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        pos_id = batch["pos"]["_id"]
        u = self.user_vectors(batch["user"], exclude_items=pos_id)
        i = self.item_vectors(batch["pos"])
        out: dict = {}
        total = torch.zeros((), device=u.device)
        if self.loss_type == "sampled_softmax":
            return self._mixed_softmax(batch, u, i, pos_id)
        if self.loss_type in ("bce", "bce+softmax"):
            k = batch["neg_weight"].shape[1]
            n = self.item_vectors(batch["neg"]).view(len(u), k, -1)
            neg = self.score_pairs(u.unsqueeze(1).expand(-1, k, -1).reshape(len(u) * k, -1), n.reshape(len(u) * k, -1))
            w = batch["neg_weight"]
            bce = (F.softplus(-self.score_pairs(u, i)).sum() + (F.softplus(neg.view_as(w)) * w).sum()) / (len(u) + w.sum())
            out["bce"] = bce.detach()
            total = total + bce
        if self.loss_type in ("softmax", "bce+softmax"):
            logits = self._inbatch_logits(batch, u, i, pos_id)
            soft = F.cross_entropy(logits, torch.arange(len(u), device=u.device))
            out["softmax"] = soft.detach()
            total = total + soft
        out["loss"] = total
        return out

    def _inbatch_logits(self, batch: dict, u: torch.Tensor, i: torch.Tensor, pos_id: torch.Tensor) -> torch.Tensor:
        logits = self.score_matrix(u, i)
        if self.logq_correction:  # column j is item pos_id[j]; expected count among B draws = B x its share
            logits = logits - (self.item_logq[pos_id] + math.log(len(pos_id))).view(1, -1)
        return logits.masked_fill(batch["inbatch_seen"], float("-inf"))

    def _mixed_softmax(self, batch: dict, u: torch.Tensor, i: torch.Tensor, pos_id: torch.Tensor) -> dict:
        """Softmax over [in-batch items | this row's k uniform negatives], target on the diagonal."""
        k = batch["neg_weight"].shape[1]
        n = self.item_vectors(batch["neg"]).view(len(u), k, -1)
        neg = self.score_pairs(u.unsqueeze(1).expand(-1, k, -1).reshape(len(u) * k, -1),
                               n.reshape(len(u) * k, -1)).view(len(u), k)
        if self.logq_correction:
            neg = neg - math.log(k / (len(self.item_logq) - 1))
        neg = neg.masked_fill(batch["neg_weight"] == 0, float("-inf"))  # a fractional ratio's undrawn slot
        logits = torch.cat([self._inbatch_logits(batch, u, i, pos_id), neg], 1)
        loss = F.cross_entropy(logits, torch.arange(len(u), device=u.device))
        return {"loss": loss, "softmax": loss.detach()}
