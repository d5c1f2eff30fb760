"""Train the user/persona encoder with in-batch InfoNCE.

    python -m persona_training.train_encoder                                   # synthetic default
    python -m persona_training.train_encoder --dataset amazon \\
        --data_cfg configs/persona_training/amazon/data.yaml --train_cfg configs/persona_training/amazon/train.yaml
    python -m persona_training.train_encoder --dataset yelp --override "max_steps=20,batch_size=16"
    torchrun --nproc_per_node=2 -m persona_training.train_encoder --device cpu   # DDP (gloo on CPU)

Outputs in <out_root>/train/: model/ (sentence-transformers folder, the default model of the
next stages), metrics.jsonl (one line per log_every steps), config.yaml, summary.json.
USE_AMP=0 turns AMP off on CUDA.
"""
from __future__ import annotations

from core.cli import run
from core.dist import cleanup
from core.runs import start_run
from persona_training.config import parse_args
from persona_training.pipeline import run_training


def main(argv=None) -> int:
    _args, cfg, dataset = parse_args(argv, "train", __doc__)
    ctx = start_run(cfg.train.device)  # train_pairs seeds, once the pairs are built
    main_rank = ctx.main
    try:
        summary = run_training(cfg, dataset, log=ctx.log)
    finally:
        cleanup()
    if main_rank:
        print(f"trained {summary['steps']} steps on {summary['pairs']} pairs in {summary['seconds']:.1f}s "
              f"({summary['pairs_per_s']:.1f} pairs/s); loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}")
        print(f"model: {summary['model_dir']}")
    return 0


if __name__ == "__main__":
    run(main)
