"""Turn raw public datasets into prepared dataset folders (see ``core.data.sequences``).

Usage: ``python -m core.data.prepare <preparer> [args] [--out DIR]``; ``--out`` defaults to
``data/<dataset name>`` under the repo root. Preparers (one module each):

- ``movielens --path DIR [--min-count N] [--name NAME]``  MovieLens 1M / 100K raw files
- ``seq-lines --path FILE [--name NAME]``                 ``user item item ...`` per line
- ``sasrec-txt --path FILE [--name NAME]``                ``user item`` per line
- ``food-kitchen --path DIR``                             the six TriGRec pickles
- ``recbole --path FILE.inter [--name NAME]``             RecBole atomic file
- ``amazon-2023 --path A.jsonl B.jsonl [--max_items N]``  Amazon Reviews 2023, two categories
- ``synthetic-large --interactions N --items M --users U --alpha A``  catalog-scale workload,
  streamed to disk in chunks (``core.data.synthetic_large``)

Each module parses everything first (``load``) and only then is anything written
(``common.write_prepared``), so bad input raises a ``DataError`` and leaves no folder behind.
"""
from core.data.prepare.common import Prepared, default_out, summary, write_prepared

__all__ = ["Prepared", "default_out", "summary", "write_prepared"]
