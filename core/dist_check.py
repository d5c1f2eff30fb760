"""Check a torchrun set-up end to end: the shared trainer on every rank, data shards, parameter sync.

    # one machine, 2 processes (gloo on CPU, NCCL on GPUs)
    torchrun --nnodes=1 --nproc_per_node=2 --rdzv_backend=c10d --rdzv_endpoint=localhost:29500 \\
        -m core.dist_check --out /tmp/dist_check
    # a cluster: the same line on every node, N nodes x M processes, one shared endpoint
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=node0:29500 \\
        --rdzv_id=check1 -m core.dist_check --out /shared/dist_check

Each rank trains a small SASRec with ``core.train.fit`` (the loop every trainer uses: DDP,
``DistributedSampler``) on the generated default data, records the training rows it was
given and a checksum of its final parameters, and writes ``rank<R>.json`` under ``--out``
(on its own node). Rank 0 gathers all ranks' records and prints ``ok`` when the shards are
disjoint, cover the data, and the parameters after every epoch are identical everywhere; otherwise it exits 1.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from core.store import atomic_write_json


class _Recording:
    """A training dataset that remembers which rows this rank was given."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seen: dict[int, list[int]] = {}  # epoch -> rows (the sampler reshuffles every epoch)
        self.epoch = 0
        self.lengths = inner.lengths

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:  # called by core.train.fit before each epoch
        self.epoch = epoch

    def get_batch(self, index: torch.Tensor, generator=None) -> dict:
        self.seen.setdefault(self.epoch, []).extend(int(i) for i in index.cpu())
        return self.inner.get_batch(index, generator)


def param_checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for rank<R>.json (and the run's files)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--users", type=int, default=200, help="users of the generated dataset")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch.distributed as dist

    from core.cli import resolve_device, seed_everything
    from core.data.batches import CausalDataset
    from core.data.splits import leave_one_out
    from core.data.synthetic import SyntheticSpec, generate
    from core.dist import barrier, init_distributed, is_main
    from core.models import SASRec
    from core.train import TrainConfig, fit

    device = resolve_device(args.device)
    rank, world, _ = init_distributed(device)
    seed_everything(0)  # every rank starts from the same weights; DDP also broadcasts rank 0's
    data = generate(SyntheticSpec(n_users=args.users, n_items_per_domain=60, n_clusters=4))[0]["A"]
    split = leave_one_out(data)
    model = SASRec(data.n_items, maxlen=10, hidden_units=16, num_blocks=1, num_heads=1, loss="sampled_softmax",
                   num_negatives=16).to(device)
    train = _Recording(CausalDataset(split, 10, device=device))
    out = Path(args.out)
    cfg = TrainConfig(epochs=args.epochs, batch_size=16, patience=0, save_checkpoints=False, length_buckets=False)
    # checksums after each epoch's DDP steps, before fit restores the best weights (which it
    # broadcasts from rank 0, so the final weights alone would prove nothing about DDP)
    epoch_params: list[str] = []
    # a run folder per rank: as on nodes without a shared file system
    with tempfile.TemporaryDirectory() as tmp:
        fit(model, train, lambda m: {"NDCG@10": 0.0}, cfg, Path(tmp) / f"run{rank}", device=device, seed=0,
            checkpoint_meta={"kind": "sasrec", "model_args": model.model_args, "config": {}}, log=lambda *a: None,
            on_epoch_end=lambda epoch, m: epoch_params.append(param_checksum(m)))
    record = {"rank": rank, "world": world, "backend": dist.get_backend() if dist.is_initialized() else "none",
              "rows": {str(e): sorted(r) for e, r in train.seen.items()}, "n_rows": len(train), "epochs": args.epochs,
              "epoch_params": epoch_params, "params": param_checksum(model)}
    atomic_write_json(out / f"rank{rank}.json", record, indent=None)
    records = [record]
    if world > 1:
        records = [None] * world
        dist.all_gather_object(records, record)
    barrier()
    if not is_main():
        return 0
    # per epoch: the shards are disjoint and cover every row; DistributedSampler pads the last
    # shard with rows from the start when len % world != 0, so exactly that many may repeat
    n = records[0]["n_rows"]
    padding = (world - n % world) % world
    disjoint = covered = True
    for epoch in range(1, args.epochs + 1):
        shards = [r["rows"].get(str(epoch), []) for r in records]
        flat = [i for shard in shards for i in shard]
        disjoint &= len(flat) - len(set(flat)) == padding
        covered &= set(flat) == set(range(n))
    same = len({tuple(r["epoch_params"]) for r in records}) == 1 and len({r["params"] for r in records}) == 1
    moved = len(set(records[0]["epoch_params"])) == args.epochs  # training did change the weights
    summary = {"world": world, "backend": record["backend"], "epochs": args.epochs, "rows": n, "padding": padding,
               "disjoint": disjoint, "covered": covered, "identical_params": same, "params_changed": moved,
               "rows_per_rank_epoch1": [len(r["rows"].get("1", [])) for r in records],
               "params": records[0]["params"]}
    atomic_write_json(out / "summary.json", summary)
    print(json.dumps(summary))
    ok = disjoint and covered and same and moved
    print("ok" if ok else "FAILED: ranks overlap, miss rows or diverged", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    from core.cli import run

    run(main)
