"""BSARec (Shin et al., AAAI 2024): SASRec whose blocks mix self-attention with a Fourier
low-pass / high-pass filter of the sequence (``core.models.transformer.FrequencyMixBlock``).

Causal like SASRec and trained the same way; embeddings are item + position, then LayerNorm
(no sqrt(d) scaling), and the blocks are post-LayerNorm, as in the paper's code.

``padding`` chooses what the padded positions of a window hold:
- ``"zero"`` (default): zeros, so the filter sees only the user's items and batches can be
  trimmed to their longest row;
- ``"position"``: as in the authors' code, each padded position keeps its position embedding,
  its attention row (no visible key) attends to every position, and the filter mixes these
  states into the real positions; every window is then ``maxlen`` wide.
"""
from __future__ import annotations

from torch import nn

from core.models.base import SequentialRecommender
from core.models.transformer import FrequencyMixBlock


class BSARec(SequentialRecommender):
    causal = True
    kind = "bsarec"
    scale_item_embeddings = False
    final_norm = False

    def __init__(self, n_items: int, filter_alpha: float = 0.7, filter_c: int = 5, padding: str = "zero",
                 **kwargs) -> None:
        if padding not in ("zero", "position"):
            raise ValueError(f"padding must be 'zero' or 'position', got {padding!r}")
        if padding == "position" and kwargs.get("position_from", "newest") != "newest":
            raise ValueError("position_from=oldest counts real items; padding=position gives every padded "
                             "position its own embedding, counted from the newest")
        self._filter = (filter_alpha, filter_c, kwargs.get("maxlen", 50))
        super().__init__(n_items, **kwargs)
        self.padding = padding
        self._args.update(filter_alpha=filter_alpha, filter_c=filter_c)
        if padding != "zero":  # only then: checkpoints of existing configs keep their exact args
            self._args["padding"] = padding

    def make_block(self, hidden: int, heads: int, dropout: float) -> nn.Module:
        alpha, c, maxlen = self._filter
        return FrequencyMixBlock(hidden, heads, dropout, maxlen, alpha, c)
