"""TriGRec stage 1: multi-domain user representations (specific / common / cross encoders). Filled by a later issue."""
