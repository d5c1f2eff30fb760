"""Plain-text result tables for the terminal and Markdown files, and goal checks over result rows."""
from __future__ import annotations

from typing import Callable, NamedTuple


def format_table(rows: list[dict], columns: list[str], markdown: bool = False, floatfmt: str = ".4f") -> str:
    def cell(v):
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    if markdown:
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
                 "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(b, widths)) + " |" for b in body]
    else:
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


RESULT_COLUMNS = ["model", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR", "sampled-100 NDCG@10"]


def result_rows(named_metrics: list[tuple[str, dict]]) -> list[dict]:
    """Rows for ``RESULT_COLUMNS`` from ``(name, metrics)`` pairs (missing sampled -> nan)."""
    rows = []
    for name, m in named_metrics:
        row = {"model": name, **{k: m.get(k, float("nan")) for k in RESULT_COLUMNS[1:-1]}}
        row["sampled-100 NDCG@10"] = m.get("sampled-100/NDCG@10", float("nan"))
        rows.append(row)
    return rows


# --- result rows (dicts with dataset, model, protocol, metric, value, std, seeds) and goal checks over them.
# A check maps rows to (what was measured, met?), met None when rows are missing; thresholds are given, values read.
class Sel(NamedTuple):
    """Selects one result row; ``protocol`` / ``subset`` None match any (``subset`` only where a file has it)."""
    dataset: str
    model: str
    metric: str
    protocol: str | None = None
    subset: str | None = None


def select_row(rows: list[dict], sel: Sel) -> dict | None:
    """The row ``sel`` picks; a file may hold the same key twice (e.g. per-thread-count reruns):
    the last one wins, as in the benchmark scripts' own merge order."""
    found = [r for r in rows if all(v is None or r.get(k) == v for k, v in sel._asdict().items())]
    return found[-1] if found else None


def row_value(rows: list[dict], sel: Sel) -> float | None:
    r = select_row(rows, sel)
    return None if r is None or r.get("value") is None else float(r["value"])


def fmt_value(v: float | None) -> str:
    """4 decimals below 1, 3 significant digits below 100, else whole with thousands separators; 'n/a' for None."""
    if v is None:
        return "n/a"
    a = abs(v)
    return f"{v:.4f}" if a < 1 else f"{v:.3g}" if a < 100 else f"{v:,.0f}"


def fmt_spread(r: dict) -> str:
    """A row's value, ``± std`` over several seeds (not for a p-value: its std is a placeholder) and ``(n=seeds)``."""
    seeds = r.get("seeds") or []
    n = len(seeds) if isinstance(seeds, list) else seeds
    is_test = "wilcoxon" in r.get("metric", "") or r.get("metric", "").startswith("p_")
    std = f" ± {fmt_value(float(r['std']))}" if n and n > 1 and r.get("std") is not None and not is_test else ""
    return fmt_value(r["value"]) + std + (f" (n={n})" if n else " (single run)")


def bar_verdict(r: dict | None, must: float, aim: float, seeds: int = 3) -> str:
    """A row's value against the bar it must reach and the one it aims at ('' for no row); fewer than ``seeds``
    seeds are named."""
    if not r:
        return ""
    v, n = r["value"], len(r["seeds"])
    verdict = "meets aim" if v >= aim else "meets must" if v >= must else f"misses must by {must - v:.4f}"
    return verdict + ("" if n >= seeds else f" ({n} of {seeds} seeds)")


def bound(sel: Sel, bar: float, label: str = "", most: bool = False) -> Callable:
    """Check: the selected value is at least (``most``: at most) ``bar``."""
    def check(rows):
        v = row_value(rows, sel)
        return (f"{label}{fmt_value(v)} vs {'≤' if most else '≥'} {fmt_value(bar)}",
                None if v is None else v <= bar if most else v >= bar)
    return check


def all_of(*checks: Callable) -> Callable:
    """Check: every one of ``checks`` holds (a goal with two parts, such as a time and a quality bar)."""
    def check(rows):
        results = [c(rows) for c in checks]
        oks = [ok for _, ok in results]
        # one failed part fails the goal even while another part's rows are missing
        return "; ".join(text for text, _ in results), False if False in oks else None if None in oks else True
    return check


def beats(main: Sel, *others: Sel, chain: bool = True) -> Callable:
    """Check: main > every other; with ``chain`` each listed other > the next too (trained > zero-shot > random)."""
    def check(rows):
        vals = [row_value(rows, s) for s in (main, *others)]
        named = [f"{s.model} {fmt_value(v)}" for s, v in zip((main, *others), vals)]
        txt = " > ".join(named) if chain else f"{named[0]} vs " + ", ".join(named[1:])
        if any(v is None for v in vals):
            return txt, None
        return txt, all(a > b for a, b in zip(vals, vals[1:])) if chain else all(vals[0] > v for v in vals[1:])
    return check


def paired_gain(dataset: str, model: str, vs: str, gain: float | None = None, alpha: float = 0.05,
                protocol: str = "sampled-999", subset: str = "all") -> Callable:
    """Check on a paired test row (``paired_wilcoxon_p_NDCG@10`` of ``model`` with ``vs``, its ``mean_diff``).
    Without ``gain``: met unless ``model`` is significantly worse (does not lose); with it: met when ``model``'s
    NDCG@10 exceeds ``vs``'s by more than ``gain`` (relative) with p < ``alpha``."""
    def check(rows):
        test = [r for r in rows if r.get("dataset") == dataset and r.get("model") == model and r.get("vs") == vs
                and r.get("metric") == "paired_wilcoxon_p_NDCG@10"]
        a, b = (row_value(rows, Sel(dataset, m, "NDCG@10", protocol, subset)) for m in (model, vs))
        if not test or a is None or not b:
            return "rows missing", None
        t, g = test[-1], a / b - 1
        text = (f"{model} vs {vs}: {100 * g:+.1f}% ({t['mean_diff']:+.2f} points, p={t['value']:.2g}, "
                f"n={len(t['seeds'])})")
        return text, (t["mean_diff"] >= 0 or t["value"] >= alpha) if gain is None else (g > gain and t["value"] < alpha)
    return check
