"""Universal pipeline hygiene (issue 21): custom encoders are built only from the user's code or an
explicit command-line opt-in (never imported because a config or checkpoint names a module),
inference needs no --config, the README's universal lines run in order, CSV folders without
users/items tables, and what ``training.save_checkpoints=false`` keeps."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import write_tiny_universal
from core.cli import run
from core.store import REPO_ROOT, atomic_write_json

PY = sys.executable
SIDE_EFFECT = "marker.txt"


@pytest.fixture(autouse=True)
def _no_opt_ins_leak():
    from universal.encoders import ALLOWED_MODULES, REGISTRY

    before = dict(REGISTRY)
    yield
    ALLOWED_MODULES.clear()
    REGISTRY.clear()
    REGISTRY.update(before)


def _audio_data(path: Path) -> Path:
    write_tiny_universal(path, n_users=8, n_items=10, per_user=5)
    raw = json.loads(path.read_text())
    for n, rec in enumerate(raw["item_data"]):
        rec["audio"] = {"clip": [float(n), 1.0, -0.5]}
    atomic_write_json(path, raw)
    return path


def _evil_module(folder: Path) -> Path:
    """A module whose import leaves a file behind: the side effect that must not happen."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evilenc.py").write_text(
        "import pathlib, torch\n"
        f"pathlib.Path(__file__).with_name({SIDE_EFFECT!r}).write_text('imported')\n"
        "class Enc(torch.nn.Module):\n"
        "    def __init__(self, i, o):\n"
        "        super().__init__(); self.lin = torch.nn.Linear(i, o)\n"
        "    def forward(self, x):\n"
        "        return self.lin(x)\n")
    return folder / SIDE_EFFECT


def _cli(module: str, args: list[str], cwd: Path, extra_path: Path | None = None, home: Path | None = None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), str(extra_path or "")) if p),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    if home is not None:
        env["RECSYS_HOME"] = str(home)
    return subprocess.run([PY, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, proc.stderr)
    return lines[0]


# =========================================================================== custom encoders
def test_module_spec_in_config_is_refused_without_importing_it(tmp_path):
    marker = _evil_module(tmp_path / "mods")
    data = _audio_data(tmp_path / "audio.json")
    proc = _cli("universal.train", ["--data", str(data), "--override",
                                    f"home={tmp_path / 'home'},device=cpu,num_epochs=1,"
                                    "custom_encoders={audio: 'evilenc:Enc'}"], tmp_path, tmp_path / "mods")
    line = _one_error_line(proc)
    assert "custom_encoders.audio" in line and "--allow-encoder-module evilenc" in line and "register_encoder" in line
    assert not marker.exists(), "the module's top-level code ran"
    assert not (tmp_path / "home").exists()  # refused before any data work or output


def test_checkpoint_naming_a_module_is_refused_unless_allowed_on_the_command_line(tmp_path):
    marker = _evil_module(tmp_path / "mods")
    data = _audio_data(tmp_path / "audio.json")
    home = tmp_path / "home"
    # the explicit opt-in imports the module (its code runs, as the user asked) and trains
    proc = _cli("universal.train", ["--data", str(data), "--allow-encoder-module", "evilenc", "--override",
                                    f"home={home},device=cpu,num_epochs=1,custom_encoders={{audio: 'evilenc:Enc'}}"],
                tmp_path, tmp_path / "mods")
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()
    marker.unlink()
    ckpt = next(home.glob("universal/*/*/best.pt"))
    # another process reads the checkpoint: its text alone never imports the module
    proc = _cli("universal.inference", ["--model_path", str(ckpt), "--data", str(data), "--override", "device=cpu",
                                        "--output", str(tmp_path / "out.json")], tmp_path, tmp_path / "mods")
    line = _one_error_line(proc)
    assert str(ckpt) in line and "'evilenc:Enc'" in line and "--allow-encoder-module evilenc" in line
    assert not marker.exists() and not (tmp_path / "out.json").exists()
    proc = _cli("universal.inference", ["--model_path", str(ckpt), "--data", str(data), "--override", "device=cpu",
                                        "--allow-encoder-module", "evilenc", "--output", str(tmp_path / "out.json")],
                tmp_path, tmp_path / "mods")
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads((tmp_path / "out.json").read_text())["users"]) == {f"u{u}" for u in range(8)}


class ClipEncoder(nn.Module):
    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_registered_encoder_trains_through_the_public_entry_point_and_reloads(tmp_path, capsys):
    import universal
    from universal import train
    from universal.pipeline import Pipeline

    data = _audio_data(tmp_path / "audio.json")
    universal.register_encoder("clip", ClipEncoder)  # what a user's own script does before training
    with pytest.raises(SystemExit) as exc:
        run(train.main, ["--data", str(data), "--override",
                         f"home={tmp_path / 'home'},device=cpu,num_epochs=1,custom_encoders={{audio: clip}}"])
    assert exc.value.code == 0, capsys.readouterr().err
    ckpt = next((tmp_path / "home").glob("universal/*/*/best.pt"))
    pipe = Pipeline.load(ckpt, log=lambda *a: None)
    assert any(isinstance(m, ClipEncoder) for m in pipe.model.modules())
    # the name is resolved from this process's registry only: without it, the checkpoint is refused
    from universal.encoders import REGISTRY
    from core.errors import CheckpointError

    del REGISTRY["clip"]
    with pytest.raises(CheckpointError, match=r"best\.pt: custom_encoders\.audio: 'clip' is not a registered encoder"):
        Pipeline.load(ckpt, log=lambda *a: None)


