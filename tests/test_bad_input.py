"""Bad-input corpus: every entry point, fed something a user could get wrong, must exit 2 with
exactly one ``error: ...`` line that names the file or key, print no traceback, and leave
every file already in the tree (earlier outputs, checkpoints, the inputs themselves) as it was.

Each case is a function ``case(ctx) -> (module, argv, needle)``; ``ctx`` is a fresh tmp tree
with a shared tiny synthetic dataset (read-only for the cases) and an "earlier run" seeded in
``ctx.home``. Most cases call ``main(argv)`` in this process through ``core.cli.run`` (a
subprocess costs ~3 s of imports each); ``SUBPROCESS`` cases run the real command line.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from core.cli import run
from core.data.synthetic import SyntheticSpec, prepare_synthetic
from core.store import atomic_write_json, save_checkpoint, save_embeddings

REPO = Path(__file__).resolve().parent.parent
TINY_SEQ = "device=cpu,model.hidden_units=16,model.maxlen=10,training.epochs=1,training.max_steps_per_epoch=2,eval.sampled=[]"
CD_YAML = REPO / "configs/cross_domain/synthetic.yaml"
REP_YAML = REPO / "configs/trigrec/rep/synthetic.yaml"
REC_YAML = REPO / "configs/trigrec/rec/synthetic.yaml"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A tiny two-domain dataset (``syn``, ``syn-a``, ``syn-b``) and a persona sample."""
    from persona_training.synthetic import generate

    root = tmp_path_factory.mktemp("bad_input_data")
    prepare_synthetic(root / "data" / "syn", SyntheticSpec(n_users=40, n_items_per_domain=40, n_clusters=2))
    generate(root / "persona", n_users=40)
    return root


@dataclass
class Ctx:
    tmp: Path
    shared: Path

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    @property
    def data_root(self) -> Path:
        return self.shared / "data"

    def write(self, rel: str, content: str | bytes) -> Path:
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return p

    def copy_dataset(self, name: str = "syn-a") -> Path:
        dst = self.tmp / "data" / name
        shutil.copytree(self.data_root / name, dst)
        return dst


def fake_checkpoint(path: Path, kind: str) -> Path:
    """A well-formed checkpoint of another model (its weights do not matter: the kind is checked first)."""
    save_checkpoint(path, kind=kind, model_state={}, model_args={}, config={}, data_fingerprint=None)
    return path


def seq_over(ctx: Ctx, extra: str = "") -> str:
    return f"{TINY_SEQ},home={ctx.home},data.data_root={ctx.data_root},data.dataset=syn-a" + (f",{extra}" if extra else "")


def cd_over(ctx: Ctx, extra: str = "") -> str:
    return (f"home={ctx.home},data.data_root={ctx.data_root},data.dataset=syn,device=cpu,hidden_units=16,maxlen=10,"
            "num_epochs=1,max_steps_per_epoch=2" + (f",{extra}" if extra else ""))


def tri_over(ctx: Ctx, extra: str = "") -> str:
    return (f"home={ctx.home},data.data_root={ctx.data_root},data.dataset=syn,device=cpu,hidden_units=16,maxlen=10,"
            "num_epochs=1,max_steps_per_epoch=2" + (f",{extra}" if extra else ""))


def persona_cfg(ctx: Ctx, **changes: str) -> Path:
    """A data.yaml over the shared persona sample; ``changes`` replace single paths."""
    src = ctx.shared / "persona"
    files = {"selected": src / "4_selected_personas.jsonl", "persona": src / "3.5_persona_with_summary.jsonl",
             "loo_history": src / "3.5_history_loo.jsonl", "item_summary": src / "2_summary.jsonl",
             "candidates": src / "candidate.jsonl", "gt": src / "gt.jsonl", "out_root": ctx.home / "persona"}
    files.update(changes)
    return ctx.write("cfg/data.yaml", "".join(f"{k}: {v}\n" for k, v in files.items()))


def tiny_universal(ctx: Ctx) -> dict:
    return {"user_data": [{"user_id": f"u{u}", "categorical": {"job": f"j{u % 2}"}} for u in range(4)],
            "item_data": [{"item_id": i, "categorical": {"genre": f"g{i % 3}"}} for i in range(6)],
            "interactions": [{"user_id": f"u{u}", "item_id": (u + k) % 6, "timestamp": 10 * k + u}
                             for u in range(4) for k in range(4)]}


