"""Train SASRec / BERT4Rec, optionally distilling user-profile embeddings, and report test metrics.

    python -m distillation.training --config configs/distillation/sasrec.yaml            # baseline
    python -m distillation.training --config configs/distillation/sasrec_llm/ml-100k.yaml # + profiles
    python -m distillation.training --config configs/distillation/sasrec/beauty.yaml --override "seed=2,run_name=s2"
    torchrun --nproc_per_node=2 -m distillation.training --config ... --override device=cpu

Outputs: state_dict/distillation/<dataset>/<run_name>/ (best.pt, last.pt, config.yaml,
metrics.jsonl, results.json); run_name defaults to the model (sasrec, bert4rec), --debug adds
"-debug". A folder holding another run is refused: --override run_name=<new>, overwrite=true
(replace it) or training.resume=true (continue it).
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from core.cli import add_common_args, cli_overrides, run, setup_logging
from core.config import load_config
from core.dist import cleanup, is_main
from core.report import RESULT_COLUMNS, format_table, result_rows
from core.seqrec import run_name_of
from distillation.config import DistillConfig
from distillation.pipeline import run_distillation

DEFAULT_CONFIG = "configs/distillation/sasrec.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, default_config=DEFAULT_CONFIG)
    parser.add_argument("--debug", action="store_true", help="tiny run: 2 epochs of 5 batches, 500 validation users, "
                                                              "in its own folder <run_name>-debug")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    overrides = cli_overrides(args)
    if args.debug:
        overrides = "training.epochs=2,training.max_steps_per_epoch=5,eval.valid_max_users=500" + (
            "," + overrides if overrides else "")
    cfg = load_config(DistillConfig, args.config, overrides)
    if args.debug:  # a smoke run never lands in (or is refused by) the real run's folder
        cfg = replace(cfg, run_name=run_name_of(cfg) + "-debug")
    res = run_distillation(cfg, log=print if not args.verbose else logging.getLogger("distillation").info)
    main_rank = is_main()
    cleanup()
    if main_rank:
        print(f"\nTest ({res['dataset']}, full ranking, history excluded; best validation epoch {res['best_epoch']}):")
        print(format_table(result_rows([("Popularity", res["popularity_test"]),
                                        (cfg.model.model_type + ("+distill" if res.get("distill") else ""), res["test"])]), RESULT_COLUMNS))
        print(f"results: {res['run_dir']}/results.json")
    return 0


if __name__ == "__main__":
    run(main)
