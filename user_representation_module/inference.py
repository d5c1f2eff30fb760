"""TriGRec stage 1 export: specific and cross user vectors of a saved epoch.

    python -m user_representation_module.inference                                 # latest saved epoch
    python -m user_representation_module.inference --override "EPOCH_TO_LOAD=80,SPE_DOMAIN=B"

Reads ``state_dict/rep/<domain>/{spe_<D>,cross}_ep{E}.pt`` and writes, under
``state_dict/embeddings/user_representation_module/<domain>/`` (or ``export.out_dir``):

- ``spe_emb_ep{E}_{D}.npy`` + ``.ids.json``: user D's specific vectors (rows follow the ids);
- ``cross_emb_ep{E}_{D}.npy`` + ``.ids.json``: cross-domain vectors;
- the same as ``.pkl`` (a plain ``dict`` user id -> list of floats, for the seed's readers);
- with ``data.c2dsr_dir`` set: ``<name>.c2dsr-valid`` / ``<name>.c2dsr-test`` vectors of the
  C2DSR evaluation lines, computed from their histories (inductive; ids = line numbers);
- with ``export.holdout_last=m`` (m > 0): ``<name>.holdout{m}.npy`` + ``.ids.json`` of every
  user, encoded from the views cut before the last m target items of the stage-2 training part
  (``data.holdout_views``): the training-time vectors of ``model.vector_holdout=m``.

    python -m user_representation_module.inference --override "export.holdout_last=1"
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from core import store
from core.cli import parse_config, resolve_device, run
from core.data.domains import domain_folder_name, load_views, user_vectors_dir
from core.data.sequences import SequenceData
from core.errors import CheckpointError
from core.models import build_model
from user_representation_module.config import RepConfig, rep_dir, saved_epochs
from user_representation_module.data import encode_users, holdout_views

DEFAULT_CONFIG = "configs/trigrec/rep/synthetic.yaml"


def load_encoder(folder: Path, part: str, epoch: int, device, fingerprint: str | None = None):
    """A saved stage-1 encoder; a missing epoch names the epochs that exist."""
    path = folder / f"{part}_ep{epoch}.pt"
    if not path.is_file():
        have = saved_epochs(folder, part)
        raise CheckpointError(f"{path}: no checkpoint for EPOCH_TO_LOAD={epoch}; saved epochs of {part}: "
                              f"{have or 'none (train first: python -m user_representation_module.train)'}")
    ckpt = store.load_checkpoint(path, kind="bert4rec", data_fingerprint=fingerprint, map_location=device)
    model = build_model("bert4rec", **ckpt["model_args"]).to(device)
    model.load_state_dict(ckpt["model_state"])
    return model.eval()


def write_vectors(directory: Path, name: str, vectors: np.ndarray, ids: list) -> Path:
    path = store.save_embeddings(directory, name, vectors, ids)
    # the seed's readers unpickle a dict; plain containers only (no numpy objects inside)
    table = {uid: row.tolist() for uid, row in zip(ids, vectors.astype(np.float64))}
    store.atomic_write_bytes(directory / f"{name}.pkl", pickle.dumps(table, protocol=4))
    return path


def export(cfg: RepConfig, log=print) -> dict:
    device = resolve_device(cfg.device)
    views, folder = load_views(cfg.data)
    domain = domain_folder_name(folder, views.domain_names, cfg.data.target)
    src = rep_dir(cfg, domain)
    epochs = saved_epochs(src, "cross")
    if not epochs:
        raise CheckpointError(f"{src}: no saved stage-1 epochs; run python -m user_representation_module.train first")
    epoch = cfg.export.epoch or epochs[-1]
    spe_domain = cfg.export.spe_domain or cfg.data.target
    fingerprint = views.cross.fingerprint()
    spe = load_encoder(src, f"spe_{spe_domain}", epoch, device, fingerprint)
    cross = load_encoder(src, "cross", epoch, device, fingerprint)
    maxlen = cross.maxlen
    out = Path(cfg.export.out_dir) if cfg.export.out_dir else user_vectors_dir(cfg.home, domain, cfg.run_name)
    ids = list(views.cross.user_ids)
    bs = cfg.export.batch_size
    spe_name, cross_name = f"spe_emb_ep{epoch}_{spe_domain}", f"cross_emb_ep{epoch}_{spe_domain}"
    written = [write_vectors(out, spe_name, encode_users(spe, views.view(spe_domain), maxlen, device, bs), ids),
               write_vectors(out, cross_name, encode_users(cross, views.cross, maxlen, device, bs), ids)]
    if cfg.data.c2dsr_dir:
        from core.data.c2dsr import read_c2dsr_eval

        for which in ("valid", "test"):
            ev = read_c2dsr_eval(cfg.data.c2dsr_dir, which)
            d = "AB".index(spe_domain)
            own = [h[ev.item_domain(h) == d] for h in ev.histories]  # the pair's own A size
            common = dict(n_items=views.n_items, user_ids=ev.lines.tolist(), item_ids=views.cross.item_ids)
            line_ids = ev.lines.tolist()
            written.append(write_vectors(out, f"{spe_name}.c2dsr-{which}",
                                         encode_users(spe, SequenceData.from_lists(own, **common), maxlen, device, bs),
                                         line_ids))
            written.append(write_vectors(out, f"{cross_name}.c2dsr-{which}",
                                         encode_users(cross, SequenceData.from_lists(ev.histories, **common), maxlen,
                                                      device, bs), line_ids))
    m = cfg.export.holdout_last
    if m:
        cut = holdout_views(views, m)
        for name, enc, data in ((spe_name, spe, cut[spe_domain]), (cross_name, cross, cut["cross"])):
            written.append(store.save_embeddings(out, f"{name}.holdout{m}", encode_users(enc, data, maxlen, device, bs),
                                                 ids))
    for p in written:
        log(f"wrote {p}")
    return {"epoch": epoch, "spe_domain": spe_domain, "out_dir": str(out), "files": [str(p) for p in written],
            "holdout_last": m}


def main(argv=None) -> int:
    cfg, _ = parse_config(RepConfig, argv, __doc__, DEFAULT_CONFIG)
    res = export(cfg)
    print(f"exported epoch {res['epoch']} (specific: domain {res['spe_domain']}) -> {res['out_dir']}")
    return 0


if __name__ == "__main__":
    run(main)
