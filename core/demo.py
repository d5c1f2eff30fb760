"""One model alone: generate the default dataset, train SASRec, print test metrics next to popularity.

    python -m core.demo [--config configs/demo/sasrec.yaml] [--override "training.epochs=5"]

`make demo` runs every pipeline instead (``python -m demo``, outside core since it imports them).
"""
from __future__ import annotations

import argparse
import time

from core.cli import add_common_args, cli_overrides, run
from core.config import load_config
from core.dist import cleanup, is_main
from core.report import RESULT_COLUMNS, format_table, result_rows
from core.seqrec import SeqRecConfig, train_and_evaluate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, default_config="configs/demo/sasrec.yaml")
    args = parser.parse_args(argv)
    cfg = load_config(SeqRecConfig, args.config, cli_overrides(args))
    t0 = time.perf_counter()
    res = train_and_evaluate(cfg)
    main_rank = is_main()
    cleanup()
    if not main_rank:
        return 0
    rows = result_rows([("Popularity", res["popularity_test"]), (cfg.model.model_type.upper(), res["test"])])
    print(f"\nTest, full ranking over all {res['dataset']} items, history excluded "
          f"(best validation epoch {res['best_epoch']}):")
    print(format_table(rows, RESULT_COLUMNS))
    lift = res["test"]["NDCG@10"] / max(res["popularity_test"]["NDCG@10"], 1e-12)
    print(f"\nNDCG@10 lift over popularity: {lift:.1f}x; total {time.perf_counter() - t0:.1f}s; outputs in {res['run_dir']}")
    return 0


if __name__ == "__main__":
    run(main)
