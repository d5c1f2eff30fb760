"""The distillation recipe on top of ``core.seqrec``: data (prepared folder or the seed's
processed files), the two-stage training data, and the distillation loss."""
from __future__ import annotations

from pathlib import Path

from core.data.processed import read_processed, training_split_from
from core.errors import ConfigError, DataError
from core.seqrec import build_train_data, load_dataset, train_and_evaluate
from distillation.config import DistillConfig
from distillation.method import DistillLoss, ProfileDistiller
from distillation.profiles import profile_tensors


def load_data(data_cfg):
    """The seed's processed files when ``valid_sequences``/``test_sequences`` are set, else a prepared folder."""
    given = [data_cfg.valid_sequences, data_cfg.test_sequences]
    if not any(given):
        return load_dataset(data_cfg)
    if not all(given) or not data_cfg.profile_train_sequences:
        raise ConfigError("the processed layout needs data.profile_train_sequences, valid_sequences and test_sequences")
    data = read_processed(data_cfg.profile_train_sequences, data_cfg.valid_sequences, data_cfg.test_sequences,
                          data_cfg.mappings, data_cfg.counts)
    return data, Path(data_cfg.profile_train_sequences).resolve().parent.parent  # <dataset>/processed/x -> <dataset>


class StagedTrainData:
    """Training rows of the distillation stage, then (from ``switch_epoch``) the fine-tune rows."""

    def __init__(self, first, second, switch_epoch: int) -> None:
        self.first, self.second, self.switch_epoch = first, second, switch_epoch
        self.current = first

    def set_epoch(self, epoch: int) -> None:
        self.current = self.second if self.switch_epoch and epoch >= self.switch_epoch else self.first

    def __len__(self) -> int:
        return len(self.current)

    @property
    def lengths(self):
        return self.current.lengths

    def get_batch(self, index, generator=None):
        return self.current.get_batch(index, generator)


def make_train(cfg: DistillConfig, model, data, split, device):
    if cfg.model.item_num and cfg.model.item_num != data.n_items:
        raise DataError(f"model.item_num is {cfg.model.item_num} but the data has {data.n_items} items; set it to 0")
    if cfg.model.user_num and cfg.model.user_num != data.n_users:
        raise DataError(f"model.user_num is {cfg.model.user_num} but the data has {data.n_users} users; set it to 0")
    train_data = build_train_data(cfg.model, split, model, device)
    d = cfg.data
    if d.finetune_train_sequences and d.finetune_train_sequences != d.profile_train_sequences and cfg.distill.fine_tune_epoch:
        ft_split = training_split_from(data, d.finetune_train_sequences)
        ft = build_train_data(cfg.model, ft_split, model, device)
        train_data = StagedTrainData(train_data, ft, cfg.distill.fine_tune_epoch)
    if not cfg.distill.enabled:
        return train_data, None, {"distill": False}
    dc = cfg.distill
    profiles, present = profile_tensors(
        dc.profiles, data, split.train_users, dc.missing_profiles, dc.multi_profile,
        shuffle_seed=dc.profile_seed if dc.shuffle_profiles else None)
    if not -cfg.model.num_blocks <= dc.layer < cfg.model.num_blocks:
        raise ConfigError(f"distill.layer {dc.layer} is outside the model's {cfg.model.num_blocks} blocks")
    direction = "down" if dc.use_down_scale else "up" if dc.use_upscale else "none"
    try:
        distiller = ProfileDistiller(cfg.model.hidden_units, profiles.shape[-1], dc.pooling, dc.gamma, direction,
                                     dc.loss, dc.multi_profile_aggr)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    loss = DistillLoss(distiller, profiles, present, alpha=dc.alpha, dynamic_scaling=dc.dynamic_scaling,
                       layer=dc.layer, fine_tune_epoch=dc.fine_tune_epoch).to(device)
    covered = int(present[split.train_users].any(1).sum())
    info = {"distill": True, "profile_dim": int(profiles.shape[-1]), "profiles_per_user": int(profiles.shape[1]),
            "train_users_with_profile": covered, "train_users": int(len(split.train_users))}
    return train_data, loss, info


def run_distillation(cfg: DistillConfig, log=print) -> dict:
    return train_and_evaluate(cfg, log, load_data=load_data, make_train=make_train)

