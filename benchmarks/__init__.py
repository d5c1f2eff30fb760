"""Benchmark drivers: each module runs the pipelines' own CLIs and public functions in pieces and
writes rows, tables and plots to benchmarks/results/. Run from the repository root as
``python -m benchmarks.<name> ...`` (see benchmarks/README.md); shared row helpers in ``common``.
"""
