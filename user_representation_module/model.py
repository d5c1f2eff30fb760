"""TriGRec stage 1: four BERT4Rec encoders with one shared prediction head, a gradient
reversal layer and a domain discriminator.

- ``spe_A`` / ``spe_B`` read one domain's sequence each (domain-specific taste);
- ``common`` reads both domains' sequences and the merged one; its user vectors go through
  the gradient reversal layer into the discriminator (hidden -> 64 -> 3 classes: A, B,
  cross), so the encoder is pushed to make them domain-indistinguishable;
- ``cross`` reads the merged, time-ordered cross-domain sequence.

All four are ``core.models.BERT4Rec`` and share one item table and output head (dense +
GELU + LayerNorm, tied item embeddings + per-item bias), so each encoder's checkpoint is a
plain BERT4Rec that the core tools can load and score with.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.models.bert4rec import BERT4Rec
from core.models.layers import grad_reverse, masked_mean
from user_representation_module.config import PARTS, RepLossConfig

DISC_CLASSES = ("A", "B", "cross")


class DomainDiscriminator(nn.Module):
    kind = "domain-discriminator"

    def __init__(self, hidden_units: int, disc_hidden: int = 64, n_classes: int = len(DISC_CLASSES),
                 dropout_rate: float = 0.1) -> None:
        super().__init__()
        self.model_args = dict(hidden_units=hidden_units, disc_hidden=disc_hidden, n_classes=n_classes,
                               dropout_rate=dropout_rate)
        self.net = nn.Sequential(nn.Linear(hidden_units, disc_hidden), nn.ReLU(), nn.Dropout(dropout_rate),
                                 nn.Linear(disc_hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pooled(hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over a row's real (non-padding) positions: [B, D]."""
    return masked_mean(hidden, rows > 0)


class TriGRecRep(nn.Module):
    """``core.models.base.Recommender``: a training batch holds one cloze batch per view
    (``user_representation_module.data.TriViewCloze``); the scorers score with one encoder,
    ``part`` (default ``cross``, the one that reads both domains)."""

    kind = "trigrec-rep"

    def __init__(self, n_items: int, disc_hidden: int = 64, disc_lr_scale: float = 1.0, **encoder_args) -> None:
        super().__init__()
        self.model_args = dict(n_items=n_items, disc_hidden=disc_hidden, disc_lr_scale=disc_lr_scale, **encoder_args)
        # the discriminator steps faster than the encoders so that it stays a best response
        self.lr_scales = {"discriminator.": disc_lr_scale}
        self.encoders = nn.ModuleDict({part: BERT4Rec(n_items, **encoder_args) for part in PARTS})
        shared = self.encoders["cross"]
        for part in PARTS:  # one prediction head: item table (input + output), dense head, bias
            enc = self.encoders[part]
            if enc is not shared:
                enc.item_emb, enc.head, enc.out_bias = shared.item_emb, shared.head, shared.out_bias
        self.discriminator = DomainDiscriminator(self.encoders["cross"].item_emb.embedding_dim, disc_hidden)

    @property
    def mask_token(self) -> int:
        return self.encoders["cross"].mask_token

    def encoder_loss(self, part: str, batch: dict, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cloze loss, mean-pooled final hidden states) of encoder ``part`` on a masked batch."""
        enc = self.encoders[part]
        hidden = enc(batch["input"])
        seqs = torch.cat([batch["input"], batch["target"]], dim=1)
        return enc.prediction_loss(enc.project(hidden), batch["target"], seqs, generator), pooled(hidden, batch["input"])

    def user_vectors(self, part: str, rows: torch.Tensor) -> torch.Tensor:
        """The exported representation: the encoder's next-item query (history + [MASK])."""
        return self.encoders[part].last_hidden(rows)

    def training_loss(self, batch: dict, generator=None, objective: "TriGRecLoss | None" = None) -> dict:
        """The stage-1 loss of a ``TriViewCloze`` batch: ``objective`` (training passes its
        configured ``TriGRecLoss`` to ``core.train.fit`` as ``loss_fn``, which calls it directly)
        or, without one, ``TriGRecLoss`` with the config's default weights at full reversal strength."""
        if objective is None:
            d = RepLossConfig()
            objective = TriGRecLoss(w_spe=d.w_spe, w_com=d.w_com, w_cross=d.w_cross, adv_weight=d.adv_weight,
                                    grl_lambda=d.grl_lambda, use_grl=d.use_grl, grl_ramp=False)
        return objective(self, batch, generator)

    def full_scores(self, input_ids: torch.Tensor, part: str = "cross") -> torch.Tensor:
        return self.encoders[part].full_scores(input_ids)

    def candidate_scores(self, input_ids: torch.Tensor, candidates: torch.Tensor, part: str = "cross") -> torch.Tensor:
        return self.encoders[part].candidate_scores(input_ids, candidates)


