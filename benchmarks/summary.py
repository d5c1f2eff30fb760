"""One page over every benchmark: benchmarks/results/SUMMARY.md (``python -m benchmarks.summary
[--results DIR]``).

Per pipeline: the headline rows (the main model against its baseline(s)) with the published
anchor where one exists, our mean ± std over seeds, protocol, dataset, command and machine from
the row, then the goals of benchmarks/README.md, met or not, computed from the rows. Only the
published anchors and the goal thresholds are written here (ANCHORS, the Goals in PIPELINES).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, NamedTuple

from benchmarks.common import md_table
from benchmarks.sequential import ANCHORS as SEQUENTIAL_ANCHORS
from core.store import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
# aggregated-looking files that are inputs of a script's own summarize, not result tables
AUXILIARY = {"distillation_user_ranks"}   # per-user test ranks for distillation.py's paired tests

# Published figures no run of ours produces: (pipeline, dataset, model, protocol, metric) ->
# (value, short tag for the table, full source). The value is in the unit of our row (trigrec
# rows are in %), and only rows under the same protocol as the published figure get it.
TIGER = "Rajput et al. 2023 (TIGER paper), its baseline table on S3-Rec's Amazon files; also quoted in benchmarks/sequential.py ANCHORS"
C2DSR = "Cao et al. 2022 (C2DSR paper, CIKM), its Food-Kitchen table, NDCG@10 in %; PUBLISHED in benchmarks/trigrec.py"
ANCHORS: dict[tuple[str, str, str, str, str], tuple[float, str, str]] = {
    ("sequential", "beauty", "sasrec", "full", "NDCG@10"): (0.0318, "SASRec, TIGER table", TIGER),
    ("sequential", "sports", "sasrec", "full", "NDCG@10"): (0.0192, "SASRec, TIGER table", TIGER),
    ("sequential", "toys", "sasrec", "full", "NDCG@10"): (0.0374, "SASRec, TIGER table", TIGER),
    ("sequential", "beauty", "bert4rec", "full", "NDCG@10"): (0.0170, "BERT4Rec, TIGER table", TIGER),
    ("trigrec", "Food-Kitchen/Food", "trigrec", "sampled-999", "NDCG@10"): (9.71, "C2DSR paper", C2DSR),
    ("trigrec", "Food-Kitchen/Kitchen", "trigrec", "sampled-999", "NDCG@10"): (4.94, "C2DSR paper", C2DSR),
    ("persona", "amazon", "upstream", "candidates", "HR@10"): (
        21 / 46, "21/46, upstream", "Persona4Rec example candidate files: HR@10 = 21/46 (benchmarks/README.md, `known`)"),
    ("persona", "yelp", "upstream", "candidates", "HR@10"): (
        14 / 77, "14/77, upstream", "Persona4Rec example candidate files: HR@10 = 14/77 (benchmarks/README.md, `known`)"),
}


class Sel(NamedTuple):
    """Selects one aggregated row; `subset` only matters for files that have it (cross_domain)."""
    dataset: str
    model: str
    metric: str
    protocol: str | None = None
    subset: str | None = None


class Pipeline(NamedTuple):
    title: str
    headline: list[Sel]
    goals: list[tuple] = []  # (the goal as benchmarks/README.md or the script states it, source, check)
    note: str = ""


def get(rows: list[dict], sel: Sel) -> dict | None:
    """The row ``sel`` picks; a file may hold the same key twice (e.g. per-thread-count reruns):
    the last one wins, as in the scripts' own merge order."""
    found = [r for r in rows if all(v is None or r.get(k) == v for k, v in sel._asdict().items())]
    return found[-1] if found else None


def value(rows: list[dict], sel: Sel) -> float | None:
    r = get(rows, sel)
    return None if r is None or r.get("value") is None else float(r["value"])


def fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    a = abs(v)
    return f"{v:.4f}" if a < 1 else f"{v:.3g}" if a < 100 else f"{v:,.0f}"


