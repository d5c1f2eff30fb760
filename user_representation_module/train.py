"""TriGRec stage 1: train the specific / common / cross encoders on two domains.

    python -m user_representation_module.train                                   # synthetic default
    python -m user_representation_module.train --override "device=cuda:0,lr=0.0005,batch_size=64,num_epochs=50"
    python -m user_representation_module.train --config configs/trigrec/rep/food.yaml
    torchrun --nproc_per_node=2 -m user_representation_module.train --override device=cpu

Writes ``state_dict/rep/<domain>/`` (``<domain>/<run_name>/`` with ``run_name`` set):
``<part>_ep{E}.pt`` every ``save_every`` epochs for the parts spe_A, spe_B, common, cross (plain
BERT4Rec checkpoints sharing one head) and discriminator; ``last.pt`` (resume with
``--override training.resume=true``), ``best.pt``, ``metrics.jsonl``, ``config.yaml`` and ``results.json``. A folder holding another run is refused:
``--override run_name=<new>``, ``overwrite=true`` (replace it) or ``training.resume=true``.
"""
from __future__ import annotations

import torch

from core import store
from core.cli import parse_config, run
from core.config import to_dict
from core.data.domains import domain_folder_name, load_views
from core.data.splits import leave_one_out
from core.dist import cleanup, is_main
from core.evaluation import Evaluator
from core.runs import start_run
from core.seqrec import encoder_args
from core.train import fit, mean_epoch_seconds, prepare_out_dir
from user_representation_module.config import PARTS, RepConfig, rep_dir, saved_epochs
from user_representation_module.data import TriViewCloze
from user_representation_module.model import TriGRecLoss, TriGRecRep

DEFAULT_CONFIG = "configs/trigrec/rep/synthetic.yaml"


def domain_score_fn(encoder, views, code: str):
    """Full-catalog scores of ``encoder`` with the other domain's items ranked last."""
    other = torch.as_tensor(views.item_domain != "AB".index(code))

    def score(inputs, users):
        s = encoder.full_scores(inputs)
        return s.masked_fill(other.to(s.device), float("-inf"))
    return score


def train_representations(cfg: RepConfig, log=print) -> dict:
    ctx = start_run(cfg.device, cfg.seed, log=log)
    device, log = ctx.device, ctx.log
    views, folder = load_views(cfg.data)
    domain = domain_folder_name(folder, views.domain_names, cfg.data.target)
    out = rep_dir(cfg, domain)
    # the folder is this run's until results.json is written (epoch snapshots included), or nothing is
    with store.claim_run_dir(out, to_dict(cfg), resume=cfg.training.resume, overwrite=cfg.overwrite,
                             ignore=("export",), log=log):  # export.*: the inference step's settings
        prepare_out_dir(out, cfg, cfg.training.resume)
        m = cfg.model
        model = TriGRecRep(views.n_items, disc_hidden=cfg.loss.disc_hidden, disc_lr_scale=cfg.loss.disc_lr_scale,
                           **encoder_args(m)).to(device)
        train_data = TriViewCloze(views, m.maxlen, m.mask_prob, model.mask_token, device, m.last_mask_prob)
        log(f"data {folder.name} (target {cfg.data.target} = {views.target_name}): {len(train_data)} users, "
            f"{views.n_items} items in both domains; views A {views.a.n_interactions}, B {views.b.n_interactions}, "
            f"cross {views.cross.n_interactions} interactions -> {out}")
        # stage-1 validation: the target's specific encoder predicting the target's held-out
        # validation item (full ranking over the target domain); the test item is never read here
        split = leave_one_out(views.target_all)
        valid_eval = Evaluator(split, "valid", m.maxlen, cfg.eval.ks, sampled=(), sample_seed=cfg.eval.sample_seed,
                               batch_size=cfg.eval.batch_size, device=device, max_users=cfg.eval.valid_max_users,
                               repeat_targets=cfg.eval.repeat_targets)
        target_part = f"spe_{cfg.data.target}"
        config = to_dict(cfg)
        fingerprint = views.cross.fingerprint()

        def save_parts(epoch: int, model: TriGRecRep) -> None:
            if not is_main() or (epoch % cfg.save_every and epoch != cfg.training.epochs):
                return
            for part, module in [*((p, model.encoders[p]) for p in PARTS), ("discriminator", model.discriminator)]:
                store.save_checkpoint(out / f"{part}_ep{epoch}.pt", kind=module.kind, model_state=module.state_dict(),
                                      model_args=module.model_args, config=config, data_fingerprint=fingerprint,
                                      epoch=epoch, part=part, domain=domain)

        lc = cfg.loss
        loss_fn = TriGRecLoss(w_spe=lc.w_spe, w_com=lc.w_com, w_cross=lc.w_cross, adv_weight=lc.adv_weight,
                              grl_lambda=lc.grl_lambda, use_grl=lc.use_grl, grl_ramp=lc.grl_ramp, epochs=cfg.training.epochs)
        meta = {"kind": model.kind, "model_args": model.model_args, "config": config, "data_fingerprint": fingerprint}
        result = fit(model, train_data, lambda mod: valid_eval.run(domain_score_fn(mod.encoders[target_part], views,
                                                                                   cfg.data.target)),
                     cfg.training, out, device=device, seed=cfg.seed, checkpoint_meta=meta, log=log,
                     loss_fn=loss_fn, on_epoch_end=save_parts)
        saved = saved_epochs(out, "cross")
        results = {"domain": domain, "target": cfg.data.target, "rep_dir": str(out), "epochs_run": result.epochs_run,
                   "train_seconds": round(result.seconds, 2), "threads": result.threads,
                   "sec_per_epoch": mean_epoch_seconds(out),
                   "best_epoch": result.best_epoch, "valid": result.best_valid, "saved_epochs": saved,
                   "users": len(train_data)}
        if is_main():
            from core.provenance import run_record

            results["run"] = run_record(cfg, device=device, threads=result.threads, started=result.started,
                                        data_paths=[folder], data_fingerprint=fingerprint)
            store.atomic_write_json(out / "results.json", results)
    return results


def main(argv=None) -> int:
    cfg, args = parse_config(RepConfig, argv, __doc__, DEFAULT_CONFIG)
    res = train_representations(cfg)
    main_rank = is_main()
    cleanup()
    if main_rank:
        print(f"saved epochs {res['saved_epochs']} -> {res['rep_dir']}; "
              f"{res['sec_per_epoch']:.1f}s per epoch; next: python -m user_representation_module.inference"
              + (f" --config {args.config}" if args.config and args.config != DEFAULT_CONFIG else ""))
    return 0


if __name__ == "__main__":
    run(main)