class TriGRecLoss:
    """L = w_spe L_spe + w_com L_com + w_cross L_cross.

    L_spe = CE(spe_A on A rows) + CE(spe_B on B rows); L_cross = CE(cross on cross rows);
    L_com = mean CE(common on A, B, cross rows) + CE(discriminator(GRL(common vectors)), view).
    The discriminator minimises its cross-entropy at full strength; the common encoder gets
    that gradient reversed and scaled by ``adv_weight * grl_lambda * ramp``, where ``ramp``
    rises from 0 to 1 over training (DANN's 2 / (1 + exp(-10 p)) - 1). A discriminator that
    learns no faster than the encoder is fooled *systematically* (accuracy near 0, which still
    separates domains) instead of being pushed to chance; the ramp and the unscaled
    discriminator loss avoid that. ``use_grl=False`` (ablation): the discriminator still trains,
    on detached vectors, and the common encoder gets no adversarial gradient.
    """

    def __init__(self, *, w_spe: float, w_com: float, w_cross: float, adv_weight: float, grl_lambda: float,
                 use_grl: bool, grl_ramp: bool = True, epochs: int = 1) -> None:
        self.w_spe, self.w_com, self.w_cross = w_spe, w_com, w_cross
        self.adv_weight, self.grl_lambda, self.use_grl = adv_weight, grl_lambda, use_grl
        self.grl_ramp, self.epochs = grl_ramp, max(1, epochs)
        self.ramp = 1.0 if not grl_ramp else 0.0

    def set_epoch(self, epoch: int) -> None:
        if self.grl_ramp:
            p = (epoch - 1) / self.epochs
            self.ramp = 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0

    def __call__(self, model: TriGRecRep, batches: dict, generator=None) -> dict:
        spe_a, _ = model.encoder_loss("spe_A", batches["A"], generator)
        spe_b, _ = model.encoder_loss("spe_B", batches["B"], generator)
        com_losses, vectors, labels = [], [], []
        for label, view in enumerate(DISC_CLASSES):
            loss, vec = model.encoder_loss("common", batches[view], generator)
            com_losses.append(loss)
            vectors.append(vec)
            labels.append(torch.full((len(vec),), label, dtype=torch.long, device=vec.device))
        vec = torch.cat(vectors)
        strength = self.adv_weight * self.grl_lambda * self.ramp
        disc_in = grad_reverse(vec, strength) if self.use_grl else vec.detach()
        logits = model.discriminator(disc_in)
        target = torch.cat(labels)
        disc_ce = F.cross_entropy(logits.float(), target)
        l_spe = spe_a + spe_b
        l_com = sum(com_losses) / len(com_losses) + disc_ce
        l_cross, _ = model.encoder_loss("cross", batches["cross"], generator)
        total = self.w_spe * l_spe + self.w_com * l_com + self.w_cross * l_cross
        acc = (logits.argmax(1) == target).float().mean()
        return {"loss": total, "L_spe": l_spe.detach(), "L_com": l_com.detach(), "L_cross": l_cross.detach(),
                "disc_ce": disc_ce.detach(), "disc_acc": acc.detach()}
