"""``rl-demo``: policy-gradient (REINFORCE) fine-tuning of a trained target model.

Each event shows the user a slate: one item (the held-out item when simulating, the logged
item otherwise) and ``rl.candidates`` sampled items outside the user's history. The model's
softmax over the slate is the policy.

- Simulated (default): for every user with a validation item, the policy samples one item
  of the slate; picking the held-out item is a click (reward ``rl.click_reward`` = 0.3),
  anything else a skip (0). The test items are never used, so the test metrics before and
  after show whether the fine-tuning helped.
- Logged (``rl.events`` = a JSONL of ``{"user": ..., "item": ..., "click": true|false}``):
  the logged item is the action and its click gives the reward. Without logging
  propensities this is not an unbiased off-policy estimate: it pushes clicked items up and
  skipped ones down.

The loss is ``-(r - b) log pi(a) - entropy_coeff * H(pi)`` with ``b`` a moving average of
the reward. The loop is ``core.train.fit`` with one epoch per step (a pass over the events),
so its per-epoch line shows the step's average reward; the policy is saved to
``.../<run>/rl-<stage>/best.pt`` and the model it started from is left untouched.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import store
from core.cli import resolve_device, seed_everything
from core.config import to_dict
from core.data.batches import sample_train_negatives, trim_padding
from core.data.jsonl import iter_jsonl, require
from core.data.splits import padded_prefixes
from core.errors import DataError
from core.evaluation import Evaluator
from core.train import TrainConfig
from cross_domain.data import SourceInputs, TargetProtocol, cold_protocol, load_domains, with_bos
from cross_domain.evaluate import protocol_report, score_fn
from cross_domain.transfer import _fit, load_trained, stage_dir, stage_name


class EventRows:
    """One row per event: the user's history window (with the begin token), the slate's
    first item and the logged reward (-1 = simulate the user's answer)."""

    def __init__(self, inputs: torch.Tensor, users: np.ndarray, items: np.ndarray, rewards: np.ndarray, device) -> None:
        self.inputs = inputs.to(device)
        self.users = torch.as_tensor(users, dtype=torch.long, device=device)
        self.items = torch.as_tensor(items, dtype=torch.long, device=device)
        self.rewards = torch.as_tensor(rewards, dtype=torch.float32, device=device)
        self.lengths = (self.inputs > 0).sum(1)

    def __len__(self) -> int:
        return len(self.users)

    def get_batch(self, index: torch.Tensor, generator=None) -> dict:
        return {"input": trim_padding(self.inputs[index]), "users": self.users[index], "item": self.items[index],
                "reward": self.rewards[index]}


def simulated_events(proto: TargetProtocol, bos: int, width: int, max_users: int, seed: int, device) -> EventRows:
    ev, data = proto.valid.valid, proto.valid.data
    if max_users and len(ev) > max_users:
        ev = ev.subset(np.sort(np.random.default_rng(seed).choice(len(ev), max_users, replace=False)))
    inputs = with_bos(torch.as_tensor(padded_prefixes(data, ev.users, ev.hist_len, width)), bos)
    return EventRows(inputs, ev.users, ev.targets, np.full(len(ev), -1.0), device)


def logged_events(path: str, proto: TargetProtocol, user_ids: list, item_ids: list, click_reward: float, bos: int,
                  width: int, device) -> EventRows:
    """Events of a JSONL file; an unknown user or an item outside the target domain is an error."""
    user_index = {str(u): i + 1 for i, u in enumerate(user_ids)}
    item_index = {str(r): i + 1 for i, r in enumerate(item_ids)}
    users, items, rewards = [], [], []
    for lineno, obj in iter_jsonl(path):
        u = require(obj, "user", (str, int), path, lineno)
        i = require(obj, "item", (str, int), path, lineno)
        click = require(obj, "click", bool, path, lineno)
        if str(u) not in user_index:
            raise DataError(f"{path}:{lineno}: user {u!r} is not in the data")
        if str(i) not in item_index:
            raise DataError(f"{path}:{lineno}: item {i!r} is not an item of the target domain")
        users.append(user_index[str(u)])
        items.append(item_index[str(i)])
        rewards.append(click_reward if click else 0.0)
    users = np.asarray(users)
    train = proto.train  # what the model knew about the user
    inputs = with_bos(torch.as_tensor(padded_prefixes(train, users, train.lengths[users - 1], width)), bos)
    return EventRows(inputs, users, np.asarray(items), np.asarray(rewards), device)


class PolicyGradient(nn.Module):
    def __init__(self, side: SourceInputs, rl) -> None:
        super().__init__()
        self.side, self.rl = side, rl
        self.register_buffer("baseline", torch.zeros(()))

    def forward(self, model, batch: dict, generator=None) -> dict:
        inputs, first = batch["input"], batch["item"]
        negs = sample_train_negatives(torch.cat([inputs, first.unsqueeze(1)], 1), model.n_items, (self.rl.candidates,),
                                      generator)
        slate = torch.cat([first.unsqueeze(1), negs], dim=1)
        logp = F.log_softmax(model.candidate_scores(inputs, slate, **self.side(batch["users"])).float()
                             / self.rl.temperature, dim=1)
        logged = batch["reward"] >= 0
        sampled = torch.multinomial(logp.exp().detach(), 1, generator=generator).squeeze(1)
        action = torch.where(logged, torch.zeros_like(sampled), sampled)
        # slate position 0 is the held-out item: picking it is a click
        reward = torch.where(logged, batch["reward"], self.rl.click_reward * (action == 0).float())
        advantage = reward - self.baseline
        with torch.no_grad():
            m = self.rl.baseline_momentum
            self.baseline.mul_(m).add_((1 - m) * reward.mean())
        entropy = -(logp.exp() * logp).sum(1)
        loss = -(advantage * logp.gather(1, action.unsqueeze(1)).squeeze(1) + self.rl.entropy_coeff * entropy).mean()
        return {"loss": loss, "reward": reward.mean().detach(), "clicks": (reward > 0).float().mean().detach()}


def rl_demo(cfg, log=print) -> dict:
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    rl = cfg.rl
    dom = load_domains(cfg.data)
    proto = cold_protocol(dom.target, cfg.cold.k, cfg.cold.fraction, cfg.cold.seed)
    kind = ("ptupcdr" if cfg.transfer.bridge == "ptupcdr" else "transfer") if rl.use_transfer else "baseline"
    model, side, path = load_trained(cfg, dom, kind, proto.train.fingerprint(), device)
    ckpt = store.load_checkpoint(path, kind=model.kind, map_location="cpu")
    width = model.maxlen - 1
    if rl.events:
        events = logged_events(rl.events, proto, dom.user_ids, dom.target.item_ids, rl.click_reward, model.bos, width,
                               device)
    else:
        events = simulated_events(proto, model.bos, width, rl.max_users, cfg.seed, device)
    before = protocol_report(model, proto, side, cfg, device)
    out = stage_dir(cfg, dom, kind).parent / store.check_name(f"rl-{stage_name(kind, dom)}", "run name")
    log(f"RL fine-tuning of {kind} ({path}) on {len(events)} {'logged' if rl.events else 'simulated'} events, "
        f"slates of 1 + {rl.candidates} items, {rl.steps} steps (one pass each) -> {out}")
    e = cfg.eval
    valid = Evaluator(proto.valid, "valid", width, e.ks, sampled=(), sample_seed=e.sample_seed, batch_size=e.batch_size,
                      device=device, max_users=e.valid_max_users, repeat_targets=e.repeat_targets)
    train_cfg = TrainConfig(epochs=rl.steps, batch_size=rl.batch_size, learning_rate=rl.learning_rate,
                            eval_every=rl.steps, patience=0, save_checkpoints=False, amp=cfg.training.amp,
                            grad_clip=cfg.training.grad_clip)
    meta = {k: ckpt[k] for k in ("data_fingerprint", "source_vectors", "source_fingerprint") if k in ckpt}
    run_cfg = replace(cfg, training=train_cfg)
    # the policy's folder is this run's; a policy run has no last.pt, so it cannot be resumed
    with store.claim_run_dir(out, to_dict(run_cfg), overwrite=cfg.overwrite, resumable=False, log=log):
        res = _fit(run_cfg, model, events, lambda m: valid.run(score_fn(m, side)), out, device,
                   log, {**meta, "stage": f"rl-{kind}"}, PolicyGradient(side, rl).to(device))
        after = protocol_report(model, proto, side, cfg, device)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        result = {**res, "model": kind, "started_from": str(path), "events": len(events),
                  "logged": bool(rl.events), "reward_per_step": [r["reward"] for r in rows],
                  "clicks_per_step": [r["clicks"] for r in rows], "before": before["metrics"],
                  "after": after["metrics"], "users": before["users"]}
        from core.provenance import run_record

        result["run"] = run_record(run_cfg, device=device, threads=res["threads"], started=result.pop("started"),
                                   data_paths=[dom.folder, *([rl.events] if rl.events else [])],
                                   data_fingerprint=proto.train.fingerprint())
        store.atomic_write_json(Path(out) / "results.json", result)
    return result
