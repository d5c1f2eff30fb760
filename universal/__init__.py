"""Universal two-tower recommender over a JSON data format of users, items and interactions
with text, categorical, continuous, temporal and image features (and registered custom types).

Entry points: ``python -m universal.train`` and ``python -m universal.inference``; library use:
``universal.Pipeline``. See the README section "Universal two-tower".
"""
from universal.encoders import register_encoder
from universal.pipeline import Pipeline

__all__ = ["Pipeline", "register_encoder"]
