"""Universal two-tower recommender (issue 9): baselines, fusion, feature ablations, scale.

Pieces (``run``, ``scale``, ``summarize``: benchmarks/README.md, "Universal two-tower") merge their rows into
``benchmarks/results/universal_runs.json``; every model of a dataset is scored on the same hold-out and evaluator
(``universal.baselines.holdout``). ``--device cuda`` runs the model pieces on a GPU (the ``device`` field says so).
"""
from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import numpy as np
import torch

from benchmarks.common import REPO, RESULTS, aggregate, by_seed, cli, devices, generic_command, load_rows, machine, \
    md_table, merge_rows, opt, overrides, pm, rel, row, run_module, sample_std, with_placeholders, write_json, write_md
from core.config import load_config
from core.store import state_root
from core.train import mean_epoch_seconds
from universal.baselines import MFSettings, holdout, popularity, train_mf
from universal.config import UniversalConfig, dataset_name
from universal.evaluate import auc_protocol, seed_differences, versus_baselines
from universal.pipeline import measure_fit_fresh
from universal.synthetic import generate_scale_warm

RUNS_FILE = RESULTS / "universal_runs.json"
SHARED = REPO.parent / "shared" / "data"
TYPES = ("text", "categorical", "continuous", "temporal", "image")
# attention fusion on ML-100K: both towers, 2 layers, 4 heads, a CLS token, as the upstream attention config
ML_ATTENTION = ("user_use_simple_fusion=false,item_use_simple_fusion=false,user_num_attention_layers=2,"
                "item_num_attention_layers=2,user_num_heads=4,item_num_heads=4,user_dropout=0.1,item_dropout=0.1,"
                "user_use_cls_token=true,item_use_cls_token=true,user_use_layer_norm=true,item_use_layer_norm=true")
MF = {"dim": 64, "epochs": 100, "batch_size": 256, "negatives": 4, "reg": 1e-4}  # BPR-MF settings (+ per dataset)
DATASETS = {  # name -> data file, simple config, attention config (+ overrides), MF settings, how to prepare the data
    "correlated": {"data": SHARED / "universal" / "correlated_dataset.json", "attention_overrides": "",
                   "simple": SHARED / "universal" / "sample_config_simple_fusion.json",
                   "attention": SHARED / "universal" / "sample_config_attention_fusion.json",
                   "mf": {**MF, "learning_rate": 0.01, "patience": 10}, "prepare": None},
    "ml-100k": {"data": REPO / "data" / "universal-ml-100k" / "data.json", "attention_overrides": ML_ATTENTION,
                "simple": REPO / "configs" / "universal" / "ml-100k.yaml",
                "attention": REPO / "configs" / "universal" / "ml-100k.yaml",
                "mf": {**MF, "learning_rate": 0.002, "patience": 5},
                "prepare": ["-m", "core.data.prepare", "universal-movielens", "--path", str(SHARED / "ml-100k")]},
}
QUALITY = ("NDCG@10", "HR@10", "Recall@10")
MODELS = ("popularity", "mf", "universal-simple", "universal-attention", *(f"universal-simple-no-{t}" for t in TYPES),
          "universal-simple-ids-only")  # control: every feature type dropped, only the id embeddings remain
SCALE_HOW = {  # scale metric -> how its row was measured (the "how" column)
    "load_seconds": lambda r: f"read + validate {r['read_validate_s']:.1f} s, split + schema "
                              f"{r['split_schema_s']:.1f} s, feature tables {r['tables_s']:.1f} s"
                              if "tables_s" in r else r.get("note", ""),
    "interactions_per_s": lambda r: f"training interactions (each with {r['negatives_per_row']:g} sampled "
                                    f"negatives), batch {r['batch_size']}, {r['batches_timed']} batches in "
                                    f"{r['train_seconds_timed']:.0f} s, {r['threads']} torch thread(s)",
    "sec_per_epoch": lambda r: r.get("note", ""), "peak_rss_mb": lambda r: r.get("note", ""),
    "text_encode_seconds": lambda r: f"{r.get('texts')} titles, {r.get('note', '')}", "peak_gpu_mb": lambda r: ""}


def device_label(device: str) -> str:
    return f"cuda:{torch.cuda.get_device_name()}" if device.startswith("cuda") else machine()