def spread(r: dict) -> str:
    seeds = r.get("seeds") or []
    n = len(seeds) if isinstance(seeds, list) else seeds
    txt = fmt(r["value"])
    # a p-value is one test over the pooled seeds: its `std` field is a placeholder, not a spread
    is_test = "wilcoxon" in r.get("metric", "") or r.get("metric", "").startswith("p_")
    if n and n > 1 and r.get("std") is not None and not is_test:
        txt += f" ± {fmt(float(r['std']))}"
    return txt + (f" (n={n})" if n else " (single run)")


# --- goal checks (rows -> (measured, met?), None: rows missing): thresholds are the stated goals,
# values always come from the rows
def bound(sel: Sel, bar: float, label: str = "", most: bool = False) -> Callable:
    """The selected value is at least (``most``: at most) ``bar``."""
    def check(rows):
        v = value(rows, sel)
        return (f"{label}{fmt(v)} vs {'≤' if most else '≥'} {fmt(bar)}",
                None if v is None else v <= bar if most else v >= bar)
    return check


def beats(main: Sel, *others: Sel, chain: bool = True) -> Callable:
    """main > every other; with ``chain`` each listed other > the next too (trained > zero-shot > random)."""
    def check(rows):
        vals = [value(rows, s) for s in (main, *others)]
        txt = " > ".join(f"{s.model} {fmt(v)}" for s, v in zip((main, *others), vals)) if chain else \
            f"{main.model} {fmt(vals[0])} vs " + ", ".join(f"{s.model} {fmt(v)}" for s, v in zip(others, vals[1:]))
        if any(v is None for v in vals):
            return txt, None
        return txt, all(a > b for a, b in zip(vals, vals[1:])) if chain else all(vals[0] > v for v in vals[1:])
    return check


def cold_gain(dataset: str, model: str, protocol: str):
    """cross_domain.evaluate.cold_start_goal on cold users and on warm users (not hurt)."""
    from cross_domain.evaluate import cold_start_goal

    def check(rows):
        def v(m, subset, metric="NDCG@10"):
            return value(rows, Sel(dataset, m, metric, protocol, subset))
        b, m, p = v("baseline", "cold"), v(model, "cold"), v(model, "cold", "p_wilcoxon_vs_baseline")
        bw, mw, pw = v("baseline", "warm"), v(model, "warm"), v(model, "warm", "p_wilcoxon_vs_baseline")
        if None in (b, m, p, bw, mw, pw) or not b or not bw:
            return "rows missing", None
        g, w = m / b - 1, mw / bw - 1
        return (f"cold {100 * g:+.1f}% (p={p:.2g}), warm {100 * w:+.1f}% (p={pw:.2g})",
                cold_start_goal("cold", g, p) and cold_start_goal("warm", w, pw))
    return check


def paired_gain(dataset: str, model: str, vs: str, gain: float | None = None, alpha: float = 0.05) -> Callable:
    """trigrec.py's paired test of ``model`` against ``vs`` over the C2DSR test lines. Without
    ``gain``: met unless ``model`` is significantly worse (does not lose); with it: met when
    ``model``'s mean NDCG@10 exceeds ``vs``'s by more than ``gain`` (relative) with p < ``alpha``."""
    def check(rows):
        test = [r for r in rows if r.get("dataset") == dataset and r.get("model") == model and r.get("vs") == vs
                and r.get("metric") == "paired_wilcoxon_p_NDCG@10"]
        a, b = (value(rows, Sel(dataset, m, "NDCG@10", "sampled-999", "all")) for m in (model, vs))
        if not test or a is None or not b:
            return "rows missing", None
        t, g = test[-1], a / b - 1
        text = f"{model} vs {vs}: {100 * g:+.1f}% ({t['mean_diff']:+.2f} points, p={t['value']:.2g}, n={len(t['seeds'])})"
        return text, (t["mean_diff"] >= 0 or t["value"] >= alpha) if gain is None else (g > gain and t["value"] < alpha)
    return check


SEQ_SRC = "issue 20's bar (benchmarks/sequential.py ANCHORS, 'must reach')"
FK = {"food": "Food-Kitchen/Food", "kitchen": "Food-Kitchen/Kitchen"}
ISSUE20 = "issue 20 (benchmarks/README.md, Sequential models)"