# =========================================================================== the cases
# core.demo ---------------------------------------------------------------------------
def demo_missing_config(ctx):
    return "core.demo", ["--config", str(ctx.tmp / "nope.yaml")], "nope.yaml"


def demo_empty_sequences_file(ctx):
    ds = ctx.copy_dataset()
    (ds / "sequences.npz").write_bytes(b"")
    return "core.demo", ["--override", seq_over(ctx, f"data.data_root={ctx.tmp / 'data'}")], "sequences.npz"


def demo_resume_from_another_models_checkpoint(ctx):
    fake_checkpoint(ctx.home / "demo" / "syn-a" / "demo" / "last.pt", "universal")
    return "core.demo", ["--override", seq_over(ctx, "training.resume=true")], "last.pt"


def demo_absolute_run_name(ctx):
    return "core.demo", ["--override", seq_over(ctx, f"run_name={ctx.tmp / 'elsewhere'}")], "run name"


# core.data.prepare: each writes over an existing prepared dataset, which must survive ------
def prepare_ml100k_wrong_field_count(ctx):
    out = ctx.copy_dataset()
    p = ctx.write("ml/u.data", "1\t10\t5\t881250949\n2\t10\t4\n")
    return "core.data.prepare", ["movielens", "--path", str(p.parent), "--out", str(out)], "u.data:2"


def prepare_universal_movielens_missing_folder(ctx):
    out = ctx.copy_dataset()
    return "core.data.prepare", ["universal-movielens", "--path", str(ctx.tmp / "ml-none"), "--out", str(out)], \
        "ml-none"


def prepare_recbole_empty_file(ctx):
    out = ctx.copy_dataset()
    p = ctx.write("raw/x.inter", "")
    return "core.data.prepare", ["recbole", "--path", str(p), "--out", str(out)], "x.inter"


def prepare_synthetic_bad_counts(ctx):
    out = ctx.copy_dataset()
    return "core.data.prepare", ["synthetic", "--users", "0", "--out", str(out)], "users >= 1"


# user_representation_module ------------------------------------------------------------
def rep_train_single_domain_dataset(ctx):
    return "user_representation_module.train", ["--config", str(REP_YAML), "--override",
                                                tri_over(ctx, f"data.dataset={ctx.data_root / 'syn-a'}")], \
        "syn-a: has no item_domain array"


def rep_train_wrong_value_type(ctx):
    return "user_representation_module.train", ["--config", str(REP_YAML), "--override",
                                                tri_over(ctx, "save_every=often")], "save_every"


def rep_train_resume_from_another_models_checkpoint(ctx):
    fake_checkpoint(ctx.home / "rep" / "syn-A" / "last.pt", "sasrec")
    return "user_representation_module.train", ["--config", str(REP_YAML), "--override",
                                                tri_over(ctx, "training.resume=true")], "last.pt"


def rep_inference_corrupt_checkpoint(ctx):
    for part in ("spe_A", "spe_B", "common", "cross", "discriminator"):
        ctx.write(f"home/rep/syn-A/{part}_ep1.pt", b"PK\x03\x04 truncated")
    return "user_representation_module.inference", ["--config", str(REP_YAML), "--override",
                                                    tri_over(ctx, "EPOCH_TO_LOAD=1")], "_ep1.pt"


# recommendation_model ------------------------------------------------------------------
def rec_missing_embeddings(ctx):
    return "recommendation_model.train_eval", ["--config", str(REC_YAML), "--override",
                                               tri_over(ctx, f"spe_emb_path={ctx.tmp / 'spe.npy'},"
                                                             f"cross_emb_path={ctx.tmp / 'cross.npy'}")], "spe.npy"


def rec_malformed_ids_json(ctx):
    from core.data.sequences import SequenceData

    ids = SequenceData.load(ctx.data_root / "syn").user_ids
    save_embeddings(ctx.tmp / "emb", "spe", np.zeros((len(ids), 8)), ids)
    save_embeddings(ctx.tmp / "emb", "cross", np.zeros((len(ids), 8)), ids)
    (ctx.tmp / "emb" / "cross.ids.json").write_text('["u1", "u2"')
    return "recommendation_model.train_eval", ["--config", str(REC_YAML), "--override",
                                               tri_over(ctx, f"spe_emb_path={ctx.tmp / 'emb/spe.npy'},"
                                                             f"cross_emb_path={ctx.tmp / 'emb/cross.npy'}")], \
        "cross.ids.json"


