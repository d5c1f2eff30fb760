"""Plain-text result tables for the terminal and Markdown files."""
from __future__ import annotations


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
