"""SASRec (Kang & McAuley, 2018): a causal Transformer over the item sequence.

Every position predicts the next item, so one sequence trains all its positions at once.
Pre-LayerNorm blocks, tied input/output item embeddings, padding id 0.
"""
from __future__ import annotations

from core.models.base import SequentialRecommender


class SASRec(SequentialRecommender):
    causal = True
    kind = "sasrec"