def rec_embeddings_not_one_row_per_user(ctx):
    from core.data.sequences import SequenceData

    ids = SequenceData.load(ctx.data_root / "syn").user_ids
    save_embeddings(ctx.tmp / "emb", "spe", np.zeros((len(ids), 8)), ids)
    save_embeddings(ctx.tmp / "emb", "cross", np.zeros((len(ids), 8)), ids)
    np.save(ctx.tmp / "emb" / "cross.npy", np.zeros((len(ids), 2, 4), dtype=np.float32))  # 3-D: not a row per user
    return "recommendation_model.train_eval", ["--config", str(REC_YAML), "--override",
                                               tri_over(ctx, f"spe_emb_path={ctx.tmp / 'emb/spe.npy'},"
                                                             f"cross_emb_path={ctx.tmp / 'emb/cross.npy'}")], "cross.npy"


def rec_run_name_with_dotdot(ctx):
    return "recommendation_model.train_eval", ["--config", str(REC_YAML), "--override",
                                               tri_over(ctx, "run_name=../../x")], "run name"


# persona_training ----------------------------------------------------------------------
def persona_missing_data_cfg(ctx):
    return "persona_training.train_encoder", ["--data_cfg", str(ctx.tmp / "data.yaml"), "--device", "cpu"], "data.yaml"


def persona_malformed_json_line(ctx):
    src = (ctx.shared / "persona" / "3.5_persona_with_summary.jsonl").read_text().splitlines()
    bad = ctx.write("p/personas.jsonl", "\n".join([src[0], '{"item_id": 3, "personas": [', *src[1:]]) + "\n")
    return "persona_training.build_cache", ["--data_cfg", str(persona_cfg(ctx, persona=bad)), "--model_dir", "default",
                                            "--device", "cpu"], "personas.jsonl:2"


def persona_wrong_value_type(ctx):
    return "persona_training.train_encoder", ["--data_cfg", str(persona_cfg(ctx)), "--override", "batch_size=many",
                                              "--device", "cpu"], "batch_size"


def persona_bad_ks(ctx):
    return "persona_training.rerank", ["--data_cfg", str(persona_cfg(ctx)), "--ks", "5,ten", "--device", "cpu"], "--ks"


def persona_missing_model_dir(ctx):
    return "persona_training.build_cache", ["--data_cfg", str(persona_cfg(ctx)), "--model_dir",
                                            str(ctx.tmp / "no_model"), "--device", "cpu"], "no_model"


def persona_empty_candidates(ctx):
    empty = ctx.write("p/candidate.jsonl", "")
    return "persona_training.rerank", ["--data_cfg", str(persona_cfg(ctx, candidates=empty)), "--device", "cpu",
                                       "--override", "rerank.model=default"], "candidate.jsonl"


# distillation --------------------------------------------------------------------------
def distill_user_with_empty_sequence(ctx):
    ds = ctx.copy_dataset()
    with np.load(ds / "sequences.npz") as z:
        arrays = dict(z)
    offsets = arrays["offsets"].copy()
    offsets[2] = offsets[1]  # user 1 now has no items
    arrays["offsets"] = offsets
    np.savez(ds / "sequences.npz", **arrays)
    return "distillation.training", ["--override", seq_over(ctx, f"data.data_root={ctx.tmp / 'data'}")], \
        "'u00001' has an empty sequence"


def distill_item_id_out_of_range(ctx):
    ds = ctx.copy_dataset()
    with np.load(ds / "sequences.npz") as z:
        arrays = dict(z)
    items = arrays["items"].copy()
    items[3] = 10_000
    arrays["items"] = items
    np.savez(ds / "sequences.npz", **arrays)
    return "distillation.training", ["--override", seq_over(ctx, f"data.data_root={ctx.tmp / 'data'}")], "10000"


def distill_profile_dimension_mismatch(ctx):
    from core.data.sequences import SequenceData

    users = SequenceData.load(ctx.data_root / "syn-a").user_ids
    prof = {u: [0.1] * (8 if i % 2 else 6) for i, u in enumerate(users)}
    p = ctx.write("profiles.json", json.dumps(prof))
    return "distillation.training", ["--override", seq_over(ctx, f"use_distillation=true,distill.profiles={p}")], \
        "profiles.json"


