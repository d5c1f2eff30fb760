"""Evaluate a saved checkpoint on validation and test (full ranking + sampled protocols).

    python -m distillation.evaluation --model-path state_dict/distillation/beauty/default/best.pt \
        --config configs/distillation/sasrec/beauty.yaml

The checkpoint must have been trained on the dataset the config names (its data fingerprint
is checked). ``--output FILE`` also writes the metrics as JSON.
"""
from __future__ import annotations

import argparse

from core.cli import add_common_args, cli_overrides, run
from core.config import load_config
from core.report import RESULT_COLUMNS, format_table, result_rows
from core.seqrec import evaluate_checkpoint
from core.store import atomic_write_json
from distillation.config import DistillConfig
from distillation.pipeline import load_data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", "--model_path", required=True, help="checkpoint (best.pt or last.pt)")
    parser.add_argument("--output", help="also write the metrics here as JSON")
    add_common_args(parser, default_config="configs/distillation/sasrec.yaml")
    args = parser.parse_args(argv)
    cfg = load_config(DistillConfig, args.config, cli_overrides(args))
    res = evaluate_checkpoint(args.model_path, cfg, load_data=load_data)
    print(format_table(result_rows([("valid", res["valid"]), ("test", res["test"])]), RESULT_COLUMNS))
    if args.output:
        atomic_write_json(args.output, res)
    return 0


if __name__ == "__main__":
    run(main)
