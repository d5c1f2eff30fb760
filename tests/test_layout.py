"""Layout rules of the repository (issue 22): configs say how they run, library modules stay
libraries, one resolver of ``<repo>/data/<name>``, one config front for ``distillation.profiles``."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from core.store import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "configs").rglob("*.yaml"))
COMMAND = re.compile(r"python -m ([A-Za-z_][\w.]*)")


def _header(path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def _module_exists(name: str) -> bool:
    base = REPO_ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()


# --------------------------------------------------------------------------- (7) configs
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT / "configs")))
def test_every_config_opens_with_the_command_that_runs_it(path):
    header = _header(path)
    assert header, f"{path}: the first line must be a '#' comment giving the command that runs this file"
    modules = [m for line in header for m in COMMAND.findall(line)]
    assert modules, f"{path}: the opening comment names no `python -m ...` command"
    for module in modules:
        assert _module_exists(module), f"{path}: `python -m {module}` names no module of this repository"
    if path.parent.name == "tune":  # search spaces run through the tuner
        assert "core.tune" in modules, f"{path}: a search-space file should give its `python -m core.tune` line"


def test_the_config_list_is_not_empty():
    assert len(CONFIGS) > 40


# --------------------------------------------------------------------------- (6) library modules
def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", ["core.candidates", "core.data.processed"])
def test_library_modules_do_not_import_the_command_line_front(module):
    """``python -m core.candidates`` / ``python -m core.data.processed`` keep working, but
    importing the library imports ``core.cli`` only under ``__main__``."""
    assert "core.cli" not in _modules_after_import(module)


def test_the_c2dsr_reader_does_not_import_a_preparer():
    loaded = _modules_after_import("core.data.c2dsr")
    assert not [m for m in loaded if m == "core.data.prepare" or m.startswith("core.data.prepare.")]


def test_the_food_kitchen_constants_have_one_home():
    from core.data import c2dsr
    from core.data.prepare import food_kitchen

    assert (food_kitchen.N_FOOD, food_kitchen.ITEM_SHIFT) == (c2dsr.N_FOOD, c2dsr.ITEM_SHIFT) == (29207, 1)


@pytest.mark.parametrize("module,flag", [("core.candidates", "--candidates"), ("core.data.processed", "--dataset")])
def test_library_commands_still_run(module, flag):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and flag in proc.stdout, proc.stderr[-2000:]


# --------------------------------------------------------------------------- (6) one dataset resolver
@pytest.mark.parametrize("path", ["core/seqrec.py", "core/data/prepare/common.py", "distillation/profiles.py"])
def test_one_resolver_of_repo_data(path):
    text = (REPO_ROOT / path).read_text(encoding="utf-8")
    assert not re.search(r'REPO_ROOT\s*/\s*"data"', text), f"{path}: use core.store.dataset_folder"


def test_the_resolvers_agree(tmp_path):
    from core.data.prepare.common import default_out
    from core.errors import UserError
    from core.seqrec import DataConfig, dataset_dir
    from core.store import dataset_folder

    assert dataset_dir(DataConfig(dataset="ml-100k")) == dataset_folder("ml-100k") == REPO_ROOT / "data" / "ml-100k"
    assert default_out("ml-100k") == dataset_folder("ml-100k")
    assert dataset_dir(DataConfig(dataset="x", data_root=str(tmp_path))) == tmp_path / "x"
    assert dataset_dir(DataConfig(dataset=str(tmp_path / "y"))) == tmp_path / "y"
    with pytest.raises(UserError, match="invalid dataset name"):
        default_out("a/b")  # a preparer's output name is a name, never a path


# --------------------------------------------------------------------------- (8) distillation.profiles
def test_profiles_shipped_config_is_the_readme_line():
    from distillation.profiles import parse_args

    shipped = parse_args(["--config", str(REPO_ROOT / "configs/distillation/profiles/ml-100k.yaml")])
    assert shipped == parse_args(["--dataset", "ml-100k", "--dim", "128"])
    assert parse_args(["--config", str(REPO_ROOT / "configs/distillation/profiles/ml-100k.yaml"),
                       "--override", "dim=64", "--device", "cpu"]).dim == 64


def test_profiles_config_and_override_give_what_the_flags_give(tmp_path):
    from core import store
    from core.errors import ConfigError
    from core.seqrec import DataConfig, load_dataset
    from distillation.profiles import main, parse_args

    data, folder = load_dataset(DataConfig(dataset="synthetic-a", data_root=str(tmp_path / "data")))
    users = data.user_ids[:60]
    vectors = np.random.default_rng(0).normal(size=(len(users), 16)).astype(np.float32)
    store.save_embeddings(tmp_path / "emb", "users", vectors, users)
    emb = tmp_path / "emb" / "users.npy"
    assert main(["--dataset", str(folder), "--embeddings", str(emb), "--dim", "6", "--out", str(tmp_path / "flags")]) == 0
    cfg = tmp_path / "profiles.yaml"
    cfg.write_text(f"dataset: {folder}\nembeddings: {emb}\ndim: 3\nout: {tmp_path / 'cfg'}\n")
    assert main(["--config", str(cfg), "--override", "dim=6"]) == 0
    flags = json.loads((tmp_path / "flags" / "profiles-6.json").read_text())
    assert flags and flags == json.loads((tmp_path / "cfg" / "profiles-6.json").read_text())
    # a flag wins over the file; a missing dataset and an unknown key are one clear error each
    assert parse_args(["--config", str(cfg), "--dim", "2"]).dim == 2
    with pytest.raises(ConfigError, match="no dataset"):
        parse_args(["--dim", "2"])
    with pytest.raises(ConfigError, match="dims"):
        parse_args(["--dataset", "x", "--override", "dims=2"])
