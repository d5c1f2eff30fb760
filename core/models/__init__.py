"""Sequence encoders behind one interface (``core.models.base.SequentialRecommender``)."""
from core.models.bert4rec import BERT4Rec
from core.models.bsarec import BSARec
from core.models.sasrec import SASRec

MODELS = {"sasrec": SASRec, "bert4rec": BERT4Rec, "bsarec": BSARec}


def build_model(kind: str, **kwargs):
    """Build a registered model by name (a fixed table, never a name looked up at run time)."""
    try:
        cls = MODELS[kind]
    except KeyError:
        from core.errors import ConfigError

        raise ConfigError(f"model_type {kind!r} is not one of {', '.join(MODELS)}") from None
    return cls(**kwargs)