PIPELINES: dict[str, Pipeline] = {
    "sequential": Pipeline(
        "Sequential models (SASRec, BERT4Rec)",
        [Sel(d, m, "NDCG@10", "full") for d in ("beauty", "sports", "toys") for m in ("sasrec", "popularity")]
        + [Sel("beauty", "sasrec-ce-e80", "NDCG@10", "full"),
           Sel("beauty", "bert4rec", "NDCG@10", "full"), Sel("ml-100k", "sasrec", "NDCG@10", "full"),
           Sel("beauty", "sasrec", "NDCG@10", "sampled-100"),
           Sel("beauty", "sasrec", "NDCG@10_at_budget_10min", "full"),
           Sel("beauty", "recbole-sasrec", "NDCG@10_at_budget_10min", "full"),
           Sel("beauty", "sasrec", "speedup_vs_recbole_epoch", "full"),
           Sel("beauty", "sasrec", "eval_multiple_of_limit", "full"),
           Sel("ml-1m-size", "sasrec", "ram_ratio_recbole_over_ours", "full")],
        [(f"{d} {m} test NDCG@10 (full) ≥ {bar}", SEQ_SRC, bound(Sel(d, m, "NDCG@10", "full"), bar))
         for (d, m), (_, bar, _) in SEQUENTIAL_ANCHORS.items()]
        + [(text, ISSUE20, bound(Sel(d, m, metric, "full"), bar, label, most)) for text, d, m, metric, bar, label, most in (
            ("beauty sasrec validation NDCG@10 ≥ 0.05 within 1 minute of training", "beauty", "sasrec",
             "minutes_to_valid_NDCG@10_0.05", 1.0, "minutes ", True),
            ("beauty sasrec whole run ≤ 5 minutes", "beauty", "sasrec", "train_minutes", 5.0, "minutes ", True),
            ("beauty bert4rec whole run ≤ 30 minutes", "beauty", "bert4rec", "train_minutes", 30.0, "minutes ", True),
            ("equal 10-minute budget: test NDCG@10 ≥ 1.5x RecBole's (beauty)", "beauty", "sasrec",
             "budget_10min_ratio_vs_recbole", 1.5, "ratio ", False),
            ("full evaluation ≥ 20x faster than RecBole (beauty)", "beauty", "sasrec", "speedup_vs_recbole_eval", 20.0,
             "speedup ", False),
            ("peak RAM ≥ 8x below RecBole (ML-1M shape, max length 200)", "ml-1m-size", "sasrec",
             "ram_ratio_recbole_over_ours", 8.0, "ratio ", False))]),
    "distillation": Pipeline(
        "Profile distillation (ML-100K)",
        [Sel("ml-100k", m, "NDCG@10", "full") for m in ("sasrec", "sasrec+distill", "sasrec+distill-shuffled",
                                                         "bert4rec", "bert4rec+distill", "bert4rec+distill-shuffled")]
        + [Sel("ml-100k", m, k, "full") for m in ("sasrec+distill", "bert4rec+distill")
           for k in ("gain_pct_NDCG@10", "paired_wilcoxon_p_NDCG@10")],
        note="benchmarks/README.md states no numeric goal for distillation; the gain (%) and the paired "
             "Wilcoxon p over users against the same model without distillation are the figures to read."),
    "trigrec": Pipeline(
        "TriGRec (Food-Kitchen, C2DSR protocol = sampled-999, %)",
        [Sel(FK[t], m, "NDCG@10", "sampled-999", "all") for t in FK
         for m in ("trigrec-default", "bert4rec-ss", "sasrec-merged", "trigrec-ss", "trigrec")]
        + [Sel(FK[t], "trigrec-default", "NDCG@10", "sampled-999", s) for t in FK for s in ("seen-target", "leak-controlled")],
        [(f"{t}: NDCG@10 ≥ {bar} (C2DSR protocol)", "benchmarks/trigrec.py GOALS",
          bound(Sel(FK[t], "trigrec-default", "NDCG@10", "sampled-999", "all"), bar, "trigrec-default "))
         for t, bar in (("food", 10.7), ("kitchen", 5.4))]
        + [(f"{t}: the default does not lose to its own backbone (paired over lines)", "issue 23, must",
            paired_gain(FK[t], "trigrec-default", "bert4rec-ss")) for t in FK]
        + [(f"{t}: the default ≥ +5% over the best single-model peer (sasrec-merged), p < 0.05", "issue 23, aim",
            paired_gain(FK[t], "trigrec-default", "sasrec-merged", gain=0.05)) for t in FK],
        note="`trigrec-default` is the shipped cross-only default on the shipped (sampled-softmax) stage 1 "
             "(rows `trigrec-cross_only-ss`); `trigrec` is the seed's full method on the committed full-softmax stage 1."),
    "persona": Pipeline(
        "Persona training (reranker)",
        [Sel(d, "upstream", "HR@10", "candidates") for d in ("amazon", "yelp")]
        + [Sel(d, m, "NDCG@10", p) for d, p in (("amazon", "sampled-100"), ("yelp", "sampled-100"), ("synthetic", "full"))
           for m in ("trained", "zero-shot", "random", "popularity")],
        [(f"{d}: known answer HR@10 = {txt} reproduced", "benchmarks/README.md, persona `known`", bound(
            Sel(d, "upstream", "HR@10", "candidates"), ANCHORS[("persona", d, "upstream", "candidates", "HR@10")][0] - 5e-4))
         for d, txt in (("amazon", "21/46"), ("yelp", "14/77"))]
        + [(f"{d}: trained > zero-shot > random (NDCG@10)", "benchmarks/persona.py summarize goal",
            beats(*(Sel(d, m, "NDCG@10", p) for m in ("trained", "zero-shot", "random")))) for d, p in (
                ("amazon", "sampled-100"), ("yelp", "sampled-100"), ("synthetic", "full"))],
        note="Persona rows use 5 folds over ~50 users (one seed; `std` 0): read the bootstrap intervals in persona.md."),
    "cross_domain": Pipeline(
        "Cross-domain transfer (cold-start users)",
        [Sel(d, m, "NDCG@10", p, "cold") for d in FK.values() for p in ("full", "sampled-100")
         for m in ("transfer", "ptupcdr", "baseline")],
        [(f"{t} {p}: cold gain > +5% (p < 0.05), warm not hurt", "benchmarks/README.md / cross_domain.py verdict",
          cold_gain(FK[t], "transfer", p)) for t in FK for p in ("full", "sampled-100")]),
    "universal": Pipeline(
        "Universal two-tower",
        [Sel(d, m, "NDCG@10", "full") for d in ("ml-100k", "correlated")
         for m in ("universal-simple", "universal-attention", "mf", "popularity")]
        + [Sel("scale", "universal-simple", "load_seconds", "full")],
        [(f"{d}: universal-simple NDCG@10 beats popularity and MF", "benchmarks/universal.py summarize goal",
          beats(*(Sel(d, m, "NDCG@10", "full") for m in ("universal-simple", "popularity", "mf")), chain=False))
         for d in ("ml-100k", "correlated")]
        + [("1M-interaction data loads in under 60 s", "benchmarks/README.md, universal scale",
            bound(Sel("scale", "universal-simple", "load_seconds", "full"), 60.0, "load s ", most=True))]),
    "scale": Pipeline(
        "Catalog scale (synthetic-large)",
        [Sel(f"synthetic-{s}", m, k) for s in ("1m", "10m") for m, k in (
            ("sasrec-chunked", "eval_peak_ram_gb"), ("sasrec-unchunked", "eval_peak_ram_gb"),
            ("sasrec-chunked", "eval_sec"), ("sasrec-sampled", "train_seq_per_sec"))],
        [("full ranking at 1M items under 4 GB peak RAM", "benchmarks/README.md, Catalog scale",
          bound(Sel("synthetic-10m", "sasrec-chunked", "eval_peak_ram_gb"), 4.0, "GB ", most=True))]),
}


