"""What the benchmarks share: rows, merging, aggregation over seeds, the command line, Markdown
tables and plots (the paired tests over users are ``core.metrics``')."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from core.metrics import sample_std  # noqa: F401  (re-exported for the benchmark scripts)
from core.provenance import cpu_description

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / ".work"


def machine(threads=None) -> str:
    threads = threads or os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    # the CPU's name and vector ISA: time rows from an AVX2 and an AVX512 machine must not look alike
    return f"cpu:{platform.machine()} {os.cpu_count()} cores ({cpu_description()}), {threads} torch threads"


def load_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def merge_rows(path: Path, new_rows: list[dict], key=("dataset", "model", "protocol", "metric", "seeds"),
               order=None) -> None:
    """Replace rows with the same key, keep the rest (sorted by ``order`` if given); atomic write."""
    ident = lambda r: tuple(json.dumps(r.get(k), sort_keys=True) for k in key)  # noqa: E731
    fresh = {ident(r) for r in new_rows}
    rows = [r for r in load_rows(path) if ident(r) not in fresh] + new_rows
    write_json(path, sorted(rows, key=order) if order else rows)


def row(dataset, model, protocol, metric, value, std=0.0, seeds=None, command="", **extra) -> dict:
    return {"dataset": dataset, "model": model, "protocol": protocol, "metric": metric, "value": value, "std": std,
            "seeds": seeds or [], "device": machine(), "command": command, **extra}


def generic_command(command: str, seed: int) -> str:
    """A run's command with its seed written as ``<N>`` (in ``seed=``, ``-seed`` and ``/seed``)."""
    for a, b in ((f"seed={seed}", "seed=<N>"), (f"-seed{seed}", "-seed<N>"), (f"/seed{seed}", "/seed<N>")):
        command = command.replace(a, b)
    return command


def with_placeholders(command: str, flags: dict[str, str]) -> str:
    """``command`` with the value after each flag of ``flags`` written as its placeholder
    (``{"--seed": "<N>"}``: ``... --seed 2`` -> ``... --seed <N>``)."""
    parts = command.split(" ")
    for flag, placeholder in flags.items():
        if flag in parts and parts.index(flag) + 1 < len(parts):
            parts[parts.index(flag) + 1] = placeholder
    return " ".join(parts)


def aggregate(runs: list[dict], skip: tuple = ("valid_curve",), keep: tuple = ("unit",)) -> tuple[dict, list[dict]]:
    """Per-seed rows -> (groups by dataset/model/protocol/metric, rows of mean and sample std
    over the seeds, with the fields ``keep`` of a group's first row and the devices of all its
    rows). Rows without a value and metrics in ``skip`` are left out."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r["metric"] not in skip and r["value"] is not None:
            groups.setdefault((r["dataset"], r["model"], r["protocol"], r["metric"]), []).append(r)
    out = []
    for (dataset, model, protocol, metric), rs in sorted(groups.items()):
        values = np.array([r["value"] for r in rs], dtype=float)
        extra = {k: rs[0][k] for k in keep if k in rs[0]}
        out.append(row(dataset, model, protocol, metric, float(values.mean()), sample_std(values),
                       sorted(s for r in rs for s in r["seeds"]), generic_command(rs[0]["command"], rs[0]["seeds"][0]),
                       **extra) | {"device": devices(rs)})  # every machine the seeds ran on, not the first's
    return groups, out


def by_seed(rows: list[dict]) -> dict:
    """{seed: value} of one-seed rows."""
    return {r["seeds"][0]: r["value"] for r in rows}


def overrides(*parts: str) -> str:
    """Comma-joined ``--override`` parts, empty ones left out."""
    return ",".join(p for p in parts if p)


def run_module(module: str, config: str, over: str, *extra: str, run: bool = True) -> str:
    """``python -m module --config config [extra] --override over`` from the repository root (unless
    ``run`` is false): the command line, as recorded in rows. ``module`` may end in a subcommand
    (``"cross_domain train-source"``)."""
    command = f"python -m {module} --config {config}{''.join(' ' + e for e in extra)} --override \"{over}\""
    if run:
        print(f"== {command}", flush=True)
        subprocess.run([sys.executable, "-m", *module.split(), "--config", config, *extra, "--override", over], cwd=REPO,
                       check=True)
    return command


def timed(fn, *args, **kw) -> tuple:
    """(fn(*args, **kw), its wall seconds)"""
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def rel(path: Path) -> str:
    try:
        return os.path.relpath(path, REPO)
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- command line
def opt(*flags, **kw) -> tuple:
    """One argument of a ``cli`` command: ``opt("--seed", type=int, default=1)``."""
    return flags, kw


def cli(doc: str, commands: dict, argv=None, call: bool = True):
    """Parse ``argv`` and call the chosen command (``call=False``: return the parsed args, the
    command in ``args.fn``): ``commands`` maps a name to ``(function of the parsed args,
    [opt(...), ...])``; the function's docstring (first paragraph) is its help."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, (fn, opts) in commands.items():
        s = sub.add_parser(name, help=" ".join((fn.__doc__ or "").split("\n\n")[0].split()) or None)
        for flags, kw in opts:
            s.add_argument(*flags, **kw)
        s.set_defaults(fn=fn)
    args = p.parse_args(argv)
    return args.fn(args) if call else args


