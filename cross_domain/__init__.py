"""Cross-domain SASRec: source-to-target transfer for cold-start users. Filled by a later issue."""