def cell(text) -> str:
    # commands hold quotes and commas but no pipes; keep the table intact anyway
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_pipeline(name: str, spec: Pipeline, rows: list[dict], results: Path) -> list[str]:
    found = [(sel, r) for sel in spec.headline if (r := get(rows, sel))]
    missing = [sel for sel in spec.headline if not get(rows, sel)]

    def anchor(sel, r):
        a = ANCHORS.get((name, sel.dataset, sel.model, r.get("protocol", ""), sel.metric))
        return f"{fmt(a[0])} ({a[1]})" if a else ""

    out = [f"## {spec.title}", "",
           f"Source: `{name}.json`; every other row, ablation and per-seed figure: [{name}.md]({name}.md).", "",
           *md_table([(h, lambda x, f=f: cell(f(*x))) for h, f in (
               ("dataset", lambda s, r: r.get("dataset", "")), ("model", lambda s, r: r.get("model", "")),
               ("metric", lambda s, r: s.metric + (f" {r['unit']}" if r.get("unit") else "")),
               ("protocol", lambda s, r: r.get("protocol", "") + (f", {r['subset']} users" if r.get("subset") else "")),
               ("published anchor", anchor), ("ours (mean ± std, n seeds)", lambda s, r: spread(r)),
               ("machine", lambda s, r: r.get("device", "not recorded")),
               ("command", lambda s, r: f"`{r['command']}`" if r.get("command") else "not recorded"))], found)]
    if missing:
        out += ["", "Not in the results yet: " + "; ".join(
            f"{s.dataset} / {s.model} / {s.metric}" + (f" / {s.protocol}" if s.protocol else "")
            + (f" / {s.subset}" if s.subset else "") for s in missing) + "."]
    if spec.goals:
        checked = [(text, source, *check(rows)) for text, source, check in spec.goals]
        out += ["", *md_table([("goal", lambda g: cell(g[0])), ("source", lambda g: cell(g[1])),
                               ("measured", lambda g: cell(g[2])),
                               ("verdict", lambda g: "open (rows missing)" if g[3] is None else
                                "**met**" if g[3] else "**not met**")], checked)]
    if spec.note:
        out += ["", spec.note]
    plots = sorted(p.name for p in results.glob(f"{name}*.png"))
    if plots:
        out += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in plots)]
    return out + [""]


