"""TriGRec on Amazon Food-Kitchen: the full method, its ablations and the shuffled control.

Pieces (``stage1``, ``stage2 --variant V``, ``stage1-loss``, ``summarize``: benchmarks/README.md,
"TriGRec") drive ``user_representation_module.train`` / ``.inference`` and
``recommendation_model.train_eval``; rows go to ``benchmarks/results/trigrec_runs.json``. Each
seed's stage-1 tree lives in ``state_dict/bench/trigrec/<target>/seed<N>[-nogrl]/``. Protocols:
``sampled-999`` (C2DSR: the target of each C2DSR test line against 999 sampled items of its
domain) and ``full`` (full ranking on the pickles' leave-two-out split). The ``leakfree``
variants export the ``.holdout1`` vectors on first use and train with ``model.vector_holdout=1``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, aggregate, load_rows, merge_rows, ndcg_by_id, pyplot, rel, row, seed_averaged_paired
from core.train import mean_epoch_seconds

RUNS_FILE = RESULTS / "trigrec_runs.json"
TARGETS = {"food": "Food-Kitchen/Food", "kitchen": "Food-Kitchen/Kitchen"}
PUBLISHED = {"food": {"MRR": 8.91, "NDCG@10": 9.71, "HR@10": 14.54}, "kitchen": {"MRR": 4.65, "NDCG@10": 4.94, "HR@10": 8.18}}
GOALS = {"food": 10.7, "kitchen": 5.4}
VARIANTS = {  # stage-2 variant -> (row name, overrides, stage-1 tree suffix)
    "trigrec": ("trigrec", "", ""),
    "bert4rec": ("bert4rec", "use_spe=false,use_cross=false", ""),
    "spe": ("trigrec-spe_only", "use_cross=false", ""),
    "cross": ("trigrec-cross_only", "use_spe=false", ""),
    "nogate": ("trigrec-nogate", "gate=false", ""),
    "shuffled": ("trigrec-shuffled", "shuffle_user_vectors=true", ""),
    "nogrl": ("trigrec-nogrl", "", "-nogrl"),
    # the other domain's specific vectors only: they hold no target-domain item, so nothing the
    # cloze loss masks can be read back from them (the target's own and the cross vectors are
    # encoded from whole training sequences, masked items included)
    "spe_other": ("trigrec-spe_other_only", "use_cross=false", ""),
    # leak-free training: the last training item of each row is predicted through the fusion
    # from vectors exported without it (export.holdout_last=1), the rest by plain cloze
    "leakfree": ("trigrec-leakfree", "model.vector_holdout=1", ""),
    "leakfree_spe_other": ("trigrec-leakfree-spe_other_only", "use_cross=false,model.vector_holdout=1", ""),
}
OTHER_SPE = ("spe_other", "leakfree_spe_other")  # variants that read the other domain's specific vectors
HOLDOUT = {"leakfree": 1, "leakfree_spe_other": 1}  # variant -> export.holdout_last it needs
C2DSR_METRICS = ("MRR", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10")
FULL_METRICS = ("NDCG@10", "HR@10", "MRR")


def home(target: str, seed: int, suffix: str = "") -> Path:
    return REPO / "state_dict" / "bench" / "trigrec" / target / f"seed{seed}{suffix}"


def _run(module: str, config: str, over: str) -> None:
    cmd = [sys.executable, "-m", module, "--config", config, "--override", over]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def cmd_stage1(args) -> None:
    suffix = "-nogrl" if args.no_grl else ""
    h = home(args.target, args.seed, suffix)
    config = f"configs/trigrec/rep/{args.target}.yaml"
    over = ",".join(x for x in (f"seed={args.seed},home={rel(h)},overwrite=true", "use_grl=false" if args.no_grl else "", args.override) if x)
    if not (args.collect_only and (h / "rep" / args.target / "results.json").is_file()):
        _run("user_representation_module.train", config, over)
        _run("user_representation_module.inference", config, over)
    metrics = [json.loads(x) for x in (h / "rep" / args.target / "metrics.jsonl").read_text().splitlines()]
    command = f"python -m user_representation_module.train --config {config} --override \"{over}\""
    name = "trigrec-stage1" + suffix
    # from metrics.jsonl, not results.json: the same definition (training only) for every run, resumed or not
    sec = mean_epoch_seconds(h / "rep" / args.target)
    rows = [row(TARGETS[args.target], name, "full", "sec_per_epoch", sec, seeds=[args.seed], command=command),
            row(TARGETS[args.target], name, "full", "disc_acc_last_epoch", metrics[-1].get("disc_acc"),
                seeds=[args.seed], command=command, disc_acc_curve=[m.get("disc_acc") for m in metrics])]
    # validation only (the target's specific encoder, full ranking): shows what the reversal costs the encoders
    if "valid" in metrics[-1]:
        rows.append(row(TARGETS[args.target], name, "full", "valid NDCG@10 (last epoch)", 100 * metrics[-1]["valid"]["NDCG@10"],
                        seeds=[args.seed], command=command, unit="%", epoch=metrics[-1]["epoch"]))
    merge_rows(RUNS_FILE, rows)
    print(f"stage 1 {args.target} seed {args.seed}{suffix}: {sec:.1f}s/epoch, "
          f"discriminator accuracy {metrics[-1].get('disc_acc'):.3f} at the last epoch")


def cmd_stage1_loss(args) -> None:
    """Stage 1 trained with the full softmax over the catalog (``model.loss=ce``) and with the
    shipped sampled softmax, one after the other in this call (same machine, same load): seconds
    per epoch and the target's validation NDCG@10 after ``--epochs`` epochs, for both."""
    config = f"configs/trigrec/rep/{args.target}.yaml"
    rows = []
    for loss in ("ce", "sampled_softmax"):
        h = home(args.target, args.seed, f"-loss-{loss}-{args.epochs}ep")
        over = (f"seed={args.seed},home={rel(h)},overwrite=true,model.loss={loss},training.epochs={args.epochs},"
                f"training.eval_every={args.epochs},save_every={args.epochs}" + (f",{args.override}" if args.override else ""))
        _run("user_representation_module.train", config, over)
        metrics = [json.loads(x) for x in (h / "rep" / args.target / "metrics.jsonl").read_text().splitlines()]
        command = f"python -m benchmarks.trigrec stage1-loss --target {args.target} --seed {args.seed} --epochs {args.epochs}"
        name = f"trigrec-stage1-{loss}"
        threads = json.loads((h / "rep" / args.target / "results.json").read_text()).get("threads")
        rows += [row(TARGETS[args.target], name, "full", "sec_per_epoch", mean_epoch_seconds(h / "rep" / args.target),
                     seeds=[args.seed], command=command, threads=threads, epochs=args.epochs),
                 row(TARGETS[args.target], name, "full", f"valid NDCG@10 (epoch {args.epochs})",
                     100 * metrics[-1]["valid"]["NDCG@10"], seeds=[args.seed], command=command, unit="%")]
    merge_rows(RUNS_FILE, rows)
    for r in rows:
        print(f"{r['model']:28s} {r['metric']:26s} {r['value']:.3f}")


