"""A run owns its folder (issue 21: faults 2, 3, 7 and part of 11).

- two runs in one folder: a lock file names the holder and the second run stops;
- silent reuse: a folder holding another run's ``config.yaml`` is refused unless
  ``training.resume=true`` (same config) or ``overwrite=true``; default folders carry the model's
  name and ``--debug`` has its own;
- ``RECSYS_HOME`` pointing at a file, files written 0600, a text file passed as a checkpoint.

Every refusal is checked as a user sees it: one ``error:`` line, exit code 2, and no file of the
earlier run changed.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core import store
from core.cli import run
from core.errors import CheckpointError, UserError
from conftest import write_synthetic_tree
from core.store import LOCK_NAME, claim_run_dir

REPO = Path(__file__).resolve().parent.parent
SEQ = ("device=cpu,model.hidden_units=16,model.maxlen=12,training.batch_size=16,training.epochs=1,"
       "training.max_steps_per_epoch=2,eval.sampled=[],eval.valid_max_users=50")
TRI = "device=cpu,hidden_units=16,maxlen=12,batch_size=16,num_epochs=1,max_steps_per_epoch=2,eval_every=1"
UNI = "device=cpu,embedding_dim=8,batch_size=32,num_epochs=1,training.max_steps_per_epoch=2,eval.auc_negatives=5"


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic_tree(tmp_path_factory.mktemp("hygiene_data"), 60, vectors=("spe", "cross"),
                                universal=(30, 20, 6))


def cli(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run an entry point in this process as ``python -m`` would: (exit code, stdout, stderr)."""
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as exc:
        run(mod.main, argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def one_error_line(code: int, err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    return lines[0]


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def seq(home: Path, data: Path, extra: str = "") -> list[str]:
    return ["--override", f"{SEQ},home={home},data.data_root={data},data.dataset=syn-a" + (f",{extra}" if extra else "")]


def rep(home: Path, data: Path, extra: str = "") -> list[str]:
    return ["--config", str(REPO / "configs/trigrec/rep/synthetic.yaml"), "--override",
            f"{TRI},home={home},data.data_root={data},data.dataset=syn,eval.valid_max_users=50"
            + (f",{extra}" if extra else "")]


def rec(home: Path, data: Path, extra: str = "") -> list[str]:
    return ["--config", str(REPO / "configs/trigrec/rec/synthetic.yaml"), "--override",
            f"{TRI},home={home},data.data_root={data},data.dataset=syn,eval.sampled=[],eval.valid_max_users=50,"
            f"spe_emb_path={data / 'emb/spe.npy'},cross_emb_path={data / 'emb/cross.npy'}" + (f",{extra}" if extra else "")]


def uni(home: Path, data: Path, extra: str = "") -> list[str]:
    return ["--data", str(data / "uni.json"), "--override", f"{UNI},home={home}" + (f",{extra}" if extra else "")]


def cd(home: Path, data: Path, extra: str = "") -> list[str]:
    return ["train-source", "--override", f"{TRI},home={home},data.data_root={data},data.dataset=syn,eval.sampled=[],"
            "eval.valid_max_users=50" + (f",{extra}" if extra else "")]


@pytest.fixture(scope="module")
def earlier(data, tmp_path_factory) -> Path:
    """A home holding one finished run of each trainer (the runs the bad inputs must not touch)."""
    home = tmp_path_factory.mktemp("hygiene_home")
    for module, argv in (("distillation.training", seq(home, data, "run_name=r1")),
                         ("user_representation_module.train", rep(home, data)),
                         ("recommendation_model.train_eval", rec(home, data)),
                         ("universal.train", uni(home, data)),
                         ("cross_domain.__main__", cd(home, data))):
        proc = subprocess.run([sys.executable, "-m", module.removesuffix(".__main__"), *argv], cwd=REPO,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (module, proc.stderr[-2000:])
    return home


def live_holder() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def write_lock(folder: Path, pid: int, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "boot_id": store._boot_id(),
                                "proc_start": store._proc_start(pid), "started": "2025-01-01T00:00:00",
                                "command": "python -m distillation.training --seed 1", "token": "x", **extra}))
    return lock


# --------------------------------------------------------------------------- bad inputs: one line, nothing lost
def case_other_model_same_run_name(home, data, tmp):
    # fault 3: a BERT4Rec run given the run_name of an earlier SASRec run
    return "distillation.training", seq(home, data, "run_name=r1,model.model_type=bert4rec"), "model.model_type"


def case_same_config_without_resume(home, data, tmp):
    return "distillation.training", seq(home, data, "run_name=r1"), "training.resume=true"


def case_resume_with_other_config(home, data, tmp):
    return ("distillation.training", seq(home, data, "run_name=r1,training.resume=true,model.hidden_units=32"),
            "model.hidden_units")


def case_resume_with_other_config_and_overwrite(home, data, tmp):
    # resume wins over overwrite (a config's default, e.g. the demo's): nothing is deleted
    return ("distillation.training", seq(home, data, "run_name=r1,training.resume=true,overwrite=true,seed=3"),
            "seed 42 -> 3")


def case_folder_locked_by_live_run(home, data, tmp):
    # fault 2: another training holds the folder
    return "distillation.training", seq(home, data, "run_name=r1,training.resume=true"), "in use by another run"


def case_recsys_home_is_a_file(home, data, tmp):
    # fault 7: RECSYS_HOME names a regular file (was a NotADirectoryError traceback)
    (tmp / "afile").write_text("x")
    return ("distillation.training", ["--override", f"{SEQ},data.data_root={data},data.dataset=syn-a"], "RECSYS_HOME=",
            {"RECSYS_HOME": str(tmp / "afile")})


def case_home_below_a_file(home, data, tmp):
    (tmp / "afile").write_text("x")
    return ("distillation.training", ["--override", f"{SEQ},home={tmp / 'afile' / 'h'},data.data_root={data},"
                                      "data.dataset=syn-a"], "which is a file")


def case_run_folder_is_a_file(home, data, tmp):
    (home / "distillation" / "syn-a" / "justafile").write_text("not a folder")
    return "distillation.training", seq(home, data, "run_name=justafile"), "cannot be used as a run folder"


def case_text_file_as_checkpoint(home, data, tmp):
    # fault 11: torch's own message for this was "(101)"
    (tmp / "notes.pt").write_text("these are my notes, not weights\n")
    return ("distillation.evaluation", ["--model-path", str(tmp / "notes.pt"), *seq(home, data)],
            "not a checkpoint written by this project")


def case_empty_file_as_checkpoint(home, data, tmp):
    (tmp / "empty.pt").write_bytes(b"")
    return "distillation.evaluation", ["--model-path", str(tmp / "empty.pt"), *seq(home, data)], "empty"


def case_trigrec_stage1_other_config(home, data, tmp):
    # stage 1 had no run_name at all: a second configuration replaced the first without a word
    return "user_representation_module.train", rep(home, data, "lr=0.005"), "training.learning_rate"


def case_trigrec_stage2_readme_lines(home, data, tmp):
    # the README's two stage-2 example lines, both in the default folder rec/<domain>/
    return "recommendation_model.train_eval", rec(home, data, "seed=2025"), "seed"


def case_universal_other_config(home, data, tmp):
    return "universal.train", uni(home, data, "loss_type=softmax"), "loss_type"


def case_cross_domain_source_other_config(home, data, tmp):
    return "cross_domain.__main__", cd(home, data, "model.dropout_rate=0.5"), "model.dropout_rate"


BAD = [
    case_other_model_same_run_name,
    case_same_config_without_resume,
    case_resume_with_other_config,
    case_resume_with_other_config_and_overwrite,
    case_folder_locked_by_live_run,
    case_recsys_home_is_a_file,
    case_home_below_a_file,
    case_run_folder_is_a_file,
    case_text_file_as_checkpoint,
    case_empty_file_as_checkpoint,
    case_trigrec_stage1_other_config,
    case_trigrec_stage2_readme_lines,
    case_universal_other_config,
    case_cross_domain_source_other_config,
]


@pytest.mark.parametrize("case", BAD, ids=[c.__name__[5:] for c in BAD])
def test_bad_input_is_one_line_and_the_earlier_run_is_kept(case, earlier, data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("RECSYS_HOME", raising=False)
    holder = live_holder() if case is case_folder_locked_by_live_run else None
    lock = write_lock(earlier / "distillation" / "syn-a" / "r1", holder.pid) if holder else None
    try:
        module, argv, needle, *env = case(earlier, data, tmp_path)
        for key, value in (env[0] if env else {}).items():
            monkeypatch.setenv(key, value)
        before = snapshot(earlier)  # after the case's own set-up, which only adds files
        code, _out, err = cli(module, argv, capsys)
        line = one_error_line(code, err)
        assert needle in line, (needle, line)
        assert snapshot(earlier) == before  # nothing of the earlier runs changed, nothing new appeared
    finally:
        if holder:
            holder.kill()
            holder.wait()
            lock.unlink()
    if holder:
        assert f"pid {holder.pid}" in line  # the message names the holder


# --------------------------------------------------------------------------- the lock
def test_two_trainings_started_together_one_wins_and_the_folder_is_consistent(data, tmp_path):
    """Fault 2 as reported: same run_name, different seeds and sizes, started at once. Before,
    both exited 0 and the folder mixed their files; now one stops with one line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "distillation.training",
                               *seq(tmp_path, data, f"run_name=same,seed={seed},model.hidden_units={size}")],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed, size in ((1, 16), (2, 32))]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [o[1][-1500:] for o in outs]
    loser = next(o for p, o in zip(procs, outs) if p.returncode == 2)
    assert [x for x in loser[1].splitlines() if x.strip()][-1].startswith("error: ")
    assert "in use by another run" in loser[1] or "holds another run" in loser[1]
    folder = tmp_path / "distillation" / "syn-a" / "same"
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    results = json.loads((folder / "results.json").read_text())
    ckpt = store.load_checkpoint(folder / "best.pt")
    # every file is the winner's
    assert ckpt["config"]["seed"] == cfg["seed"] and ckpt["model_args"]["hidden_units"] == cfg["model"]["hidden_units"]
    assert results["run_dir"] == str(folder)
    assert not (folder / LOCK_NAME).exists()  # released at exit


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "distillation" / "syn-a" / "sasrec"
    write_lock(folder, dead.pid)
    code, out, err = cli("distillation.training", seq(tmp_path, data), capsys)
    assert code == 0, err[-2000:]
    assert "taking over the lock" in out and f"pid {dead.pid}" in out
    assert (folder / "results.json").is_file() and not (folder / LOCK_NAME).exists()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    lock = write_lock(tmp_path / "run", 1, host="some-other-host")
    with pytest.raises(UserError, match="in use by another run .*some-other-host.*delete"):
        claim_run_dir(tmp_path / "run", None)
    assert json.loads(lock.read_text())["host"] == "some-other-host"


def test_lock_is_released_when_the_run_fails_and_on_success(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with claim_run_dir(folder, {"a": 1}):
            info = json.loads((folder / LOCK_NAME).read_text())
            assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["command"]
            with pytest.raises(UserError, match=f"pid {os.getpid()}"):  # the same folder twice at once
                claim_run_dir(folder, {"a": 1})
            raise RuntimeError("the run crashed")
    assert not (folder / LOCK_NAME).exists()
    with claim_run_dir(folder, {"a": 1}):
        pass
    assert not (folder / LOCK_NAME).exists()


# --------------------------------------------------------------------------- reuse on request only
def test_resume_and_overwrite_are_the_ways_back_into_a_folder(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    folder = tmp_path / "distillation" / "syn-a" / "r"
    assert cli("distillation.training", seq(tmp_path, data, "run_name=r"), capsys)[0] == 0
    # resume: the same config (a longer run is allowed)
    code, out, err = cli("distillation.training", seq(tmp_path, data, "run_name=r,training.resume=true,"
                                                                      "training.epochs=2"), capsys)
    assert code == 0 and "resumed from" in out, err[-2000:]
    assert [json.loads(x)["epoch"] for x in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # overwrite: another model in its place, and nothing of the earlier run is left behind
    (folder / "sasrec.jsonl").write_text("{}\n")  # e.g. the demo's candidate lists of the earlier model
    code, out, err = cli("distillation.training", seq(tmp_path, data, "run_name=r,overwrite=true,"
                                                                      "model.model_type=bert4rec"), capsys)
    assert code == 0, err[-2000:]
    assert yaml.safe_load((folder / "config.yaml").read_text())["model"]["model_type"] == "bert4rec"
    assert store.load_checkpoint(folder / "best.pt")["kind"] == "bert4rec"
    assert not (folder / "sasrec.jsonl").exists()
    assert [json.loads(x)["epoch"] for x in (folder / "metrics.jsonl").read_text().splitlines()] == [1]


def test_default_folders_carry_the_model_name_and_debug_has_its_own(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    for model in ("sasrec", "bert4rec"):  # no run_name (the config's is cleared): before, both went to .../default/
        assert cli("distillation.training", seq(tmp_path, data, f"run_name='',model.model_type={model}"), capsys)[0] == 0
    root = tmp_path / "distillation" / "syn-a"
    assert {p.name for p in root.iterdir()} == {"sasrec", "bert4rec"}
    real = snapshot(root / "sasrec")
    code, out, err = cli("distillation.training", [*seq(tmp_path, data, "run_name=sasrec"), "--debug"], capsys)
    assert code == 0, err[-2000:]
    assert (root / "sasrec-debug" / "results.json").is_file() and snapshot(root / "sasrec") == real


def test_universal_default_folder_names_the_model(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    for scorer in ("dot", "classifier"):
        code, _out, err = cli("universal.train", uni(tmp_path, data, f"scorer={scorer}"), capsys)
        assert code == 0, err[-2000:]
    runs = tmp_path / "universal" / "uni"
    assert {p.name for p in runs.iterdir()} == {"two-tower-dot", "two-tower-classifier"}
    emb = tmp_path / "embeddings" / "universal" / "uni"
    assert (emb / "two-tower-dot.users.npy").is_file() and (emb / "two-tower-classifier.users.npy").is_file()


def test_trigrec_stage1_run_name_gives_its_own_folder_and_export(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    from user_representation_module.config import RepConfig

    assert cli("user_representation_module.train", rep(tmp_path, data), capsys)[0] == 0
    code, _out, err = cli("user_representation_module.train", rep(tmp_path, data, "lr=0.005,run_name=fast"), capsys)
    assert code == 0, err[-2000:]
    base = tmp_path / "rep" / "syn-A"
    assert (base / "config.yaml").is_file() and (base / "fast" / "config.yaml").is_file()
    assert yaml.safe_load((base / "config.yaml").read_text())["training"]["learning_rate"] != 0.005
    code, out, err = cli("user_representation_module.inference", rep(tmp_path, data, "run_name=fast"), capsys)
    assert code == 0, err[-2000:]
    exported = tmp_path / "embeddings" / "user_representation_module" / "syn-A" / "fast"
    assert (exported / "spe_emb_ep1_A.npy").is_file()
    assert not list(exported.parent.glob("*.npy"))  # the default run's export folder is untouched
    assert RepConfig().run_name == ""  # the seed's layout stays the default


def test_cross_domain_rl_demo_refuses_a_second_policy_unless_overwrite(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    over = (f"{TRI},home={tmp_path},data.data_root={data},data.dataset=syn,eval.sampled=[],eval.valid_max_users=50,"
            "rl.max_users=20,rl.batch_size=8")
    assert cli("cross_domain.__main__", ["train-target-baseline", "--override", over], capsys)[0] == 0
    assert cli("cross_domain.__main__", ["rl-demo", "--steps", "1", "--override", over], capsys)[0] == 0
    policy = tmp_path / "cross_domain" / "syn" / "default" / "rl-baseline-A"
    before = snapshot(policy)
    code, _out, err = cli("cross_domain.__main__", ["rl-demo", "--steps", "2", "--override", over], capsys)
    line = one_error_line(code, err)
    assert "rl.steps" in line and "training.resume" not in line  # a policy run cannot be resumed
    assert snapshot(policy) == before
    code, _out, err = cli("cross_domain.__main__", ["rl-demo", "--steps", "2", "--override", over + ",overwrite=true"],
                          capsys)
    assert code == 0, err[-2000:]
    assert len(json.loads((policy / "results.json").read_text())["reward_per_step"]) == 2


# --------------------------------------------------------------------------- files and checkpoints
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        store.atomic_write_text(tmp_path / "a.json", "{}")
        store.save_checkpoint(tmp_path / "b.pt", kind="sasrec", model_state={}, model_args={}, config={})
        with claim_run_dir(tmp_path / "run", None):
            lock_mode = (tmp_path / "run" / LOCK_NAME).stat().st_mode & 0o777
    finally:
        os.umask(old)
    want = 0o666 & ~umask  # before: always 0600 (tempfile.mkstemp)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == want
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == want
    assert lock_mode == want


def test_text_file_as_checkpoint_names_the_file(tmp_path):
    p = tmp_path / "best.pt"
    p.write_text("epoch,ndcg\n1,0.3\n")
    with pytest.raises(CheckpointError) as exc:
        store.load_checkpoint(p)
    assert str(p) in str(exc.value) and "not a checkpoint written by this project" in str(exc.value)
    assert "(101)" not in str(exc.value)


def test_config_differences_name_keys_and_ignore_run_settings():
    old = {"seed": 1, "device": "cpu", "training": {"resume": False, "epochs": 3, "learning_rate": 0.1},
           "model": {"model_type": "sasrec"}, "ks": (5, 10)}
    new = {"seed": 1, "device": "cuda", "training": {"resume": True, "epochs": 3, "learning_rate": 0.2},
           "model": {"model_type": "sasrec"}, "ks": [5, 10], "overwrite": True}
    assert store.config_differences(old, new) == [("training.learning_rate", 0.1, 0.2)]
    assert store.config_differences(old, new, ignore=("training",)) == []


# --------------------------------------------------------------------------- torchrun
def test_under_torchrun_rank0_decides_and_every_rank_stops(data, tmp_path):
    """Rank 0 alone takes the lock and checks the folder; when it refuses, the other rank gets the
    same error instead of waiting forever at the next collective."""
    import socket as sock

    with sock.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{port}", "-m", "distillation.training"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run(argv + seq(tmp_path, data, "run_name=ddp"), cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    folder = tmp_path / "distillation" / "syn-a" / "ddp"
    assert (folder / "results.json").is_file() and not (folder / LOCK_NAME).exists()
    before = snapshot(folder)
    refused = subprocess.run(argv + seq(tmp_path, data, "run_name=ddp,seed=7"), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    # each rank that gets to print says why (torchrun may stop the other rank first: then only one
    # line); without rank 0 broadcasting its decision, rank 1 would wait at the next collective
    errors = [x for x in refused.stderr.splitlines() if x.startswith("error: ")]
    assert errors and all("holds another run" in e and "seed 42 -> 7" in e for e in errors), refused.stderr[-3000:]
    assert snapshot(folder) == before


def test_torchrun_worker_exits_with_its_code_flushed_and_without_finalization(tmp_path):
    """Under torchrun (WORLD_SIZE > 1) ``core.cli.run`` ends the worker without interpreter
    finalization, where a gloo thread can abort it: the exit code and buffered output survive, and
    an atexit handler (part of finalization) does not run. Without WORLD_SIZE, finalization runs."""
    script = ("import atexit, logging, sys\n"
              "from core.cli import run\n"
              "from core.errors import UserError\n"
              "atexit.register(lambda: print('finalized'))\n"
              "logging.basicConfig(stream=sys.stderr, level=logging.INFO)\n"
              "def main(argv):\n"
              "    print('result line')\n"
              "    logging.info('log line')\n"
              "    if argv == ['bad']:\n"
              "        raise UserError('bad value')\n"
              "    return 3\n"
              "run(main, sys.argv[1:])\n")
    path = tmp_path / "entry.py"
    path.write_text(script)

    def launch(world: str, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "WORLD_SIZE": world, "PYTHONPATH": str(REPO)}
        return subprocess.run([sys.executable, str(path), *args], env=env, capture_output=True, text=True,
                              timeout=120)

    worker = launch("2")
    assert worker.returncode == 3 and worker.stdout == "result line\n", worker
    assert "log line" in worker.stderr
    refused = launch("2", "bad")
    assert refused.returncode == 2 and "error: bad value" in refused.stderr
    single = launch("1")
    assert single.returncode == 3 and single.stdout == "result line\nfinalized\n"
