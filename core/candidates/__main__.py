"""``python -m core.candidates --candidates cand.jsonl --gt gt.jsonl --ks 5,10,20``: the shared
evaluator's command line (the library is ``core.candidates``)."""
from __future__ import annotations

import argparse

from core.candidates import REPEATS, __doc__ as DESCRIPTION, candidate_metrics, read_candidates, read_ground_truth
from core.cli import run
from core.errors import DataError
from core.store import atomic_write_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.candidates", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", required=True)
    parser.add_argument("--gt", required=True)
    parser.add_argument("--ks", default="5,10,20")
    parser.add_argument("--output", help="write the metrics as JSON here as well")
    parser.add_argument("--repeats", choices=REPEATS, default="error",
                        help="a list naming an item twice: error (default) or keep-first (later copies are misses)")
    args = parser.parse_args(argv)
    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        raise DataError(f"--ks {args.ks!r}: expected comma-separated integers, e.g. 5,10,20") from None
    res = candidate_metrics(read_candidates(args.candidates, args.repeats), read_ground_truth(args.gt), ks)
    for k in ks:
        print(f"@{k:<3d} " + "  ".join(f"{m} {res[f'{m}@{k}']:.4f}" for m in ("HR", "Recall", "NDCG", "Precision")))
    print(f"MRR {res['MRR']:.4f}  users {res['users']} (without a list: {res['users_without_list']})")
    if args.output:
        atomic_write_json(args.output, res)
    return 0


if __name__ == "__main__":
    run(main)
