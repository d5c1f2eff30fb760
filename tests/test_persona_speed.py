"""persona_training on a CPU (issue 21): the CPU-sized keys are obeyed (frozen layers keep their
weights, max_seq_length truncates what the encoder sees, max_history caps the history), the
shipped Amazon configs hold the CPU defaults with the full settings one file (or one
--override) away, and a run says how it is doing from its first step. No timing asserts."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from persona_training import encoder
from persona_training.config import TrainSection, TrainStage, load_stage

REPO = Path(__file__).resolve().parent.parent
AMAZON = REPO / "configs" / "persona_training" / "amazon"
LONG = " ".join(f"word{i}" for i in range(300))  # far more than 16 tokens
PAIRS = [([f"{LONG} history {i} a", f"short history {i}"], f"{LONG} persona {i}") for i in range(4)]
# the full (GPU) settings as README gives them as one --override
FULL_OVERRIDE = "batch_size=32,max_history=20,max_seq_length=0,train_layers=0,learning_rate=2e-5"


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _layer(name: str):
    m = re.search(r"\.layer\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def _cfg(**kw) -> TrainSection:
    base = dict(max_steps=2, batch_size=2, learning_rate=1e-3, device="cpu", log_every=1, seed=3)
    return TrainSection(**{**base, **kw})


def test_frozen_layers_keep_their_weights_and_the_top_layers_train():
    model = encoder.load_encoder()
    n_layers = 1 + max(_layer(n) for n, _p in model.named_parameters() if _layer(n) is not None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lines = []
    res = encoder.train_pairs(PAIRS, _cfg(train_layers=2), model=model, log=lines.append, show_progress=False)
    assert res.steps == 2
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    for name, p in model.named_parameters():
        layer = _layer(name)
        top = layer is not None and layer >= n_layers - 2
        if ".embeddings." in name or ".pooler." in name or (layer is not None and not top):
            assert not p.requires_grad and name not in changed, name
        elif top:
            assert p.requires_grad, name
    assert changed and all(_layer(n) is not None and _layer(n) >= n_layers - 2 for n in changed)
    # the run reports its pace after its first step and what it trains
    assert any(l.startswith("step 1/2 took") for l in lines), lines
    assert any("top 2 layer(s)" in l for l in lines), lines


def test_max_seq_length_truncates_what_training_encodes(monkeypatch):
    model = encoder.load_encoder()
    seen = []
    real = encoder._features

    def spy(m, texts, device):
        feats = real(m, texts, device)
        seen.append(tuple(feats["input_ids"].shape))
        return feats

    monkeypatch.setattr(encoder, "_features", spy)
    encoder.train_pairs(PAIRS, _cfg(max_steps=1, train_layers=1, max_seq_length=16), model=model,
                        log=lambda _s: None, show_progress=False)
    assert model.max_seq_length == 16
    assert seen and all(width == 16 for _n, width in seen)  # every batch holds a text longer than 16 tokens
    # 0 keeps the model's own limit (256 for MiniLM): the same texts come through longer
    seen.clear()
    fresh = encoder.load_encoder()
    encoder.train_pairs(PAIRS, _cfg(max_steps=1, train_layers=1), model=fresh, log=lambda _s: None, show_progress=False)
    assert fresh.max_seq_length == 256 and all(width > 16 for _n, width in seen)


def _amazon(train_cfg: Path, overrides: str = "") -> TrainSection:
    return load_stage(TrainStage, {"data": AMAZON / "data.yaml", "train": train_cfg}, overrides).train


def test_amazon_configs_cpu_defaults_and_full_settings_one_step_away():
    cpu = _amazon(AMAZON / "train.yaml")
    full = _amazon(AMAZON / "train_full.yaml")
    # CPU-sized: the top layers only, texts cut to 128 tokens, a shorter history, a smaller batch
    assert 0 < cpu.train_layers < 6 and 0 < cpu.max_seq_length <= 128
    assert cpu.max_history < full.max_history and cpu.batch_size < full.batch_size
    # the full settings: every layer, the model's own limit, 20 interactions, 32 pairs
    assert (full.train_layers, full.max_seq_length, full.max_history, full.batch_size) == (0, 0, 20, 32)
    # everything else is the same, and the README's --override reaches the same settings
    assert dataclasses.replace(cpu, **{k: getattr(full, k) for k in
                                       ("train_layers", "max_seq_length", "max_history", "batch_size",
                                        "learning_rate")}) == full
    assert _amazon(AMAZON / "train.yaml", FULL_OVERRIDE) == full


def test_max_history_caps_training_histories(tmp_path):
    from persona_training import synthetic
    from persona_training.schema import load_data
    from persona_training.texts import build_pairs

    files = synthetic.generate(tmp_path)
    data = load_data({k: files[k] for k in ("persona", "loo_history", "selected")}, "synthetic", with_selections=True)
    pairs, _stats = build_pairs(data, max_history=2)
    longest, _ = build_pairs(data, max_history=0)
    assert max(len(p[0]) for p in pairs) <= 2 < max(len(p[0]) for p in longest)
