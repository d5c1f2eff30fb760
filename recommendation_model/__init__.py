"""TriGRec stage 2: BERT4Rec recommender with cross-attention gating over exported user embeddings. Filled by a later issue."""