def ensure_export(h: Path, args, code: str, holdout: int = 0) -> None:
    """Run the stage-1 export of SPE_DOMAIN=``code`` (with ``export.holdout_last=holdout``) unless
    the files stage 2 will read exist: the epoch it picks (EPOCH_TO_LOAD in ``--override``, else
    the latest exported) and, with ``holdout``, that epoch's ``.holdout{m}`` spe and cross files."""
    folder = h / "embeddings" / "user_representation_module" / args.target
    pat = re.compile(rf"^spe_emb_ep(\d+)_{code}\.npy$")
    exported = sorted(int(m[1]) for p in folder.glob(f"spe_emb_ep*_{code}.npy") if (m := pat.match(p.name)))
    asked = re.search(r"(?:EPOCH_TO_LOAD|epoch_to_load)=(\d+)", args.override)
    epoch = int(asked[1]) if asked and int(asked[1]) else (exported[-1] if exported else 0)
    have = epoch in exported and all((folder / f"{k}_emb_ep{epoch}_{code}.holdout{holdout}.npy").is_file()
                                     for k in ("spe", "cross") if holdout)
    if not have:
        over = f"seed={args.seed},home={rel(h)},SPE_DOMAIN={code}" + (f",EPOCH_TO_LOAD={epoch}" if epoch else "")
        _run("user_representation_module.inference", f"configs/trigrec/rep/{args.target}.yaml",
             over + (f",export.holdout_last={holdout}" if holdout else ""))