def distill_eval_checkpoint_of_another_model(ctx):
    ck = fake_checkpoint(ctx.home / "universal" / "x" / "default" / "best.pt", "universal")
    return "distillation.evaluation", ["--model-path", str(ck), "--override", seq_over(ctx)], "universal"


def distill_eval_missing_checkpoint(ctx):
    return "distillation.evaluation", ["--model-path", str(ctx.tmp / "best.pt"), "--override", seq_over(ctx)], "best.pt"


def distill_profiles_malformed_texts(ctx):
    p = ctx.write("texts.jsonl", '{"user_id": "u1", "text": "likes books"}\n{"user_id": \n')
    return "distillation.profiles", ["--dataset", str(ctx.data_root / "syn-a"), "--texts", str(p), "--dim", "4",
                                     "--out", str(ctx.home / "prof")], "texts.jsonl"


# cross_domain --------------------------------------------------------------------------
def cd_missing_config(ctx):
    return "cross_domain", ["train-source", "--config", str(ctx.tmp / "cd.yaml")], "cd.yaml"


def cd_run_name_with_dotdot(ctx):
    return "cross_domain", ["train-source", "--override", cd_over(ctx, "run_name=..")], "run name"


def cd_dataset_never_prepared(ctx):
    # the config names a dataset whose folder does not exist (used to say "not a domain of this dataset")
    return "cross_domain", ["train-source", "--config", str(REPO / "configs/cross_domain/food.yaml"), "--override",
                            f"home={ctx.home},data.data_root={ctx.data_root},data.dataset=never-prepared"], "no prepared dataset"


def cd_recommend_k_zero(ctx):
    return "cross_domain", ["recommend", "--user", "u0001", "--k", "0", "--override", cd_over(ctx)], "--k"


def cd_rl_demo_checkpoint_of_another_model(ctx):
    ev = ctx.write("events.jsonl", '{"user": "u0001", "item": "a1", "click": true}\n')
    fake_checkpoint(ctx.home / "cross_domain" / "syn" / "default" / "baseline-A" / "best.pt", "sasrec")
    return "cross_domain", ["rl-demo", "--events", str(ev), "--override", cd_over(ctx)], "baseline-A/best.pt"


def cd_source_vectors_wrong_rows(ctx):
    save_embeddings(ctx.tmp / "emb", "src", np.zeros((3, 8)), ["x", "y", "z"])
    (ctx.tmp / "emb" / "src.ids.json").write_text(json.dumps(["x", "y"]))
    return "cross_domain", ["train-target-transfer", "--override",
                            cd_over(ctx, f"transfer.source_vectors={ctx.tmp / 'emb/src.npy'}")], "src.npy"


# universal -----------------------------------------------------------------------------
def uni_empty_data_file(ctx):
    p = ctx.write("u/data.json", "")
    return "universal.train", ["--data", str(p), "--override", f"home={ctx.home},num_epochs=1"], \
        "data.json: file is empty"


def uni_malformed_jsonl_line(ctx):
    raw = tiny_universal(ctx)
    lines = [json.dumps({"kind": "user", **u}) for u in raw["user_data"]]
    lines += [json.dumps({"kind": "item", **i}) for i in raw["item_data"]]
    lines += ['{"kind": "interaction", "user_id": "u1", ']
    p = ctx.write("u/data.jsonl", "\n".join(lines) + "\n")
    return "universal.train", ["--data", str(p), "--override", f"home={ctx.home},num_epochs=1"], f"data.jsonl:{len(lines)}"


def uni_wrong_schema(ctx):
    raw = tiny_universal(ctx)
    del raw["item_data"]
    p = ctx.write("u/data.json", json.dumps(raw))
    return "universal.train", ["--data", str(p), "--override", f"home={ctx.home},num_epochs=1"], "item_data"


def uni_wrong_value_type(ctx):
    p = ctx.write("u/data.json", json.dumps(tiny_universal(ctx)))
    return "universal.train", ["--data", str(p), "--override", f"home={ctx.home},embedding_dim=big"], "embedding_dim"


