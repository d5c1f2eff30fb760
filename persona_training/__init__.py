"""Persona training: contrastive user-history vs persona encoder, memmap caches, candidate reranking. Filled by a later issue."""
