"""Universal two-tower recommender (issue 9): baselines, fusion, feature ablations, scale.

Pieces (``run --dataset D --model M --seed N``, ``scale``, ``summarize``: benchmarks/README.md,
"Universal two-tower") merge their rows into ``benchmarks/results/universal_runs.json``. Every
model of a dataset is scored on the same temporal hold-out by the same evaluator
(``universal.baselines.holdout`` builds it as ``Pipeline.fit`` does): ``popularity`` and ``mf``
through ``universal.baselines``, the ``universal-*`` models through ``python -m universal.train``,
``scale`` through ``Pipeline.fit`` on a generated file. ``--device cuda`` runs the model pieces
on a GPU (the ``device`` field records it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, aggregate, by_seed, cli, devices, generic_command, load_rows, machine, \
    md_table, merge_rows, opt, overrides, pm, rel, row, run_module, sample_std, with_placeholders, write_json, write_md

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


def device_label(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"cuda:{torch.cuda.get_device_name()}"
    return machine()


def load_cfg(path: Path, overrides: str = ""):
    from core.config import load_config
    from universal.config import UniversalConfig

    return load_config(UniversalConfig, path, overrides)


# --------------------------------------------------------------------------- run
def cmd_run(args) -> None:
    """one dataset / model / seed, scored on the dataset's shared hold-out"""
    import torch

    from core.store import state_root
    from core.train import mean_epoch_seconds
    from universal.baselines import MFSettings, holdout, popularity, train_mf
    from universal.config import dataset_name
    from universal.evaluate import auc_protocol

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    spec = DATASETS[args.dataset]
    data_path = spec["data"]
    if not data_path.is_file():
        if spec["prepare"] is None:
            raise SystemExit(f"{data_path} not found")
        subprocess.run([sys.executable, *spec["prepare"]], cwd=REPO, check=True)
    command = f"python -m benchmarks.universal run --dataset {args.dataset} --model {args.model} --seed {args.seed}" \
              + (f" --device {args.device}" if args.device != "cpu" else "")
    base = load_cfg(spec["simple"], f"device={args.device}")
    split = holdout(base, data_path, args.device)
    proto, auc_info = auc_protocol(split.evals["test"])
    # fields of every row of this run (``device`` replaces row()'s CPU description)
    common = {"users_test": len(split.evals["test"]), "config": rel(spec["simple"]),
              "device": device_label(args.device)}
    if args.model == "popularity":
        res = popularity(split)
        extra = {"valid_ndcg10": res["valid"]["NDCG@10"], **common}
    else:
        if args.model == "mf":
            run_dir = state_root() / "universal" / dataset_name(base, data_path) / f"bench-mf-seed{args.seed}"
            res = train_mf(split, MFSettings(**spec["mf"]), run_dir, seed=args.seed, metric="NDCG@10",
                           device=args.device)
            own = {"mf": res["settings"]}
        else:
            config, over = universal_overrides(args, spec, base, split)
            train_command = run_module("universal.train", rel(config), over, "--data", rel(data_path))
            cfg = load_cfg(config, over)
            run_dir = state_root() / "universal" / dataset_name(cfg, data_path) / cfg.run_name
            res = json.loads((run_dir / "results.json").read_text())
            if res["popularity"]["test"] != popularity(split)["test"]:
                raise SystemExit(f"{run_dir}: the run's split differs from the benchmark's (popularity does not match)")
            own = {"train_command": train_command}
            common["config"] = rel(config)
        extra = {**{k: res[k] for k in ("best_epoch", "epochs_run", "train_seconds")},
                 "valid_ndcg10": res["valid"]["NDCG@10"], **own, "run_dir": rel(run_dir), **common}
    r = partial(row, args.dataset, args.model, seeds=[args.seed], command=command)
    rows = [r("full", m, float(res["test"][m]), **extra) for m in QUALITY]
    rows.append(r(proto, "AUC", float(res["test"]["AUC"]), **auc_info, **extra))
    if args.model != "popularity":
        rows.append(r("full", "sec_per_epoch", mean_epoch_seconds(run_dir), unit="s", **extra))
    merge_rows(RUNS_FILE, rows)
    q = {r["metric"]: r["value"] for r in rows}
    print(f"{args.dataset} {args.model} seed {args.seed}: test NDCG@10 {q['NDCG@10']:.4f} HR@10 {q['HR@10']:.4f} "
          f"Recall@10 {q['Recall@10']:.4f} AUC ({proto}) {q['AUC']:.4f}"
          + (f", {q['sec_per_epoch']:.1f} s/epoch, best epoch {rows[0]['best_epoch']}" if "sec_per_epoch" in q else ""))


