"""Shared library of recsys-pipelines: config, data contract, models, metrics, trainer, store.

Nothing in ``core`` imports a pipeline package; pipelines import from here.
"""
