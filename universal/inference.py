"""Embeddings, scores and top-K recommendations from a trained universal model.

    python -m universal.inference --model_path state_dict/universal/<dataset>/<run>/best.pt \\
        --data INPUT.json [--top_k 10] [--output OUT.json] [--no_scores] [--config CONFIG]

The checkpoint carries its config, so --config is optional; one given must describe the same
model (run settings such as device or batch sizes may differ). A custom encoder the checkpoint
names as 'module:Class' is imported only with --allow-encoder-module MODULE.

INPUT has the training format: user_data (who to score), item_data (the candidates) and,
optionally, interactions (items a user has seen: left out of the top-K). Ids stay as given.
The output JSON (written atomically; default: predictions.json beside the checkpoint) holds
``users`` {id: {embedding, top_k: [{item_id, score}]}}, ``items`` {id: {embedding}} and
``scores`` {user id: {item id: score}} (left out with --no_scores or above --max_pairs pairs).
"""
from __future__ import annotations

from pathlib import Path

from core.cli import cli_overrides, parse_config, run
from core.errors import ConfigError
from core.store import atomic_write_json
from universal.config import UniversalConfig
from universal.data import load_dataset
from universal.encoders import allow_encoder_module
from universal.train import add_allow_module_arg


def extra_args(parser) -> None:
    parser.add_argument("--model_path", "--model-path", required=True, help="checkpoint (best.pt) of universal.train")
    parser.add_argument("--data", required=True, help="users and candidate items in the universal format")
    parser.add_argument("--top_k", "--top-k", type=int, default=10)
    parser.add_argument("--output", default=None, help="output JSON (default: predictions.json beside the checkpoint)")
    parser.add_argument("--no_scores", action="store_true", help="leave the user x item score table out")
    parser.add_argument("--max_pairs", type=int, default=1_000_000, help="leave the score table out above this many pairs")
    add_allow_module_arg(parser)


def main(argv=None) -> int:
    from universal.pipeline import Pipeline

    cfg, args = parse_config(UniversalConfig, argv, __doc__, None, extra_args)
    if args.top_k < 1:
        raise ConfigError(f"--top_k must be >= 1, got {args.top_k}")
    for name in args.allow_encoder_module:  # from the command line only, never from the checkpoint
        allow_encoder_module(name)
    # without --config the checkpoint's own config (plus --override) is used; with one, it must
    # describe the same model
    pipe = Pipeline.load(args.model_path, cfg if args.config else None,
                         overrides="" if args.config else cli_overrides(args))
    data = load_dataset(args.data, pipe.feature_types(), require_interactions=False)
    n_pairs = len(data.users) * len(data.items)
    with_scores = not args.no_scores and n_pairs <= args.max_pairs
    if not args.no_scores and not with_scores:
        print(f"notice: {n_pairs} user-item pairs > --max_pairs {args.max_pairs}; the score table is left out")
    result = pipe.predict(data, args.top_k, with_scores=with_scores)
    result["model_path"] = str(args.model_path)
    out = Path(args.output) if args.output else Path(args.model_path).parent / "predictions.json"
    atomic_write_json(out, result, indent=None)
    print(f"{len(result['users'])} users x {len(result['items'])} items, top {result['top_k']} each -> {out}")
    return 0


if __name__ == "__main__":
    run(main)
