"""`make demo`: every pipeline on the generated data, chained through one state_dict tree, one table.

    python -m demo                       # outputs in state_dict/demo/, data in data/
    python -m demo --home /tmp/h --data-root /tmp/d --device cpu --quick

Order and data flow (configs in configs/demo/):

1. sequential: SASRec on domain A of the generated default (data/synthetic-a). Its top-20
   lists of the test users (history excluded) and a popularity baseline's go to
   <home>/distillation/synthetic-a/sasrec/{sasrec,popularity}.jsonl + gt.jsonl and are scored
   by the shared evaluator (core.candidates).
2. trigrec: stage 1 (user_representation_module) trains on both domains and exports user
   vectors to <home>/embeddings/user_representation_module/synthetic-A/; stage 2
   (recommendation_model) reads them; baseline: the same BERT4Rec without the vectors.
3. cross_domain: a source SASRec on domain B exports one vector per user
   (<home>/embeddings/cross_domain/...); the target model on A reads them through a bridge;
   baseline: the target SASRec alone. Headline: cold-start users.
4. persona: the generated data in the Persona4Rec layout (data/synthetic-a-persona/) with
   SASRec's lists as candidates; a few contrastive steps on MiniLM, then rerank; baseline:
   SASRec's order. Every user's persona vector -> <home>/embeddings/persona_training/.
5. distillation: those vectors become profiles (distillation.profiles --embeddings); SASRec
   distils them; baseline: the stage-1 SASRec (same config, no profiles).
6. universal: the two-tower model on its own generated data; baseline: popularity.

Ends with one table (also <home>/demo_summary.json and .md) and the wall time of each stage.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import store
from core.cli import run
from core.config import load_config
from core.report import format_table

CONFIGS = store.REPO_ROOT / "configs" / "demo"
COLUMNS = ["pipeline", "model", "baseline", "metric", "model value", "baseline value", "change"]
# --quick (tests): every training loop a few short epochs
QUICK = {
    "seq": "training.epochs=2,training.max_steps_per_epoch=4,training.eval_every=1",
    "rep": "training.epochs=1,training.max_steps_per_epoch=3,training.eval_every=1",
    "rec": "training.epochs=2,training.max_steps_per_epoch=3,training.eval_every=1",
    "cd": "training.epochs=2,training.max_steps_per_epoch=3,training.eval_every=1",
    "persona_train": "max_steps=1,batch_size=4",
    "uni": "training.epochs=1",
}


@dataclass
class Demo:
    home: Path
    data_root: Path
    device: str
    quick: bool
    rows: list = field(default_factory=list)
    times: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)

    def over(self, stage: str, *extra: str, data: bool = True) -> str:
        # the demo's tree is its own: each `make demo` replaces the previous one's runs
        parts = [f"home={self.home}", f"device={self.device}", "overwrite=true"]
        if data:
            parts.append(f"data.data_root={self.data_root}")
        parts += [e for e in extra if e]
        if self.quick and stage in QUICK:
            parts.append(QUICK[stage])
        return ",".join(parts)

    def row(self, pipeline: str, model: str, baseline: str, metric: str, value: float, base: float) -> None:
        change = f"{100 * (value - base) / base:+.1f}%" if base > 0 else "n/a"
        self.rows.append({"pipeline": pipeline, "model": model, "baseline": baseline, "metric": metric,
                          "model value": float(value), "baseline value": float(base), "change": change})


def banner(text: str) -> None:
    print(f"\n{'=' * 8} {text} {'=' * max(0, 70 - len(text))}", flush=True)


# --------------------------------------------------------------------------- stages
def stage_sequential(d: Demo) -> None:
    from core.candidates import candidate_metrics, read_candidates, read_ground_truth
    from core.data.splits import make_split
    from core.evaluation import popularity_score_fn
    from core.models import build_model
    from core.seqrec import load_dataset, model_score_fn
    from distillation.config import DistillConfig
    from demo.bridges import write_candidates
    from distillation.pipeline import run_distillation

    cfg = load_config(DistillConfig, CONFIGS / "sequential.yaml", d.over("seq"))
    res = run_distillation(cfg)
    d.state["sasrec"] = res
    d.row("sequential", "SASRec", "popularity", "NDCG@10", res["test"]["NDCG@10"], res["popularity_test"]["NDCG@10"])

    # top-20 lists of every test user -> the shared evaluator and the persona reranker
    data, folder = load_dataset(cfg.data)
    split = make_split(data, cfg.data.split, cfg.data.valid_quantile, cfg.data.test_quantile)
    ckpt = store.load_checkpoint(Path(res["run_dir"]) / "best.pt", kind="sasrec", data_fingerprint=data.fingerprint())
    model = build_model("sasrec", **ckpt["model_args"])
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    out = Path(res["run_dir"])
    lists = {name: write_candidates(out, name, fn, split, cfg.model.maxlen)
             for name, fn in (("sasrec", model_score_fn(model)), ("popularity", popularity_score_fn(split)))}
    truth = read_ground_truth(out / "gt.jsonl")
    scored = {name: candidate_metrics(read_candidates(p), truth, [10, 20]) for name, p in lists.items()}
    print(f"candidate lists (top 20, {len(split.test)} users) -> {out}; shared evaluator NDCG@10: "
          + ", ".join(f"{n} {m['NDCG@10']:.4f}" for n, m in scored.items()))
    d.row("candidates (core.candidates)", "SASRec top-20 lists", "popularity lists", "HR@20",
          scored["sasrec"]["HR@20"], scored["popularity"]["HR@20"])
    d.state.update(split=split, folder=folder, candidates=lists["sasrec"])


def stage_trigrec(d: Demo) -> None:
    from recommendation_model.config import RecConfig
    from recommendation_model.train_eval import train_eval
    from user_representation_module.config import RepConfig
    from user_representation_module.inference import export
    from user_representation_module.train import train_representations

    rep_cfg = load_config(RepConfig, CONFIGS / "trigrec_rep.yaml", d.over("rep"))
    rep = train_representations(rep_cfg)
    exported = export(rep_cfg)
    print(f"stage 1 vectors (epoch {exported['epoch']}) -> {exported['out_dir']}")
    fused = train_eval(load_config(RecConfig, CONFIGS / "trigrec_rec.yaml", d.over("rec")))
    plain = train_eval(load_config(RecConfig, CONFIGS / "trigrec_rec.yaml", d.over(
        "rec", "run_name=demo-bert4rec,model.use_spe=false,model.use_cross=false,model.vector_holdout=0")))
    d.state["trigrec"] = {"rep": rep, "fused": fused, "plain": plain}
    d.row("trigrec (stage 1 -> 2)", "gated BERT4Rec + user vectors", "BERT4Rec", "NDCG@10 (target A)",
          fused["test_full"]["NDCG@10"], plain["test_full"]["NDCG@10"])


def stage_cross_domain(d: Demo) -> None:
    from cross_domain.compare import compare, format_compare
    from cross_domain.config import CrossDomainConfig
    from cross_domain.transfer import train_source, train_target

    cfg = load_config(CrossDomainConfig, CONFIGS / "cross_domain.yaml", d.over("cd"))
    src = train_source(cfg)
    print(f"source vectors: {src.get('vectors', src.get('run_dir'))}")
    train_target(cfg, "transfer")
    train_target(cfg, "baseline")
    res = compare(cfg)
    print(format_compare(res))
    full = next(p for p in res["test"]["baseline"] if not p.startswith("sampled"))
    d.state["cross_domain"] = res
    d.row("cross_domain (B -> A)", "SASRec + source bridge", "SASRec on A only", f"NDCG@10 cold users ({full})",
          res["test"]["transfer"][full]["cold"]["NDCG@10"], res["test"]["baseline"][full]["cold"]["NDCG@10"])


def stage_persona(d: Demo) -> None:
    from demo.bridges import persona_user_vectors, write_persona_files
    from persona_training.config import RerankStage, TrainStage, load_stage
    from persona_training.pipeline import format_rerank, run_rerank, run_training

    split, folder = d.state["split"], d.state["folder"]
    # training pairs from 30% of the users; the reranker scores the others
    rng = np.random.default_rng(0)
    pair_users = np.sort(rng.choice(len(split.valid), max(8, len(split.valid) * 3 // 10), replace=False))
    files = write_persona_files(d.data_root / "synthetic-a-persona", split, folder, d.state["candidates"], pair_users,
                                history=5)
    out_root = d.home / "persona_training" / "synthetic-a"
    paths = ",".join(f"data.{k}={files[k]}" for k in ("persona", "selected", "candidates", "gt"))
    paths += f",data.out_root={out_root}"
    train_over = [paths, f"data.loo_history={files['loo_history_train']}", f"train.device={d.device}"]
    if d.quick:
        train_over.append(QUICK["persona_train"])
    train_cfg = load_stage(TrainStage, {"data": CONFIGS / "persona_data.yaml", "train": CONFIGS / "persona_train.yaml"},
                           ",".join(train_over))
    summary = run_training(train_cfg, "synthetic")
    rerank_cfg = load_stage(RerankStage,
                            {"data": CONFIGS / "persona_data.yaml", "rerank": CONFIGS / "persona_rerank.yaml"},
                            f"{paths},data.loo_history={files['loo_history']},rerank.device={d.device}")
    res = run_rerank(rerank_cfg, "synthetic")
    print(format_rerank(res))
    m = res["metrics"]
    d.row("persona (rerank SASRec top-20)", "persona rerank", "SASRec order", "NDCG@10",
          m["reranked"]["NDCG@10"], m["upstream"]["NDCG@10"])
    vec = persona_user_vectors(summary["model_dir"], split, folder, rerank_cfg.rerank.max_history,
                               d.home / "embeddings" / "persona_training" / "synthetic-a", d.home / "cache" / "text",
                               device=str(_device(d.device)))
    print(f"persona user vectors -> {vec}")
    d.state["persona_vectors"] = vec


def stage_distillation(d: Demo) -> None:
    from distillation import profiles
    from distillation.config import DistillConfig
    from distillation.pipeline import run_distillation

    out = d.home / "embeddings" / "distillation" / "synthetic-a"
    profiles.main(["--dataset", str(d.state["folder"]), "--embeddings", str(d.state["persona_vectors"]),
                   "--out", str(out)])
    cfg = load_config(DistillConfig, CONFIGS / "distillation.yaml",
                      d.over("seq", f"distill.profiles=['{out / 'profiles.json'}']"))
    res = run_distillation(cfg)
    base = d.state["sasrec"]
    d.row("distillation (persona profiles)", "SASRec + profile distillation", "SASRec", "NDCG@10",
          res["test"]["NDCG@10"], base["test"]["NDCG@10"])


def stage_universal(d: Demo) -> None:
    from universal import synthetic
    from universal.config import UniversalConfig
    from universal.pipeline import Pipeline

    data = synthetic.ensure(d.data_root / "universal-synthetic" / "data.json")
    cfg = load_config(UniversalConfig, CONFIGS / "universal.yaml", d.over("uni", data=False))
    report = Pipeline(cfg).fit(data)
    d.row("universal (two-tower)", "feature two-tower", "popularity", "NDCG@10",
          report["test"]["NDCG@10"], report["popularity"]["test"]["NDCG@10"])


STAGES = [("sequential", stage_sequential), ("trigrec", stage_trigrec), ("cross_domain", stage_cross_domain),
          ("persona", stage_persona), ("distillation", stage_distillation), ("universal", stage_universal)]


def _device(spec: str):
    from core.cli import resolve_device

    return resolve_device(spec)


def run_demo(home: Path, data_root: Path, device: str = "auto", quick: bool = False) -> Demo:
    d = Demo(home=home.resolve(), data_root=data_root.resolve(), device=device, quick=quick)
    _device(device)  # a bad --device fails before anything runs
    # anything that falls back on the default root (text caches, persona outputs) lands in home too
    os.environ["RECSYS_HOME"] = str(d.home)
    t0 = time.perf_counter()
    for name, fn in STAGES:
        banner(f"stage {len(d.times) + 1}/{len(STAGES)}: {name}")
        start = time.perf_counter()
        fn(d)
        d.times[name] = time.perf_counter() - start
        print(f"[{name}: {d.times[name]:.1f}s]", flush=True)
    d.times["total"] = time.perf_counter() - t0
    table = format_table(d.rows, COLUMNS)
    timing = "  ".join(f"{k} {v:.1f}s" for k, v in d.times.items())
    banner("summary")
    print("Test metrics of each pipeline next to its baseline, all computed in this run "
          "(full ranking with the user's history excluded unless the metric says otherwise):")
    print(table)
    print(f"\nwall time: {timing}\noutputs: {d.home} (checkpoints, embeddings, candidate lists), data: {d.data_root}")
    store.atomic_write_json(d.home / "demo_summary.json", {"rows": d.rows, "seconds": d.times})
    store.atomic_write_text(d.home / "demo_summary.md", format_table(d.rows, COLUMNS, markdown=True) + "\n")
    return d


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=str(store.REPO_ROOT / "state_dict" / "demo"), help="output tree root")
    parser.add_argument("--data-root", default=str(store.REPO_ROOT / "data"), help="where generated data goes")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="a few steps per stage (tests)")
    args = parser.parse_args(argv)
    run_demo(Path(args.home), Path(args.data_root), args.device, args.quick)
    return 0


if __name__ == "__main__":
    run(main)
