"""``python -m core.data.prepare <preparer> [args] [--out DIR]``.

``PREPARERS`` maps a subcommand to ``(add_args, run)``: ``add_args(parser)`` adds the
preparer's own options (``--out`` is added for every preparer), and ``run(args)`` parses the
input and returns a list of ``common.Prepared`` without writing anything. This module then
writes each one and prints ``prepared NAME: N users, M items, K interactions -> DIR``.
A preparer with its own output format returns objects with ``write() -> that line`` instead
(``universal-movielens``: one universal-format JSON document).
Adding a preparer = one import + one entry in ``PREPARERS``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from core.cli import run as cli_run
from core.data import synthetic, synthetic_large
from core.data.prepare import amazon2023, food_kitchen, movielens, recbole, sasrec_txt, seq_lines, universal_movielens
from core.data.prepare.common import Prepared, check_dataset_name, summary, write_prepared

PREPARERS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], list[Prepared]]]] = {
    "movielens": (movielens.add_args, movielens.run),
    "seq-lines": (seq_lines.add_args, seq_lines.run),
    "sasrec-txt": (sasrec_txt.add_args, sasrec_txt.run),
    "food-kitchen": (food_kitchen.add_args, food_kitchen.run),
    "recbole": (recbole.add_args, recbole.run),
    "amazon-2023": (amazon2023.add_args, amazon2023.run),
    "synthetic": (synthetic.add_args, synthetic.run),
    "synthetic-large": (synthetic_large.add_args, synthetic_large.run),
    "universal-movielens": (universal_movielens.add_args, universal_movielens.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.data.prepare",
        description="Prepare a raw dataset into data/<name>/ (sequences.npz, id maps, meta.json).",
    )
    sub = parser.add_subparsers(dest="preparer", metavar="PREPARER", required=True)
    for name, (add_args, _) in PREPARERS.items():
        mod_doc = (getattr(sys.modules.get(add_args.__module__), "__doc__", None) or "").strip()
        p = sub.add_parser(name, help=mod_doc.splitlines()[0] if mod_doc else None,
                           description=mod_doc or None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_args(p)
        p.add_argument("--out", default=None, metavar="DIR",
                       help="output folder (default: data/<dataset name> under the repo root)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # names first: a name the trainers would refuse fails here, before a slow parse and before any write
    if getattr(args, "name", None):
        check_dataset_name(args.name, "--name")
    if args.out:
        check_dataset_name(Path(args.out).name, "--out", Path(args.out).parent)
    _, run = PREPARERS[args.preparer]
    prepared = run(args)  # everything parsed before anything is written
    for p in prepared:
        if isinstance(p, Prepared):
            out = write_prepared(p)
            print(summary(p, out), flush=True)
        else:  # a preparer with its own output format (universal-movielens: one JSON document)
            print(p.write(), flush=True)
    return 0


if __name__ == "__main__":
    cli_run(main)