def cmd_stage2(args) -> None:
    name, over_v, suffix = VARIANTS[args.variant]
    h = home(args.target, args.seed, suffix)
    config = f"configs/trigrec/rec/{args.target}.yaml"
    if args.tag:
        name = f"{name}-{args.tag}"
    run_name = f"bench-{args.variant}" + (f"-{args.tag}" if args.tag else "")
    over = ",".join(x for x in (f"seed={args.seed},home={rel(h)},run_name={run_name},overwrite=true", over_v, args.override) if x)
    out = h / "rec" / args.target / run_name
    code = "A" if args.target == "food" else "B"
    if args.variant in OTHER_SPE:
        code = "B" if code == "A" else "A"
        over += f",SPE_DOMAIN={code}"
    if args.ranks_only:  # an older run without per-line ranks: evaluate its checkpoint again
        if not (out / "test_c2dsr_ranks.npz").is_file():
            _run("recommendation_model.train_eval", config, over + ",eval_only=true")
        return
    if not (args.collect_only and (out / "results.json").is_file()):
        if args.variant in OTHER_SPE or args.variant in HOLDOUT:
            ensure_export(h, args, code, HOLDOUT.get(args.variant, 0))
        _run("recommendation_model.train_eval", config, over)
    res = json.loads((out / "results.json").read_text())
    command = f"python -m recommendation_model.train_eval --config {config} --override \"{over}\""
    ds = TARGETS[args.target]
    extra = {"best_epoch": res["best_epoch"]}
    rows = [row(ds, name, "sampled-999", m, 100 * res["test_c2dsr"][m], seeds=[args.seed], command=command, unit="%",
                **extra) for m in C2DSR_METRICS if "test_c2dsr" in res]
    by_target = res.get("test_c2dsr_by_target", {})
    rows += [row(ds, name, "sampled-999", f"{m} (seen targets)", 100 * by_target["seen"][m], seeds=[args.seed],
                 command=command, unit="%", unseen_target_share=by_target["unseen_target_share"], **extra)
             for m in ("MRR", "NDCG@10", "HR@10") if "seen" in by_target]
    rows += [row(ds, name, "full", m, 100 * res["test_full"][m], seeds=[args.seed], command=command, unit="%", **extra)
             for m in FULL_METRICS]
    rows.append(row(ds, name, "full", "sec_per_epoch", mean_epoch_seconds(out), seeds=[args.seed], command=command))
    merge_rows(RUNS_FILE, rows)
    c2 = res.get("test_c2dsr", {})
    print(f"{ds} {name} seed {args.seed}: C2DSR NDCG@10 {100 * c2.get('NDCG@10', float('nan')):.2f}% "
          f"MRR {100 * c2.get('MRR', float('nan')):.2f}%; full NDCG@10 {100 * res['test_full']['NDCG@10']:.2f}%")