def cmd_run(args) -> None:
    """one dataset / model / seed, scored on the dataset's shared hold-out"""
    spec = DATASETS[args.dataset]
    if not (data_path := spec["data"]).is_file():
        if spec["prepare"] is None:
            raise SystemExit(f"{data_path} not found")
        subprocess.run([sys.executable, *spec["prepare"]], cwd=REPO, check=True)
    command = f"python -m benchmarks.universal run --dataset {args.dataset} --model {args.model} --seed {args.seed}" \
              + (f" --device {args.device}" if args.device != "cpu" else "")
    base = load_config(UniversalConfig, spec["simple"], f"device={args.device}")
    split = holdout(base, data_path, args.device)
    proto, auc_info = auc_protocol(split.evals["test"])
    # fields of every row of this run (``device`` replaces row()'s CPU description)
    common = {"users_test": len(split.evals["test"]), "config": rel(spec["simple"]),
              "device": device_label(args.device)}
    if args.model == "popularity":
        res, own = popularity(split), {}
    elif args.model == "mf":
        run_dir = state_root() / "universal" / dataset_name(base, data_path) / f"bench-mf-seed{args.seed}"
        res = train_mf(split, MFSettings(**spec["mf"]), run_dir, seed=args.seed, metric="NDCG@10", device=args.device)
        own = {"mf": res["settings"]}
    else:  # python -m universal.train; the feature ablations through drop_feature_types
        attention, have = args.model == "universal-attention", split.data.types_present()
        ftype, ids_only = args.model.removeprefix("universal-simple-no-"), args.model == "universal-simple-ids-only"
        if ftype != args.model and ftype not in have:
            raise SystemExit(f"{args.dataset} has no {ftype} features (it has {', '.join(sorted(have))}): "
                             f"universal-simple-no-{ftype} would be universal-simple")
        if ids_only and not base.user.use_id_embedding:
            raise SystemExit(f"{args.dataset}: the simple config has no user id embedding, so without features "
                             "the user tower has no input; universal-simple-ids-only needs user_use_id_embedding")
        drop = ",".join(sorted(have) if ids_only else [ftype] if ftype != args.model else [])
        config, over = spec["attention" if attention else "simple"], overrides(
            f"seed={args.seed},run_name=bench-{args.model}-seed{args.seed},overwrite=true,device={args.device}",
            spec["attention_overrides"] if attention else "", f"drop_feature_types=[{drop}]" if drop else "")
        own = {"train_command": run_module("universal.train", rel(config), over, "--data", rel(data_path))}
        cfg = load_config(UniversalConfig, config, over)
        run_dir = state_root() / "universal" / dataset_name(cfg, data_path) / cfg.run_name
        res = json.loads((run_dir / "results.json").read_text())
        if res["popularity"]["test"] != popularity(split)["test"]:
            raise SystemExit(f"{run_dir}: the run's split differs from the benchmark's (popularity does not match)")
        common["config"] = rel(config)
    trained = {k: res[k] for k in ("best_epoch", "epochs_run", "train_seconds") if k in res}  # none for popularity
    extra = {**trained, "valid_ndcg10": res["valid"]["NDCG@10"], **own,
             **({"run_dir": rel(run_dir)} if trained else {}), **common}
    r = partial(row, args.dataset, args.model, seeds=[args.seed], command=command)
    rows = [r("full", m, float(res["test"][m]), **extra) for m in QUALITY]
    rows.append(r(proto, "AUC", float(res["test"]["AUC"]), **auc_info, **extra))
    if args.model != "popularity":
        rows.append(r("full", "sec_per_epoch", mean_epoch_seconds(run_dir), unit="s", **extra))
    merge_rows(RUNS_FILE, rows)
    print(f"{args.dataset} {args.model} seed {args.seed}:", ", ".join(f"{r['metric']} {r['value']:.4f}" for r in rows))


