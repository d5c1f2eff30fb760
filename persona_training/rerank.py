"""Rerank candidate lists by user/persona similarity and evaluate against the ground truth.

    python -m persona_training.rerank                                          # synthetic default
    python -m persona_training.rerank --dataset amazon \\
        --data_cfg configs/persona_training/amazon/data.yaml --rerank_cfg configs/persona_training/amazon/rerank.yaml --ks 5,10,20
    python -m persona_training.rerank --dataset yelp --override "persona_agg=mean,fusion_weight=0.3"

Needs `candidates` and `gt` in data.yaml. Builds or reuses the caches first (see build_cache).
Outputs in <out_root>/rerank/: reranked.jsonl (the lists, best first, with persona and upstream
scores), metrics.json (HR/Recall/NDCG/Precision@ks and MRR for the upstream and the reranked
order, counts of scored/unknown/[PAD] candidates, HR/NDCG@10 for warm/cold users and head/tail
items), config.yaml.
"""
from __future__ import annotations

from core.cli import run
from persona_training.config import parse_args
from persona_training.pipeline import format_rerank, run_rerank


def main(argv=None) -> int:
    _args, cfg, dataset = parse_args(argv, "rerank", __doc__)
    result = run_rerank(cfg, dataset)
    print(format_rerank(result))
    print(f"results: {result['out_dir']}/metrics.json, reranked.jsonl")
    return 0


if __name__ == "__main__":
    run(main)
