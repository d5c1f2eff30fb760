"""Cross-domain SASRec: source-to-target transfer for cold-start users (``python -m cross_domain``).

Library: ``cross_domain.transfer`` (``train_source``, ``train_target``, ``run_experiment``),
``cross_domain.compare`` (``compare``), ``cross_domain.evaluate`` (``paired_test``,
``paired_tests``, reports by all / cold / warm users), ``cross_domain.recommend``,
``cross_domain.rl`` (``rl_demo``), ``cross_domain.data`` (domains, the cold-start protocol),
``cross_domain.model`` (``CrossDomainSASRec``).
"""