def build(results: Path) -> tuple[str, list[str]]:
    notes, sections = [], []
    files = sorted(p for p in results.glob("*.json") if not p.name.endswith("_runs.json"))
    for p in files:
        if p.stem not in PIPELINES and p.stem not in AUXILIARY:
            notes.append(f"`{p.name}`: not a known aggregated benchmark file, skipped")
    for name, spec in PIPELINES.items():
        if not (results / f"{name}.json").is_file():
            notes.append(f"`{name}.json`: missing (run `python -m benchmarks.{name} summarize`)")
            continue
        try:
            data = json.loads((results / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            notes.append(f"`{name}.json`: unreadable ({exc.__class__.__name__}: {exc}), skipped")
            continue
        if not isinstance(data, list):
            notes.append(f"`{name}.json`: not a list of rows, skipped")
            continue
        sections += render_pipeline(name, spec, [r for r in data if isinstance(r, dict)], results)
    head = ["# Benchmark summary", "",
            "Written by `python -m benchmarks.summary` from the aggregated `benchmarks/results/<name>.json` files "
            "(regenerate: `make bench-summary`). Headline rows only: the main model against its baseline(s); "
            "ablations, per-seed rows and all metrics are in each `<name>.md`, methods and caveats in "
            "[benchmarks/README.md](../README.md). `±` is the std over seeds; n = number of seeds. "
            "Published anchors and goal thresholds are the only figures not read from the results; "
            "their source is named beside them (`ANCHORS` and the `Goal`s of `PIPELINES` in summary.py).", ""]
    pngs = sorted(p.name for p in results.glob("*.png"))
    if pngs:
        head += ["All plots: " + ", ".join(f"[{p}]({p})" for p in pngs), ""]
    if notes:
        head += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    sources = sorted({(tag, src) for _, tag, src in ANCHORS.values()})
    tail = ["## Sources of the published anchors", ""] + [f"- {tag}: {src}" for tag, src in sources]
    return "\n".join(head + sections + tail).rstrip() + "\n", notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(RESULTS), help="folder with the <name>.json files (default: %(default)s)")
    args = ap.parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        print(f"error: no results folder {results}", file=sys.stderr)
        return 2
    text, notes = build(results)
    atomic_write_text(results / "SUMMARY.md", text)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"wrote {results / 'SUMMARY.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
