"""Every command in README.md runs, as written, in a fresh copy of the repository.

The README's shell blocks are read at collection time, so a command added to the README
without an entry in ``PLAN`` fails ``test_every_readme_command_has_a_plan``. Each README section
is one test: its commands run in order (later lines read what earlier lines wrote) in a copy of
the tracked files beside a link to ``../shared`` (no ``data/`` and no ``state_dict/``: a fresh
clone). A command runs exactly as printed in the README, plus at most one appended ``--override``
(or ``--trials``) that shortens training: the command's own flags, config files, keys and paths
are what is tested. Commands that need hardware this machine lacks (GPUs, several nodes, the
network) or hours of CPU are listed with the reason and the test that covers their code path.
Commands on real data (``REAL``) are marked ``slow`` and skip without ``../shared/data``.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.store import REPO_ROOT

README = REPO_ROOT / "README.md"
SHORT = "training.epochs=1,training.max_steps_per_epoch=2"


def readme_commands(text: str) -> list[tuple[str, str]]:
    """(section heading, command) for every command line of the README's ``bash`` blocks;
    continuation lines are joined and comments dropped."""
    out, section, block, pending = [], "", False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block:
            if line.startswith("## "):
                section = line[3:].strip()
            continue
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        # the README's optional parts, written "[--flag value]", are left out
        tokens = shlex.split(re.sub(r"\s\[--[^\]]*\]", "", pending), comments=True)
        out.append((section, shlex.join(tokens)))
        pending = ""
    return out


def _skip(reason: str) -> dict:
    return {"skip": reason}


def _run(extra: list[str] | None = None, shared: bool = False, cuda: bool = False) -> dict:
    return {"extra": extra or [], "shared": shared, "cuda": cuda}


_SHORT = ["--override", SHORT]
# regex over the joined command -> how it is tested. First match wins.
PLAN: list[tuple[str, dict]] = [
    (r"^make (demo|test)$", _skip("make demo is tests/test_demo.py; make test is this suite")),
    (r"pip install|python3 -m venv", _skip("installs packages (network); .ci/run does this on every push")),
    (r"^torchrun --nnodes=2|--nproc_per_node=8", _skip("needs several GPUs or nodes; the same code path runs under "
                                                      "torchrun on 2 CPU processes in tests/test_ddp.py")),
    (r"device=cuda", _run(_SHORT, cuda=True)),
    (r"synthetic-large --interactions 10000000", _skip("writes 10M interactions (minutes, GBs); tests/test_scale.py "
                                                       "runs the same preparer at 100k")),
    (r"data\.dataset=data/synthetic-10m", _skip("trains on the 10M-interaction file above (skipped)")),
    (r"amazon-2023 --path .?<folder>", _skip("needs the user's own Amazon Reviews 2023 download; tests/test_cross_domain.py "
                                           "prepares generated files of that layout")),
    (r"<file>\.npy", _skip("placeholder paths; stage 2 reading explicit vector files is tests/test_trigrec.py")),
    (r"--data INPUT\.json", _run(shared=True)),  # INPUT.json is created by the test, see _prepare_inputs
    (r"core\.data\.prepare (seq-lines|movielens|food-kitchen|universal-movielens)", _run(shared=True)),
    (r"persona_training\.\S+ --dataset amazon", _run(shared=True)),
    (r"persona_training\.train_encoder", _run(["--override", "max_steps=2"])),
    (r"^torchrun", _run(_SHORT)),
    (r"persona_training\.", _run()),
    (r"core\.tune .*--trials 30", _run(["--trials", "1", "--override", SHORT], shared=True)),
    (r"core\.tune", _run(["--override", SHORT])),
    (r"cross_domain (recommend|rl-demo|eval-compare)", _run()),
    # the next line's inference loads epoch 20, so the synthetic default trains 20 one-step epochs
    (r"^python -m user_representation_module\.train$", _run(["--override", "training.epochs=20,training.max_steps_per_epoch=1"])),
    (r"universal\.inference|distillation\.evaluation|user_representation_module\.inference", _run()),
    (r"distillation\.profiles", _run(shared=True)),
    (r"^python -m (distillation\.training|cross_domain|universal\.train|user_representation_module\.train|"
     r"recommendation_model\.(train_eval|merged)|core\.demo)", _run(_SHORT)),
]


def plan_for(command: str) -> dict | None:
    for pattern, how in PLAN:
        if re.search(pattern, command):
            return how
    return None


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))
SECTIONS = list(dict.fromkeys(s for s, _ in COMMANDS))


def test_every_readme_command_has_a_plan():
    missing = [c for _, c in COMMANDS if plan_for(c) is None]
    assert not missing, f"README commands without a test plan in tests/test_readme.py: {missing}"
    assert len(COMMANDS) > 40  # the parser found the README's blocks


def test_parser_joins_continuations_and_drops_comments():
    text = ("## S\n```bash\n# note\npython -m a --x 1 \\\n    --y \"b c\" --z \"k=[1,2]\" [--opt v]  # why\n```\n"
            "```\nnot bash\n```\n")
    assert readme_commands(text) == [("S", "python -m a --x 1 --y 'b c' --z 'k=[1,2]'")]


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    """The tracked (and untracked, not ignored) files in ``<tmp>/main`` beside ``<tmp>/shared``."""
    root = tmp_path_factory.mktemp("readme")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO_ROOT / rel
        if src.is_file():
            dst = root / "main" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    shared = REPO_ROOT.parent / "shared"
    if shared.is_dir():
        (root / "shared").symlink_to(shared)
    return root / "main"


def _prepare_inputs(repo: Path) -> None:
    """The README's universal inference line reads the user's ``INPUT.json``: a few users of the
    data that trained the model."""
    import json
    data = json.loads((REPO_ROOT.parent / "shared/data/universal/correlated_dataset.json").read_text())
    users = {r["user_id"] for r in data["interactions"][:50]}
    keep = [r for r in data["interactions"] if r["user_id"] in users]
    (repo / "INPUT.json").write_text(json.dumps({
        "user_data": [u for u in data["user_data"] if u["user_id"] in users],
        "item_data": data["item_data"], "interactions": keep}))


def _argv(command: str, extra: list[str]) -> list[str]:
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    return argv + extra


# a command on real data (it reads ../shared/data, or what such a command prepared); these run
# under the ``slow`` marker (``make test-slow``): together about 10 minutes on 2 CPU cores
REAL = re.compile(r"\.\./shared|/beauty|ml-100k|food|--dataset amazon|tune/beauty|correlated")


def _groups() -> list:
    out = []
    for section in SECTIONS:
        commands = [(c, plan_for(c)) for s, c in COMMANDS if s == section]
        runnable = [(c, p) for c, p in commands if p and "skip" not in p]
        for real in (False, True):
            group = [(c, p) for c, p in runnable if bool(REAL.search(c)) == real]
            if group:
                marks = [pytest.mark.slow] if real else []
                out.append(pytest.param(group, real, id=f"{section}-{'real' if real else 'generated'}", marks=marks))
    return out


@pytest.mark.parametrize("group,real", _groups())
def test_readme_section_runs_as_written(group, real, fresh_copy):
    if real and not (REPO_ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("needs ../shared/data")
    import torch
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(fresh_copy)}
    env.pop("RECSYS_HOME", None)
    for command, how in group:
        if how["cuda"] and not torch.cuda.is_available():
            continue
        if "INPUT.json" in command:
            _prepare_inputs(fresh_copy)
        argv = _argv(command, how["extra"])
        proc = subprocess.run(argv, cwd=fresh_copy, env=env, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"README command failed ({proc.returncode}): {command}\n{proc.stderr[-3000:]}"