def cmd_summarize(args) -> None:
    from core.store import atomic_write_json, atomic_write_text

    runs = load_rows(RUNS_FILE)
    _, out = aggregate(runs, skip=())
    tests = paired_tests()
    atomic_write_json(RESULTS / "trigrec.json", out + tests)
    by = {(r["dataset"], r["model"], r["protocol"], r["metric"]): r for r in out}
    fmt = lambda r: f"{r['value']:.2f} ± {r['std']:.2f}" if r else ""  # noqa: E731
    lines = ["# TriGRec on Food-Kitchen (test; C2DSR protocol = target vs 999 sampled items of its domain, %)", "",
             "| target | model | seeds | MRR | NDCG@5 | NDCG@10 | HR@1 | HR@5 | HR@10 | full NDCG@10 | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t, ds in TARGETS.items():
        p = PUBLISHED[t]
        lines.append(f"| {t} | C2DSR (published) | | {p['MRR']:.2f} | | {p['NDCG@10']:.2f} | | | {p['HR@10']:.2f} | | |")
        for model in sorted({m for (d, m, _, _) in by if d == ds and not m.startswith("trigrec-stage1")}):
            g = lambda proto, m: by.get((ds, model, proto, m))  # noqa: E731
            n = g("sampled-999", "NDCG@10") or g("full", "NDCG@10")
            if not n:
                continue
            sec = g("full", "sec_per_epoch")
            lines.append(f"| {t} | {model} | {len(n['seeds'])} | " + " | ".join(fmt(g("sampled-999", m)) for m in C2DSR_METRICS)
                         + f" | {fmt(g('full', 'NDCG@10'))} | {format(sec['value'], '.1f') if sec else ''} |")
        for stage1, label in (("trigrec-stage1", "stage 1 (encoders)"), ("trigrec-stage1-nogrl", "stage 1, no GRL")):
            s1 = by.get((ds, stage1, "full", "sec_per_epoch"))
            if s1:
                lines.append(f"| {t} | {label} | {len(s1['seeds'])} | | | | | | | | {s1['value']:.1f} |")
    lines += ["", "Stage 1 at its last epoch (validation; discriminator accuracy over 3 classes, chance 0.33):", "",
              "| target | encoders | seeds | discriminator accuracy | specific encoder valid NDCG@10 (full, %) |",
              "|---|---|---|---|---|"]
    for t, ds in TARGETS.items():
        for stage1, label in (("trigrec-stage1", "with GRL"), ("trigrec-stage1-nogrl", "no GRL")):
            acc = by.get((ds, stage1, "full", "disc_acc_last_epoch"))
            if acc:
                val = by.get((ds, stage1, "full", "valid NDCG@10 (last epoch)"))
                lines.append(f"| {t} | {label} | {len(acc['seeds'])} | {acc['value']:.3f} ± {acc['std']:.3f} | {fmt(val)} |")
    lines += ["", "Goals: NDCG@10 >= " + ", ".join(f"{GOALS[t]} ({t})" for t in TARGETS) + " under the C2DSR protocol.",
              f"Device: {'; '.join(sorted({r['device'] for r in runs}))}. Commands: the `command` field in trigrec.json."]
    if tests:
        lines += ["", "Paired tests on the C2DSR test lines (NDCG@10 per line, %): each line's mean over the seeds both "
                  "runs have, Wilcoxon signed-rank; per seed: the difference of the means.", "",
                  "| target | model | vs | seeds | lines | difference | per seed | p |", "|---|---|---|---|---|---|---|---|"]
        for r in tests:
            lines.append(f"| {r['dataset'].split('/')[1].lower()} | {r['model']} | {r['vs']} | {len(r['seeds'])} | "
                         f"{r['lines']} | {r['mean_diff']:+.2f} | {' / '.join(f'{d:+.2f}' for d in r['per_seed_diff'])} | "
                         f"{r['value']:.2g} |")
    atomic_write_text(RESULTS / "trigrec.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(runs)


PAIRED = {  # model -> the runs it is tested against (rows "paired_wilcoxon_p_NDCG@10")
    "trigrec": ("bert4rec", "shuffled"), "spe": ("bert4rec", "shuffled"), "cross": ("bert4rec", "shuffled"),
    "spe_other": ("bert4rec", "shuffled"), "nogrl": ("bert4rec", "trigrec"), "leakfree": ("bert4rec", "trigrec"),
    "shuffled": ("bert4rec",),
}


def line_ndcg(target: str, seed: int, variant: str) -> dict[int, float] | None:
    """NDCG@10 (%) of each C2DSR test line of one run, from its ``test_c2dsr_ranks.npz``."""
    path = home(target, seed, VARIANTS[variant][2]) / "rec" / target / f"bench-{variant}" / "test_c2dsr_ranks.npz"
    if not path.is_file():
        return None
    z = np.load(path)
    return {line: 100 * v for line, v in ndcg_by_id(z["lines"], z["ranks"]).items()}


def paired_tests() -> list[dict]:
    rows = []
    for t, ds in TARGETS.items():
        for variant, baselines in PAIRED.items():
            for base in baselines:
                pairs = {s: (line_ndcg(t, s, variant), line_ndcg(t, s, base)) for s in (1, 2, 3)}
                seeds = sorted(s for s, (a, b) in pairs.items() if a is not None and b is not None)
                if not seeds:
                    continue
                test = seed_averaged_paired([pairs[s][1] for s in seeds], [pairs[s][0] for s in seeds])
                per_seed = [float(np.mean(list(pairs[s][0].values())) - np.mean(list(pairs[s][1].values())))
                            for s in seeds]
                rows.append(row(ds, VARIANTS[variant][0], "sampled-999", "paired_wilcoxon_p_NDCG@10",
                                test["wilcoxon_p"], seeds=seeds, vs=VARIANTS[base][0], lines=test["users"],
                                mean_diff=test["mean_diff"], per_seed_diff=per_seed,
                                command="python -m benchmarks.trigrec summarize"))
    return rows


def _plot(runs: list[dict]) -> None:
    """trigrec.png: C2DSR-protocol test NDCG@10 per model, one dot per seed, bar = mean."""
    plt = pyplot("trigrec.png")
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(6 * len(TARGETS), 4.2), squeeze=False)
    for ax, (t, ds) in zip(axes[0], TARGETS.items()):
        per_model: dict[str, list[float]] = {}
        for r in runs:
            if r["dataset"] == ds and r["protocol"] == "sampled-999" and r["metric"] == "NDCG@10":
                per_model.setdefault(r["model"], []).append(r["value"])
        models = sorted(per_model, key=lambda m: (m != "bert4rec", m != "trigrec", m))
        for x, m in enumerate(models):
            ax.bar(x, np.mean(per_model[m]), color="#9ecae1" if m != "bert4rec" else "#bdbdbd")
            ax.plot([x] * len(per_model[m]), per_model[m], "k.", ms=5)
        ax.axhline(PUBLISHED[t]["NDCG@10"], color="tab:red", ls="--", lw=1, label="C2DSR (published)")
        ax.axhline(GOALS[t], color="tab:green", ls=":", lw=1, label="goal")
        ax.set_xticks(range(len(models)), [m.replace("trigrec-", "") for m in models], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("test NDCG@10 (%), target vs 999 negatives")
        ax.set_title(f"{ds} (dots: seeds)")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "trigrec.png", dpi=110)
    print(f"wrote {RESULTS / 'trigrec.png'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("stage1", "stage2"):
        s = sub.add_parser(name)
        s.add_argument("--target", choices=sorted(TARGETS), required=True)
        s.add_argument("--seed", type=int, default=1)
        s.add_argument("--override", default="")
        s.add_argument("--collect-only", action="store_true")
        if name == "stage1":
            s.add_argument("--no-grl", action="store_true", help="common encoder without gradient reversal")
        else:
            s.add_argument("--variant", choices=sorted(VARIANTS), default="trigrec")
            s.add_argument("--tag", default="", help="suffix of the row and run name for a variant with --override")
            s.add_argument("--ranks-only", action="store_true",
                           help="write the per-line C2DSR test ranks of a finished run (eval_only), no rows")
    s = sub.add_parser("stage1-loss", help="stage 1 with full vs sampled softmax: time per epoch, validation")
    s.add_argument("--target", choices=sorted(TARGETS), required=True)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--epochs", type=int, default=2)
    s.add_argument("--override", default="")
    sub.add_parser("summarize")
    args = p.parse_args()
    {"stage1": cmd_stage1, "stage2": cmd_stage2, "stage1-loss": cmd_stage1_loss, "summarize": cmd_summarize}[args.cmd](args)


if __name__ == "__main__":
    main()
