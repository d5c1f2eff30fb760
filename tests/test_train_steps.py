"""core.train.fit in step mode (``training.max_steps > 0``), the loop persona_training and the
benchmarks use: exactly max_steps optimizer steps across epoch boundaries, metrics lines every
log_every_steps, validation every eval_every_steps (best.pt by step, patience), last.pt
mid-epoch every save_every_steps and an exact resume from it, the time budget, and the plain
mode (no validation, no files). A hand-written loop pins what a step is."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from core.store import load_checkpoint
from core.train import TrainConfig, fit

QUIET = lambda *a, **k: None  # noqa: E731
META = {"kind": "toy", "model_args": {}, "config": {}}


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(4, 1)
        self.frozen = nn.Linear(4, 1)
        self.frozen.requires_grad_(False)

    def training_loss(self, batch, generator=None):
        return ((self.w(batch["x"]).squeeze(-1) + 0 * self.frozen(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()


class _Rows:
    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    def __len__(self) -> int:
        return len(self.x)

    def get_batch(self, index, generator=None):
        return {"x": self.x[index], "y": self.y[index]}


class _OwnOrder(_Rows):
    """Rows that choose their own batches (as persona_training's pairs do): one seeded
    permutation per epoch, full batches only."""

    def epoch_batches(self, epoch, rank, world, batch_size):
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(100 + epoch))
        return [perm[b * batch_size:(b + 1) * batch_size] for b in range(len(self) // batch_size)]


def _model() -> _Toy:
    torch.manual_seed(0)
    return _Toy()


def _validate(m) -> dict:
    rows = _Rows()
    with torch.no_grad():
        return {"NDCG@10": float(-m.training_loss({"x": rows.x, "y": rows.y}))}


def _rows(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _fit(out, model=None, data=None, validate=_validate, **train):
    cfg = TrainConfig(**{"batch_size": 16, "patience": 0, "learning_rate": 0.05, **train})
    model = model or _model()
    res = fit(model, data or _Rows(), validate, cfg, out, device=torch.device("cpu"), seed=0, checkpoint_meta=META,
              log=QUIET, progress=False)
    return res, model


def test_max_steps_counts_steps_across_epochs_with_lines_and_validation_by_step(tmp_path):
    calls = []
    res, _ = _fit(tmp_path, validate=lambda m: calls.append(1) or _validate(m),
                  max_steps=10, log_every_steps=3, eval_every_steps=4)  # 4 steps per epoch
    rows = _rows(tmp_path)
    assert res.steps == 10 and res.epochs_run == 3 and res.stopped == "max_steps 10"
    assert [r["step"] for r in rows] == [3, 4, 6, 8, 9, 10]  # every 3rd, every 4th (validated), the last
    assert [r["epoch"] for r in rows] == [1, 1, 2, 2, 3, 3]
    assert [r["step"] for r in rows if "valid" in r] == [4, 8, 10] and len(calls) == 3
    assert all(r["rows_per_s"] > 0 and math.isfinite(r["loss"]) for r in rows)
    assert res.last_loss == pytest.approx(rows[-1]["loss"], abs=1e-6) and math.isfinite(res.first_loss)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == res.best_epoch and res.best_epoch in (4, 8, 10)
    assert not (tmp_path / "last.pt").exists()  # save_every_steps=0: no last.pt


def test_step_mode_is_a_plain_loop(tmp_path):
    """The same steps as a hand-written loop over the data's own batches, the optimizer given,
    clipping and warmup: equal weights, bit for bit (the loss curve persona_training had)."""
    data = _OwnOrder()
    model = _model()
    res = fit(model, data, None, TrainConfig(batch_size=16, learning_rate=0.05, warmup_steps=3, grad_clip=0.5,
                                             max_steps=7), None, device=torch.device("cpu"), seed=0,
              checkpoint_meta=META, log=QUIET, progress=False, trained_only=True,
              make_optimizer=lambda m: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.05))
    ref = _model()
    params = [p for p in ref.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    losses, step, epoch = [], 0, 0
    while step < 7:
        for index in data.epoch_batches(epoch, 0, 1, 16):
            if step == 7:
                break
            loss = ref.training_loss(data.get_batch(index))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
        epoch += 1
    assert res.steps == 7 and res.first_loss == losses[0] and res.last_loss == pytest.approx(sum(losses) / 7, rel=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    assert res.best_epoch == -1 and res.best_valid == {}  # no validation: the last weights stay


def test_no_out_dir_writes_nothing_and_on_step_sees_every_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    cfg = TrainConfig(batch_size=16, learning_rate=0.05, max_steps=5, save_every_steps=2, log_every_steps=1)
    fit(_model(), _Rows(), None, cfg, None, device=torch.device("cpu"), seed=0, checkpoint_meta=META, log=QUIET,
        on_step=lambda step, loss: seen.append(step), progress=False)
    assert seen == [1, 2, 3, 4, 5] and not list(tmp_path.iterdir())


class _Crash(Exception):
    pass


def test_resume_mid_epoch_from_last_pt_equals_an_uninterrupted_run(tmp_path):
    common = dict(max_steps=11, log_every_steps=2, eval_every_steps=5, save_every_steps=3)
    full, full_model = _fit(tmp_path / "full", **common)

    def crash(step, loss):
        if step == 8:  # last.pt holds step 6: batch 2 of epoch 2
            raise _Crash

    cut = tmp_path / "cut"
    cfg = TrainConfig(batch_size=16, patience=0, learning_rate=0.05, **common)
    with pytest.raises(_Crash):
        fit(_model(), _Rows(), _validate, cfg, cut, device=torch.device("cpu"), seed=0, checkpoint_meta=META,
            log=QUIET, on_step=crash, progress=False)
    loop = load_checkpoint(cut / "last.pt")["loop"]
    assert (loop["step"], loop["epoch"], loop["batch"]) == (6, 1, 2)
    lines = []
    res = fit(_model(), _Rows(), _validate, TrainConfig(**{**cfg.__dict__, "resume": True}), cut,
              device=torch.device("cpu"), seed=0, checkpoint_meta=META, log=lines.append, progress=False)
    assert any(x.startswith(f"resumed from {cut / 'last.pt'} at step 6") for x in lines), lines
    a, b = _rows(tmp_path / "full"), _rows(cut)
    assert [r["step"] for r in b] == [r["step"] for r in a] == [2, 4, 5, 6, 8, 10, 11]  # step 8 once
    for ra, rb in zip(a, b):
        assert ra["loss"] == rb["loss"] and ra.get("valid") == rb.get("valid")
    assert (res.steps, res.best_epoch, res.best_metric, res.first_loss) == (full.steps, full.best_epoch,
                                                                           full.best_metric, full.first_loss)
    assert all(torch.equal(x, y) for x, y in zip(full_model.state_dict().values(), _final(cut).values()))


def _final(out):
    return load_checkpoint(out / "best.pt")["model_state"]


def test_trained_only_checkpoints_hold_the_trained_parameters(tmp_path):
    _fit(tmp_path, max_steps=5, save_every_steps=2)
    full = load_checkpoint(tmp_path / "last.pt")["model_state"]
    assert set(full) == {"w.weight", "w.bias", "frozen.weight", "frozen.bias"}
    cfg = TrainConfig(batch_size=16, learning_rate=0.05, max_steps=5, save_every_steps=2)
    fit(_model(), _Rows(), None, cfg, tmp_path / "t", device=torch.device("cpu"), seed=0, checkpoint_meta=META,
        log=QUIET, trained_only=True, progress=False)
    assert set(load_checkpoint(tmp_path / "t" / "last.pt")["model_state"]) == {"w.weight", "w.bias"}


def test_step_mode_time_budget_and_patience(tmp_path):
    res, _ = _fit(tmp_path / "budget", max_steps=50, eval_every_steps=20, time_budget_s=1e-9)
    rows = _rows(tmp_path / "budget")
    assert res.steps == 1 and res.stopped.startswith("time budget") and "valid" in rows[-1]
    assert (tmp_path / "budget" / "best.pt").is_file()  # the step it stopped on was validated

    flat = iter([{"NDCG@10": 1.0}] + [{"NDCG@10": 0.5}] * 10)
    res, _ = _fit(tmp_path / "patience", validate=lambda m: next(flat), max_steps=50, eval_every_steps=2, patience=2)
    assert res.steps == 6 and res.best_epoch == 2 and res.stopped.startswith("early stop")


def test_step_keys_are_checked():
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="max_steps, log_every_steps"):
        TrainConfig(save_every_steps=-1)


@pytest.mark.parametrize("native", [False, True, None])
def test_cpu_bf16_warns_once_where_the_cpu_has_no_bf16_instructions(native, monkeypatch):
    """Emulated bf16 autocast ran a Beauty SASRec step ~10x slower than fp32 on an AVX2 CPU: a run that
    asks for it there is told, in one line naming the key; with the instructions (or unknown flags) it is not."""
    import core.train

    monkeypatch.setattr(core.train, "cpu_has_native_bf16", lambda: native)
    lines: list[str] = []
    cfg = TrainConfig(batch_size=16, learning_rate=0.05, max_steps=2, cpu_bf16=True)
    fit(_model(), _Rows(), None, cfg, None, device=torch.device("cpu"), seed=0, checkpoint_meta=META,
        log=lines.append, progress=False)
    warned = [x for x in lines if x.startswith("warning: training.cpu_bf16")]
    assert len(warned) == (1 if native is False else 0)


def test_cpu_has_native_bf16_reads_the_cpu_flags(monkeypatch):
    import core.provenance

    for flags, expected in (("fpu avx2 avx512f", False), ("fpu avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True)):
        monkeypatch.setattr(core.provenance, "cpuinfo", lambda: f"processor\t: 0\nflags\t\t: {flags}\n")
        assert core.provenance.cpu_has_native_bf16() is expected
    monkeypatch.setattr(core.provenance, "cpuinfo", lambda: None)  # no /proc/cpuinfo: unknown, so no warning
    assert core.provenance.cpu_has_native_bf16() is None
