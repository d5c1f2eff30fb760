"""Persona training: a contrastive user-history / persona encoder, memmap caches and a reranker.

Entry points: ``python -m persona_training.train_encoder | build_cache | rerank`` (see README).
Library (for scripts such as benchmarks):

- ``schema``: ``load_personas``, ``load_history``, ``load_selections``, ``load_item_summaries``,
  ``load_aspects``, ``load_data`` (strict: file, line and key in every error)
- ``texts``: ``persona_text``, ``interaction_text``, ``history_texts``, ``item_fallback_text``,
  ``item_texts``, ``build_pairs``
- ``encoder``: ``load_encoder``, ``embed_texts``, ``embed_histories``, ``info_nce``, ``train_pairs``
- ``caches``: ``build_cache``, ``open_cache``; ``scoring``: ``Scorer``, ``rerank_lists``, ``user_vector``
- ``synthetic``: ``generate`` (the planted-structure default); ``pipeline``: the three stages
- ``evaluate``: the benchmark's protocol (``Sample``, folds, candidates, baselines, ranks and metrics via core.metrics)
"""