def cmd_scale(args) -> None:
    """generate the scale file (once), then time Pipeline.fit on it in a fresh process (measure_fit_fresh)"""
    folder = REPO / "data" / f"universal-scale-{args.interactions}"
    if not (gen_file := folder / "generation.json").is_file():  # the data, then its item titles into the text cache
        gen_file.write_text(json.dumps(generate_scale_warm(folder, args.interactions, args.users, args.items,
                                                           seed=args.seed), indent=1))
    gen = json.loads(gen_file.read_text())
    cfg = load_config(UniversalConfig, REPO / "configs/universal/synthetic.yaml",
                      f"device={args.device},seed={args.seed},training.epochs=1,training.batch_size={args.batch_size},"
                      f"training.max_steps_per_epoch={args.batches},training.save_checkpoints=false,"
                      "run_name=bench-scale,overwrite=true")
    res = measure_fit_fresh(cfg, folder / "data.json")  # one epoch of at most --batches batches
    command = (f"python -m benchmarks.universal scale --interactions {args.interactions} --users {args.users} --items "
               f"{args.items} --batches {args.batches} --batch-size {args.batch_size}"
               + (f" --device {args.device}" if args.device != "cpu" else ""))
    extra = {"data": rel(folder / "data.json"), "interactions": res["interactions"], "users": res["users"],
             "items": res["items"], "file_mb": round(gen["bytes"] / 2**20, 1), "device": device_label(args.device),
             "image": "one .npy file of 32 float32 per item (image_vector encoder)",
             "text_cache": f"warm: the {gen['texts']} item titles were encoded once at generation "
                           f"({gen['text_encode_seconds']} s, not in load_seconds)"}
    fields = {  # metric -> unit, the row's own fields
        "load_seconds": ("s", {"note": "Pipeline.fit up to its fit loop: read, validate, split, schema, feature "
                               "tables, model, evaluators", "peak_rss_after_load_mb": res["peak_rss_after_load_mb"]}),
        "interactions_per_s": ("1/s", {k: res[k] for k in ("batch_size", "negatives_per_row", "batches_timed",
                                                           "train_seconds_timed", "threads")}),
        "sec_per_epoch": ("s", {"note": "extrapolated: training interactions / interactions_per_s "
                                "(validation excluded)"}),
        "peak_rss_mb": ("MB", {"note": "ru_maxrss of the measuring process (Pipeline.fit: load, training, validation, "
                                       "test)"}),
        "text_encode_seconds": ("s", {"texts": gen["texts"], "note": "MiniLM, cold cache, at generation"}),
        "peak_gpu_mb": ("MB", {})}
    values = {**res, "text_encode_seconds": gen["text_encode_seconds"]}
    rows = [row("scale", "universal-simple", "full", metric, values[metric], command=command, unit=unit, **own, **extra)
            for metric, (unit, own) in fields.items() if metric in values]
    merge_rows(RUNS_FILE, rows)
    print(*(f"scale {r['metric']:22s} {r['value']:.1f}" for r in rows), sep="\n")


def cmd_summarize(args) -> None:
    """universal.json / universal.md (+ per-run universal_runs.json)"""
    runs = load_rows(RUNS_FILE)
    # model rows: mean and std over seeds, with the AUC negative counts and what the rows were run with
    keep = ("unit", "auc_negatives_min", "auc_negatives_mean", "auc_negatives_max", "users_test", "config")
    groups, out = aggregate([r for r in runs if r["seeds"]], keep=keep + ("train_command",))
    for r in out:
        r["command"] = with_placeholders(r["command"], {"--seed": "<N>"})
        if "train_command" in r:  # written with the seed of the group's first run
            first_seed = groups[(r["dataset"], r["model"], r["protocol"], r["metric"])][0]["seeds"][0]
            r["train_command"] = generic_command(r["train_command"], first_seed)
    out += [r for r in runs if not r["seeds"]]  # scale rows: one measurement each, as they are
    write_json(RESULTS / "universal.json", out)
    by = {(r["dataset"], r["model"], r["metric"]): r for r in out}
    lines = ["# Universal two-tower: baselines, fusion, feature ablations (test, mean ± std over seeds)", "",
             "Same per-user temporal hold-out and evaluator for every model of a dataset; NDCG/HR/Recall@10 under "
             "full ranking with the user's known items excluded; AUC of held-out items against never-interacted "
             "items (protocol in the column). Epoch chosen on validation NDCG@10, test scored once.", ""]
    for ds in [d for d in DATASETS if any(r["dataset"] == d for r in out)]:
        auc_proto = next((r["protocol"] for r in out if r["dataset"] == ds and r["metric"] == "AUC"), "")
        ndcg = {m: [x for x in runs if (x["dataset"], x["model"], x["metric"]) == (ds, m, "NDCG@10")] for m in MODELS}
        valid = lambda m: [x["valid_ndcg10"] for x in ndcg[m] if "valid_ndcg10" in x]  # noqa: E731
        best = lambda m: ", ".join(sorted({str(x["best_epoch"]) for x in ndcg[m] if "best_epoch" in x}))  # noqa: E731
        cols = [("model", lambda m: m), ("seeds", lambda m: len(by[(ds, m, "NDCG@10")]["seeds"])),
                *((k, lambda m, k=k: pm(by.get((ds, m, k)), always=False)) for k in QUALITY),
                (f"AUC ({auc_proto})", lambda m: pm(by.get((ds, m, "AUC")), always=False)),
                ("valid NDCG@10", lambda m: pm({"value": np.mean(valid(m)), "std": sample_std(valid(m)),
                                                "seeds": valid(m)}, always=False) if valid(m) else ""),
                ("s/epoch", lambda m: pm(by.get((ds, m, "sec_per_epoch")), 1, always=False)), ("best epoch", best)]
        lines += [f"## {ds}", "", *md_table(cols, [m for m in MODELS if (ds, m, "NDCG@10") in by]),
                  "", verdict(ds, by, groups), ""]
    s = {r["metric"]: r for r in out if r["dataset"] == "scale"}
    if s:
        r0 = next(r for r in out if r["dataset"] == "scale")
        lines += ["## scale", "",
                  f"Generated file: {r0.get('interactions')} interactions, {r0.get('users')} users, "
                  f"{r0.get('items')} items, every feature type ({r0.get('image', '')}); text cache "
                  f"{r0.get('text_cache', '')}.", "",
                  *md_table([("metric", lambda k: k), ("value", lambda k: f"{s[k]['value']:.1f}"),
                             ("how", lambda k: SCALE_HOW[k](s[k]))], [k for k in SCALE_HOW if k in s]),
                  "", f"Device: {s['load_seconds']['device'] if 'load_seconds' in s else ''}; batch "
                      f"{s.get('interactions_per_s', {}).get('batch_size', '')}. Goal: loads in under 60 s: "
                      + ("met" if s.get("load_seconds") and s["load_seconds"]["value"] < 60 else "MISSED")
                      + (" (at 1,000,000 interactions)" if r0.get("interactions") == 1_000_000
                         else f" (at {r0.get('interactions')} interactions, not the 1,000,000 of the goal)"), ""]
    write_md(RESULTS / "universal.md", lines + [f"Device: {devices(runs) or machine()}. Commands: the `command` (and "
                                                "`train_command`) fields of `universal.json` / `universal_runs.json`."])


