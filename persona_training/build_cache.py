"""Build the float16 memmap caches: interaction embeddings per user, persona embeddings per item.

    python -m persona_training.build_cache                                     # synthetic default
    python -m persona_training.build_cache --dataset amazon \\
        --data_cfg configs/persona_training/amazon/data.yaml --rerank_cfg configs/persona_training/amazon/rerank.yaml \\
        [--model_dir PATH|default]

The model defaults to the trained one in <out_root>/train/model. Outputs in <out_root>/cache/:
interactions.json + interactions-*.f16, personas.json + personas-*.f16. A cache whose texts and
model are unchanged is reused; `--override force=true` rebuilds. With num_gpus > 1 and that many
GPUs, the texts are encoded on all of them in parallel.
"""
from __future__ import annotations

from core.cli import run
from persona_training.config import parse_args
from persona_training.pipeline import build_caches


def main(argv=None) -> int:
    _args, cfg, dataset = parse_args(argv, "cache", __doc__)
    inter, pers, info = build_caches(cfg, dataset)
    print(f"interactions: {info['interactions']['rows']} rows for {info['interactions']['users']} users "
          f"({'built' if info['interactions']['built'] else 'reused'}) -> {inter.index_path}")
    print(f"personas: {info['personas']['rows']} rows for {info['personas']['items']} items "
          f"({'built' if info['personas']['built'] else 'reused'}) -> {pers.index_path}")
    return 0


if __name__ == "__main__":
    run(main)
