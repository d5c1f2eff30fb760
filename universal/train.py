"""Train the universal two-tower recommender.

    python -m universal.train                                    # generated default data and config
    python -m universal.train --config ../shared/data/universal/sample_config_simple_fusion.json \\
        --data ../shared/data/universal/correlated_dataset.json
    python -m universal.train --config configs/universal/correlated.yaml --data DATA.json \\
        --override "scorer=classifier,num_epochs=5"
    python -m universal.train --override "custom_encoders={audio: 'mypkg.enc:AudioEncoder'}" \\
        --allow-encoder-module mypkg.enc            # imports mypkg.enc: only for modules you trust

CONFIG is YAML or the upstream flat JSON config. Outputs go to
state_dict/universal/<dataset>/<run_name>/ (best.pt, last.pt, config.yaml, metrics.jsonl,
results.json) and state_dict/embeddings/universal/<dataset>/<run_name>.{users,items}.npy.
"""
from __future__ import annotations

from core.cli import parse_config, run
from core.report import format_table
from core.store import REPO_ROOT
from universal.config import DEFAULT_CONFIG, DEFAULT_DATA, UniversalConfig


def extra_args(parser) -> None:
    parser.add_argument("--data", default=None, help=f"universal-format .json / .jsonl / folder of tables "
                                                     f"(default: {DEFAULT_DATA}, generated on first use)")
    add_allow_module_arg(parser)


def add_allow_module_arg(parser) -> None:
    parser.add_argument("--allow-encoder-module", action="append", default=[], metavar="MODULE",
                        help="let custom_encoders specs 'MODULE:Class' import MODULE (its top-level code runs); "
                             "a config or checkpoint never allows this by itself")


def allow_modules(args, cfg) -> None:
    """Register the command line's opt-ins, then resolve every configured encoder before any data work."""
    from universal.encoders import allow_encoder_module, resolve_encoder

    for name in args.allow_encoder_module:
        allow_encoder_module(name)
    for ftype, spec in cfg.custom_encoders.items():
        resolve_encoder(spec, f"custom_encoders.{ftype}")


def main(argv=None) -> int:
    from universal import synthetic
    from universal.pipeline import Pipeline

    default_config = str(REPO_ROOT / DEFAULT_CONFIG)
    cfg, args = parse_config(UniversalConfig, argv, __doc__, default_config, extra_args)
    allow_modules(args, cfg)
    data = args.data or synthetic.ensure(REPO_ROOT / DEFAULT_DATA)
    report = Pipeline(cfg).fit(data)
    keys = [f"{m}@10" for m in ("HR", "Recall", "NDCG")] + ["AUC"]
    rows = [{"model": "universal", **{k: report["test"][k] for k in keys}},
            {"model": "popularity", **{k: report["popularity"]["test"][k] for k in keys}}]
    print(f"\nTest ({report['counts']['test_users']} users, best validation epoch {report['best_epoch']}):\n"
          + format_table(rows, ["model", *keys]) + f"\nresults: {report['run_dir']}/results.json")
    return 0


if __name__ == "__main__":
    run(main)
