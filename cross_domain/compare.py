"""``eval-compare``: the trained target models side by side on the test split of the cold-start
protocol, for all / cold / warm users, under full ranking and the sampled protocol, with a
Wilcoxon signed-rank test over users (NDCG@10) of each transfer model against the baseline.
Writes ``state_dict/cross_domain/<dataset>/<run>/compare-<S>-<T>/compare.json``."""
from __future__ import annotations

from core import store
from core.cli import resolve_device, seed_everything
from core.report import format_table
from cross_domain.data import cold_protocol, load_domains
from cross_domain.evaluate import SUBSETS, paired_tests, popularity_report, protocol_report
from cross_domain.transfer import load_trained, stage_dir

METRICS = ("HR@10", "NDCG@10")


def compare(cfg, log=print) -> dict:
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    dom = load_domains(cfg.data)
    proto = cold_protocol(dom.target, cfg.cold.k, cfg.cold.fraction, cfg.cold.seed)
    fingerprint = proto.train.fingerprint()
    reports = {}
    for kind in ("baseline", "transfer", "ptupcdr"):
        if kind == "ptupcdr" and not (stage_dir(cfg, dom, kind) / "best.pt").is_file():
            continue  # the optional bridge: compared when trained
        model, side, path = load_trained(cfg, dom, kind, fingerprint, device)
        log(f"scoring {kind} ({path})")
        reports[kind] = protocol_report(model, proto, side, cfg, device)
    pop = popularity_report(proto, cfg, device)
    tests = {kind: paired_tests(reports["baseline"], r) for kind, r in reports.items() if kind != "baseline"}
    out_dir = stage_dir(cfg, dom, "compare")
    result = {"dataset": dom.folder.name, "source": dom.source_name, "target": dom.target_name,
              "protocol": proto.counts(), "cold": {"k": cfg.cold.k, "fraction": cfg.cold.fraction, "seed": cfg.cold.seed},
              "users": reports["baseline"]["users"],
              "test": {"popularity": pop["metrics"], **{k: r["metrics"] for k, r in reports.items()}},
              "paired_vs_baseline": tests, "run_dir": str(out_dir)}
    store.atomic_write_json(out_dir / "compare.json", result)
    result["ranks"] = {k: r["ranks"] for k, r in reports.items()}
    return result


def format_compare(res: dict) -> str:
    models = [m for m in ("popularity", "baseline", "transfer", "ptupcdr") if m in res["test"]]
    rows = []
    for protocol in res["test"]["baseline"]:
        for subset in SUBSETS:
            row = {"protocol": protocol, "users": f"{subset} {res['users'][subset]}"}
            for m in models:
                for metric in METRICS:
                    v = res["test"][m][protocol][subset].get(metric)
                    row[f"{m} {metric}"] = v if v is not None else "-"
            for m in models[2:]:
                t = res["paired_vs_baseline"][m][protocol].get(subset)
                base = res["test"]["baseline"][protocol][subset].get("NDCG@10")
                if t and base:
                    row[f"{m} vs base"] = f"{100 * t['mean_diff'] / base:+.1f}% p={t['p_wilcoxon']:.2g}"
            rows.append(row)
    cols = ["protocol", "users", *(f"{m} {x}" for m in models for x in METRICS), *(f"{m} vs base" for m in models[2:])]
    p = res["protocol"]
    head = (f"Test, target {res['target']} (source {res['source']}) of {res['dataset']}: {p['cold']} cold users "
            f"({p['naturally_cold']} with <= {res['cold']['k']} items, {p['cut']} cut to 0..{res['cold']['k']}, "
            f"{p['no_target_history']} to none) and {p['warm']} warm. sampled-N = 1 positive + N fixed-seed negatives; "
            "'vs base': NDCG@10 change, Wilcoxon signed-rank p over users.")
    return head + "\n" + format_table(rows, cols) + f"\nresults: {res['run_dir']}/compare.json"