# --------------------------------------------------------------------------- tables and plots
def md_table(columns, items, sep=None) -> list[str]:
    """Lines of a Markdown table. ``columns``: [(header, cell)], ``cell`` a key of the item or a
    function of it (a bare string is both header and key; an item that is not a dict is its list
    of cells); a cell of None is written empty (``| |``), any other value with ``str``. ``sep``:
    the cells of the separator line (default ``|---|---|``)."""
    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    line = lambda cells: "|" + "|".join(" " if c is None else f" {c} " for c in cells) + "|"  # noqa: E731
    cell = lambda it, i, c: c(it) if callable(c) else it.get(c, "") if isinstance(it, dict) else it[i]  # noqa: E731
    body = [line(cell(it, i, c) for i, (_, c) in enumerate(cols)) for it in items]
    return [line(h for h, _ in cols), line(sep) if sep else "|" + "---|" * len(cols)] + body


def pm(r: dict | None, digits: int = 4, always: bool = True) -> str:
    """``value ± std`` of an aggregated row (the std only over several seeds unless ``always``); '' for None."""
    if not r:
        return ""
    return f"{r['value']:.{digits}f}" + (f" ± {r['std']:.{digits}f}" if always or len(r["seeds"]) > 1 else "")


def devices(rows: list[dict]) -> str:
    return "; ".join(sorted({r["device"] for r in rows}))


def write_json(path: Path, obj: list | dict) -> None:
    """Write (atomically) a results file."""
    from core.store import atomic_write_json

    atomic_write_json(path, obj)


def write_md(path: Path, lines: list[str]) -> None:
    """Write (atomically) and print a Markdown file."""
    from core.store import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(name: str, panels: dict, xlabel: str, ylabel: str, size=(6, 4.2), draw=None, log=False, marker=".") -> None:
    """RESULTS/<name>: one panel per item of ``panels`` ({title: data}) side by side. By default
    ``data`` is [(label, xs, ys)], one line each (a label seen again keeps its colour and its one
    legend entry); ``draw(ax, title, data)`` draws a panel otherwise."""
    from core.store import atomic_path

    try:
        import matplotlib

        matplotlib.use("Agg")  # file-only backend
        import matplotlib.pyplot as plt
    except ImportError:
        return print(f"matplotlib not installed: skipping {name} (pip install -r benchmarks/requirements.txt)")
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(size[0] * len(panels), size[1]), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels.items()):
        if draw:
            draw(ax, title, data)
        else:
            colors: dict[str, str] = {}
            for label, xs, ys in data:
                new = label not in colors
                ax.plot(xs, ys, marker=marker, color=colors.setdefault(label, f"C{len(colors) % 10}"),
                        label=label if new else None)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(RESULTS / name) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    print(f"wrote {RESULTS / name}")