def verdict(ds: str, by: dict, groups: dict) -> str:
    """Issue 9's goal on one dataset and the feature ablations' test NDCG@10 change from universal-simple."""
    full, attention = (by.get((ds, m, "NDCG@10")) for m in ("universal-simple", "universal-attention"))
    if not full:
        return f"Verdict ({ds}): universal-simple not run yet."
    baselines = {m: r["value"] if (r := by.get((ds, m, "NDCG@10"))) else None for m in ("popularity", "mf")}
    text = "Verdict ({}, {} seed{}): full-feature universal-simple NDCG@10 {} -> goal {}.".format(
        ds, len(full["seeds"]), "s" if len(full["seeds"]) > 1 else "", *versus_baselines(full["value"], baselines))
    if attention:
        text += " universal-attention {} -> {}.".format(*versus_baselines(attention["value"], baselines))
    per_seed = lambda m: by_seed(groups.get((ds, m, "full", "NDCG@10"), []))  # noqa: E731  # {seed: test NDCG@10}
    ablations = [f"{name} {diff}" for name, m in (*((t, f"universal-simple-no-{t}") for t in TYPES), (
        "all features (ids-only control)", "universal-simple-ids-only"))
                 if (diff := seed_differences(per_seed("universal-simple"), per_seed(m)))]
    return text + " " + ("Test NDCG@10 change vs universal-simple when a feature type is removed (mean ± std of the "
                         "per-seed differences over the seeds both ran): " + ", ".join(ablations) + "."
                         if ablations else "No ablations run yet.")


def main(argv=None) -> None:
    size = [opt("--interactions", type=int, default=1_000_000), opt("--users", type=int, default=100_000),
            opt("--items", type=int, default=20_000), opt("--seed", type=int, default=0)]
    measure = [opt("--device", default="cpu"), opt("--batch-size", type=int, default=1024),
               opt("--batches", type=int, default=500, help="training batches timed (one capped epoch)")]
    cli(__doc__, {"run": (cmd_run, [opt("--dataset", choices=sorted(DATASETS), required=True),
                                    opt("--model", choices=MODELS, required=True), opt("--seed", type=int, default=1),
                                    opt("--device", default="cpu", help="cpu or cuda")]),
                  "scale": (cmd_scale, size + measure),
                  "summarize": (cmd_summarize, [])}, argv)


if __name__ == "__main__":
    main()
