"""Cross-domain SASRec: source-to-target transfer for cold-start users.

    python -m cross_domain train-source [--source B]                    # synthetic default (generated on first use)
    python -m cross_domain train-target-transfer [--source B --target A]
    python -m cross_domain train-target-baseline [--target A]
    python -m cross_domain train-target-merged [--source B --target A]  # one SASRec over both domains
    python -m cross_domain fuse [--source B --target A]                 # late fusion of baseline + merged
    python -m cross_domain fuse --partner-run NAME                      # control: baseline + another run's baseline
    python -m cross_domain eval-compare [--target A]
    python -m cross_domain recommend --user u00042 --k 10 [--use-transfer]
    python -m cross_domain rl-demo --steps 5 [--events events.jsonl] [--use-transfer]
    Food-Kitchen: --config configs/cross_domain/food.yaml (target food) or kitchen.yaml
    PTUPCDR-style bridge: train-target-transfer --override transfer.bridge=ptupcdr

Every subcommand takes --config/--override/--device/--seed and the seed's --max_items
(train-source), --max_items_src, --max_items_tgt. Outputs: state_dict/cross_domain/<dataset>/
<run_name>/<stage>/ and the source vectors in state_dict/embeddings/cross_domain/<dataset>/<run_name>/.
"""
from __future__ import annotations

import argparse

from core.cli import add_common_args, cli_overrides, run, setup_logging
from core.config import load_config
from core.dist import cleanup, is_main
from core.report import format_table
from cross_domain.config import CrossDomainConfig

DEFAULT_CONFIG = "configs/cross_domain/synthetic.yaml"
COMMANDS = {  # subcommand -> its own flags (beyond --config/--override/--device/--seed)
    "train-source": ("source", "max_items"),
    "train-target-transfer": ("source", "target", "max_items_src", "max_items_tgt"),
    "train-target-baseline": ("target", "max_items_tgt"),
    "train-target-merged": ("source", "target"),
    "fuse": ("source", "target", "partner_run"),
    "eval-compare": ("source", "target", "max_items_src", "max_items_tgt"),
    "recommend": ("source", "target", "user", "k", "use_transfer", "max_items_src", "max_items_tgt"),
    "rl-demo": ("source", "target", "steps", "events", "use_transfer", "max_items_src", "max_items_tgt"),
}
FLAG_KEYS = {"source": "data.source", "target": "data.target", "max_items": "data.max_items_src",
             "max_items_src": "data.max_items_src", "max_items_tgt": "data.max_items_tgt", "steps": "rl.steps",
             "events": "rl.events"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cross_domain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, flags in COMMANDS.items():
        p = sub.add_parser(name, help=name.replace("-", " "))
        add_common_args(p, default_config=DEFAULT_CONFIG)
        for f in flags:
            if f == "partner_run":
                p.add_argument("--partner-run", default=None, help="fuse with this run's baseline instead of the "
                               "merged model (the target-only ensemble control)")
            elif f == "use_transfer":
                p.add_argument("--use-transfer", action="store_true", help="the transfer model (default: the baseline)")
            elif f == "user":
                p.add_argument("--user", required=True, help="raw user id as in the data")
            elif f in ("k", "steps") or f.startswith("max_items"):
                p.add_argument(f"--{f}", type=int, default=10 if f == "k" else None,
                               help={"k": "items to list (default 10)", "steps": "passes over the events (rl.steps)"}.get(
                                   f, "random sample of at most this many interactions of the domain (0 = all)"))
            else:
                p.add_argument(f"--{f}", default=None, help="domain name in the data, or A/B" if f in ("source", "target")
                               else "JSONL of logged events (user, item, click)")
    return parser


def _quoted(value) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"  # YAML string


def load(args) -> CrossDomainConfig:
    parts = [cli_overrides(args)]
    parts += [f"{key}={_quoted(getattr(args, f))}" for f, key in FLAG_KEYS.items() if getattr(args, f, None) is not None]
    if args.command == "rl-demo" and args.use_transfer:
        parts.append("rl.use_transfer=true")
    return load_config(CrossDomainConfig, args.config, ",".join(p for p in parts if p))


def metrics_table(test: dict, users: dict, columns=("HR@10", "NDCG@10", "MRR")) -> str:
    rows = [{"protocol": p, "users": f"{s} {users[s]}", **{c: m[s].get(c, "-") for c in columns}}
            for p, m in test.items() for s in m]
    return format_table(rows, ["protocol", "users", *columns])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(False)
    cfg = load(args)
    cmd = args.command
    if cmd == "train-source":
        from cross_domain.transfer import train_source

        res = train_source(cfg)
        if is_main():
            print(f"{res['sec_per_epoch']}s per epoch; next: python -m cross_domain train-target-transfer"
                  + (f" --config {args.config}" if args.config != DEFAULT_CONFIG else ""))
    elif cmd in ("train-target-transfer", "train-target-baseline", "train-target-merged"):
        from cross_domain.transfer import train_target

        kind = {"train-target-baseline": "baseline", "train-target-merged": "merged"}.get(
            cmd, "ptupcdr" if cfg.transfer.bridge == "ptupcdr" else "transfer")
        res = train_target(cfg, kind)
        if is_main():
            print(f"\nTest, {kind}, target {res['target']} (best validation epoch {res['best_epoch']}, "
                  f"{res['sec_per_epoch']}s per epoch):\n" + metrics_table(res["test"], res["users"])
                  + f"\nresults: {res['run_dir']}/results.json")
    elif cmd == "fuse":
        from cross_domain.fusion import fuse

        res = fuse(cfg, args.partner_run)
        c = res["choice"]
        print(f"\nTest, {res['stage']} (weight of the second model: cold {c['w_cold']}, warm {c['w_warm']}), target "
              f"{res['target']}:\n" + metrics_table(res["test"], res["users"]) + f"\nresults: {res['run_dir']}/results.json")
    elif cmd == "eval-compare":
        from cross_domain.compare import compare, format_compare

        print(format_compare(compare(cfg)))
    elif cmd == "recommend":
        from cross_domain.recommend import recommend

        res = recommend(cfg, args.user, args.k, args.use_transfer)
        src = "" if res["source_vector"] is None else f"; source vector: {'yes' if res['source_vector'] else 'none, sequence only'}"
        print(f"top {len(res['items'])} {res['target']} items for user {res['user']} ({res['model']}; "
              f"{res['history_items']} {res['target']} items in the history{src}):")
        print(format_table(res["items"], ["rank", "item", "title", "score"] if any(i["title"] for i in res["items"])
                           else ["rank", "item", "score"]))
    else:
        from cross_domain.rl import rl_demo

        res = rl_demo(cfg)
        print("\naverage reward per step: " + " ".join(f"{r:.4f}" for r in res["reward_per_step"]))
        print(f"test metrics of {res['model']} before -> after the fine-tuning:")
        rows = [{"protocol": p, "users": f"{s} {res['users'][s]}",
                 **{f"{w} {c}": res[w][p][s].get(c, "-") for w in ("before", "after") for c in ("HR@10", "NDCG@10")}}
                for p in res["before"] for s in res["before"][p]]
        print(format_table(rows, ["protocol", "users", "before HR@10", "after HR@10", "before NDCG@10", "after NDCG@10"]))
        print(f"policy: {res['run_dir']}/best.pt")
    cleanup()
    return 0


if __name__ == "__main__":
    run(main)