def universal_overrides(args, spec: dict, base, split) -> tuple[Path, str]:
    """The config and the overrides of a ``universal-*`` model's ``python -m universal.train`` run."""
    attention = args.model == "universal-attention"
    over = [f"seed={args.seed}", f"run_name=bench-{args.model}-seed{args.seed}", "overwrite=true",
            f"device={args.device}", spec["attention_overrides"] if attention else ""]
    have = split.data.types_present()
    if args.model.startswith("universal-simple-no-"):
        ftype = args.model.removeprefix("universal-simple-no-")
        if ftype not in have:
            raise SystemExit(f"{args.dataset} has no {ftype} features (it has {', '.join(sorted(have))}): "
                             f"universal-simple-no-{ftype} would be universal-simple")
        over.append(f"drop_feature_types=[{ftype}]")
    if args.model == "universal-simple-ids-only":
        if not base.user.use_id_embedding:
            raise SystemExit(f"{args.dataset}: the simple config has no user id embedding, so without features "
                             "the user tower has no input; universal-simple-ids-only needs user_use_id_embedding")
        over.append(f"drop_feature_types=[{','.join(sorted(have))}]")
    return spec["attention" if attention else "simple"], overrides(*over)


# --------------------------------------------------------------------------- scale
def scale_dir(args) -> Path:
    return REPO / "data" / f"universal-scale-{args.interactions}"


def cmd_scale_measure(args) -> None:
    """Child: ``universal.pipeline.measure_fit`` on the scale data (configs/universal/synthetic.yaml),
    one epoch of at most ``--batches`` batches: load seconds up to the fit loop, the training rate
    from the epoch time the fit logs, and this process's peak RSS."""
    import torch

    from universal.pipeline import measure_fit

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    cfg = load_cfg(REPO / "configs/universal/synthetic.yaml", f"device={args.device},seed={args.seed},"
                   f"training.epochs=1,training.batch_size={args.batch_size},"
                   f"training.max_steps_per_epoch={args.batches},training.save_checkpoints=false,"
                   "run_name=bench-scale,overwrite=true")
    out = measure_fit(cfg, scale_dir(args) / "data.json", log=lambda msg: print(msg, flush=True))
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


def cmd_scale(args) -> None:
    """generate the scale file (once), then time Pipeline.fit on it in a fresh process"""
    folder = scale_dir(args)
    size = f"--interactions {args.interactions} --users {args.users} --items {args.items}"
    measure = f"--batches {args.batches} --batch-size {args.batch_size}"
    if not (folder / "generation.json").is_file():  # the data, then the item titles encoded once into the text cache
        from universal.synthetic import generate_scale_warm

        meta = generate_scale_warm(folder, args.interactions, args.users, args.items, seed=args.seed)
        (folder / "generation.json").write_text(json.dumps(meta, indent=1))
        print(json.dumps(meta))
    gen = json.loads((folder / "generation.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "measure.json"
        subprocess.run([sys.executable, "-m", "benchmarks.universal", "scale-measure", *size.split(), "--seed",
                        str(args.seed), "--device", args.device, "--out", str(out), *measure.split()], cwd=REPO,
                       check=True)
        res = json.loads(out.read_text())
    command = f"python -m benchmarks.universal scale {size} {measure}" + (
        f" --device {args.device}" if args.device != "cpu" else "")
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
    for r in rows:
        print(f"scale {r['metric']:22s} {r['value']:.1f}")


# --------------------------------------------------------------------------- summary
SCALE_HOW = {  # scale metric -> how its row was measured (the "how" column)
    "load_seconds": lambda r: f"read + validate {r['read_validate_s']:.1f} s, split + schema "
                              f"{r['split_schema_s']:.1f} s, feature tables {r['tables_s']:.1f} s"
                              if "tables_s" in r else r.get("note", ""),
    "interactions_per_s": lambda r: f"training interactions (each with {r['negatives_per_row']:g} sampled "
                                    f"negatives), batch {r['batch_size']}, {r['batches_timed']} batches in "
                                    f"{r['train_seconds_timed']:.0f} s, {r['threads']} torch thread(s)",
    "sec_per_epoch": lambda r: r.get("note", ""), "peak_rss_mb": lambda r: r.get("note", ""),
    "text_encode_seconds": lambda r: f"{r.get('texts')} titles, {r.get('note', '')}", "peak_gpu_mb": lambda r: ""}


def cmd_summarize(args) -> None:
    """universal.json / universal.md (+ per-run universal_runs.json)"""
    runs = load_rows(RUNS_FILE)
    # model rows: mean and std over seeds, with the AUC negative counts and what the rows were run with
    groups, out = aggregate([r for r in runs if r["seeds"]], keep=("unit", "auc_negatives_min", "auc_negatives_mean",
                                                                   "auc_negatives_max", "users_test", "config",
                                                                   "train_command"))
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
    """Issue 9's goal on one dataset (``universal.evaluate.versus_baselines``) and the feature
    ablations' test NDCG@10 change from universal-simple (``universal.evaluate.seed_differences``)."""
    from universal.evaluate import seed_differences, versus_baselines

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
    RESULTS.mkdir(parents=True, exist_ok=True)
    cli(__doc__, {"run": (cmd_run, [opt("--dataset", choices=sorted(DATASETS), required=True),
                                    opt("--model", choices=MODELS, required=True), opt("--seed", type=int, default=1),
                                    opt("--device", default="cpu", help="cpu or cuda")]),
                  "scale": (cmd_scale, size + measure),
                  "scale-measure": (cmd_scale_measure, size + measure + [opt("--out", required=True)]),
                  "summarize": (cmd_summarize, [])}, argv)


if __name__ == "__main__":
    main()