@pytest.mark.parametrize("spec,message", [
    ("__import__('os').system('x')", "is not a registered encoder"),
    ("os.path:join", "names a module that was not allowed"),
])
def test_bad_encoder_specs_are_one_line_errors(tmp_path, capsys, spec, message):
    from universal import train

    data = _audio_data(tmp_path / "audio.json")
    with pytest.raises(SystemExit) as exc:
        run(train.main, ["--data", str(data), "--override", f'home={tmp_path / "home"},custom_encoders={{audio: "{spec}"}}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and message in err[0], err


def test_allow_encoder_module_rejects_a_non_module_name(tmp_path, capsys):
    from universal import train

    with pytest.raises(SystemExit) as exc:
        run(train.main, ["--data", str(tmp_path / "x.json"), "--allow-encoder-module", "os; rm -rf /"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "expected a dotted module name" in err[0]


# =========================================================================== README lines, inference
def _readme_universal_lines() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Universal two-tower"):]
    block = section[section.index("```bash") + 7:section.index("```", section.index("```bash") + 7)]
    lines, buf = [], ""
    for raw in block.splitlines():
        line = raw.split("  #")[0].rstrip() if "  #" in raw else raw.rstrip()
        buf += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if buf.strip():
                lines.append(buf.strip())
            buf = ""
    return lines


def test_readme_universal_lines_run_in_order_on_small_data(tmp_path):
    """The README's correlated_dataset lines, as written, on a small stand-in for the data."""
    lines = [ln for ln in _readme_universal_lines() if "correlated" in ln or ln.startswith("python -m universal.inference")]
    assert [ln.split()[2] for ln in lines] == ["universal.train", "universal.train", "universal.inference"], lines
    work, shared = tmp_path / "main", tmp_path / "shared" / "data" / "universal"
    work.mkdir()
    shared.mkdir(parents=True)
    (work / "configs").symlink_to(REPO_ROOT / "configs")
    write_tiny_universal(shared / "correlated_dataset.json", n_users=24, n_items=12, per_user=5)
    upstream = REPO_ROOT.parent / "shared" / "data" / "universal" / "sample_config_simple_fusion.json"
    if upstream.is_file():
        shutil.copy(upstream, shared / upstream.name)
    else:  # the upstream file's shape, smaller
        atomic_write_json(shared / upstream.name, {"embedding_dim": 16, "loss_type": "bce", "num_epochs": 3,
                                                   "batch_size": 32, "model_name": "simple_baseline_model"})
    shutil.copy(shared / "correlated_dataset.json", work / "INPUT.json")
    for line in lines:
        argv = shlex.split(re.sub(r"\[[^\]]*\]", "", line))  # optional [--flags] left out
        proc = _cli(argv[2], argv[3:], work, home=work / "state_dict")
        assert proc.returncode == 0, (line, proc.stderr[-2000:])
    inference = shlex.split(lines[-1])
    ckpt = work / inference[inference.index("--model_path") + 1]
    out = json.loads((ckpt.parent / "predictions.json").read_text())
    assert len(out["users"]) == 24 and all(len(u["top_k"]) <= 10 for u in out["users"].values())
    # the two training lines keep their own checkpoints, and inference read the one it names
    assert len(list((work / "state_dict" / "universal" / "correlated_dataset").glob("*/best.pt"))) == 2
    assert out["scorer"] == torch.load(ckpt, weights_only=True)["config"]["scorer"]


# =========================================================================== CSV tables, save_checkpoints
def test_csv_folder_without_users_and_items_tables_reads_ids_only(tmp_path):
    from universal.data import load_dataset

    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,7,1\nu2,7,2\nu1,9,3\nu3,8,4\n")
    data = load_dataset(folder)
    assert data.users.ids == ["u1", "u2", "u3"] and data.items.ids == [7, 9, 8]
    assert data.users.features == [{}, {}, {}] and data.user_idx.tolist() == [1, 2, 1, 3]
    assert data.item_idx.tolist() == [1, 1, 2, 3]
    # with an items table, every interaction's item must be listed there (as in JSON)
    (folder / "items.csv").write_text("item_id,categorical.genre\n7,a\n9,b\n")
    from core.errors import DataError

    with pytest.raises(DataError, match=r"interactions\[3\]: item_id 8 is not in item_data"):
        load_dataset(folder)


def test_csv_folder_with_interactions_only_trains(tmp_path):
    from universal import train

    folder = tmp_path / "tables"
    folder.mkdir()
    rows = [f"u{u},{(3 * u + k) % 9},{10 * k + u}" for u in range(10) for k in range(5)]
    (folder / "interactions.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    with pytest.raises(SystemExit) as exc:  # no user features: the user tower reads id embeddings
        run(train.main, ["--data", str(folder), "--override",
                         f"home={tmp_path / 'home'},device=cpu,num_epochs=1,user_use_id_embedding=true"])
    assert exc.value.code == 0


def test_save_checkpoints_false_keeps_best_pt_only_and_the_readme_says_so(tmp_path, capsys):
    from universal import train

    data = write_tiny_universal(tmp_path / "d.json", n_users=8, n_items=10, per_user=5)
    with pytest.raises(SystemExit) as exc:
        run(train.main, ["--data", str(data), "--override",
                         f"home={tmp_path / 'home'},device=cpu,num_epochs=2,training.save_checkpoints=false"])
    assert exc.value.code == 0, capsys.readouterr().err
    run_dir = next((tmp_path / "home").glob("universal/*/*/best.pt")).parent
    assert (run_dir / "best.pt").is_file() and not (run_dir / "last.pt").exists()
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert "`training.save_checkpoints=false` skips `last.pt`" in readme and "`best.pt` is always written" in readme