def uni_run_name_absolute(ctx):
    p = ctx.write("u/data.json", json.dumps(tiny_universal(ctx)))
    return "universal.train", ["--data", str(p), "--override", f"home={ctx.home},run_name=/tmp/x"], "run name"


def uni_inference_checkpoint_of_another_model(ctx):
    ck = fake_checkpoint(ctx.home / "distillation" / "syn-a" / "sasrec" / "best.pt", "sasrec")
    p = ctx.write("u/data.json", json.dumps(tiny_universal(ctx)))
    return "universal.inference", ["--model_path", str(ck), "--data", str(p)], "sasrec"


def uni_inference_top_k_zero(ctx):
    ck = fake_checkpoint(ctx.home / "universal" / "u" / "default" / "best.pt", "universal")
    p = ctx.write("u/data.json", json.dumps(tiny_universal(ctx)))
    return "universal.inference", ["--model_path", str(ck), "--data", str(p), "--top_k", "0"], "--top_k"


CASES = [demo_missing_config, demo_empty_sequences_file, demo_resume_from_another_models_checkpoint,
         demo_absolute_run_name,
         prepare_ml100k_wrong_field_count, prepare_universal_movielens_missing_folder, prepare_recbole_empty_file,
         prepare_synthetic_bad_counts,
         rep_train_single_domain_dataset, rep_train_wrong_value_type,
         rep_train_resume_from_another_models_checkpoint, rep_inference_corrupt_checkpoint,
         rec_missing_embeddings, rec_malformed_ids_json, rec_embeddings_not_one_row_per_user, rec_run_name_with_dotdot,
         persona_missing_data_cfg, persona_malformed_json_line, persona_wrong_value_type, persona_bad_ks,
         persona_missing_model_dir, persona_empty_candidates,
         distill_user_with_empty_sequence, distill_item_id_out_of_range, distill_profile_dimension_mismatch,
         distill_eval_checkpoint_of_another_model, distill_eval_missing_checkpoint, distill_profiles_malformed_texts,
         cd_missing_config, cd_dataset_never_prepared, cd_run_name_with_dotdot, cd_recommend_k_zero, cd_rl_demo_checkpoint_of_another_model,
         cd_source_vectors_wrong_rows,
         uni_empty_data_file, uni_malformed_jsonl_line, uni_wrong_schema, uni_wrong_value_type, uni_run_name_absolute,
         uni_inference_checkpoint_of_another_model, uni_inference_top_k_zero]
# the real command line (interpreter start, `python -m`, exit code) for a spread of pipelines
SUBPROCESS = {"demo_empty_sequences_file", "rec_malformed_ids_json", "persona_malformed_json_line",
              "uni_malformed_jsonl_line"}


def _snapshot(root: Path) -> dict:
    """Every file under ``root`` with its content hash and mtime."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _seed_earlier_run(ctx: Ctx) -> None:
    """Outputs of an earlier good run, in the places the pipelines write to."""
    for rel in ("demo/syn-a/demo", "distillation/syn-a/sasrec", "universal/data/default", "cross_domain/syn/default/source-B",
                "rep/syn-A", "rec/syn-A", "persona/train"):
        folder = ctx.home / rel
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text('{"earlier": true}\n')
        (folder / "metrics.jsonl").write_text('{"epoch": 1}\n')


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_clear_line_and_keeps_earlier_outputs(case, shared, tmp_path, monkeypatch, capsys):
    ctx = Ctx(tmp_path, shared)
    _seed_earlier_run(ctx)
    module, argv, needle = case(ctx)
    before = _snapshot(tmp_path)
    env = {"RECSYS_HOME": str(ctx.home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if case.__name__ in SUBPROCESS:
        proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, env={**os.environ, **env},
                              capture_output=True, text=True, timeout=300)
        code, err = proc.returncode, proc.stderr
    else:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.chdir(REPO)
        # a package run with `python -m` has its main in __main__
        mod = importlib.import_module(module + ".__main__" if module in ("cross_domain", "core.data.prepare") else module)
        with pytest.raises(SystemExit) as exc:
            run(mod.main, argv)
        code, err = exc.value.code, capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err[-3000:]
    assert code == 2, (code, err[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert needle in lines[0], (needle, lines[0])
    assert _snapshot(tmp_path) == before  # nothing earlier changed, nothing half-written appeared
