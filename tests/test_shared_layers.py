"""Shared pieces in core: ``core.store.aligned_vectors`` and ``core.models.layers``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import DataError
from core.models.layers import grad_reverse, masked_mean
from core.store import aligned_vectors

VECS = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float64)
IDS = ["u1", "u2", 3]  # ids compare as strings: 3 matches "3"


def test_strict_follows_wanted_order():
    out = aligned_vectors(VECS, IDS, ["3", "u1", "u2"], mode="strict", source="f.npy", what="spe")
    assert out.tolist() == [[5.0, 6.0], [1.0, 2.0], [3.0, 4.0]]
    assert out.dtype == np.float64  # strict keeps the file's dtype
    sub = aligned_vectors(VECS, IDS, ["u2"], mode="strict", source="f.npy", what="spe", exact=False)
    assert sub.tolist() == [[3.0, 4.0]]


def test_strict_missing_id_is_one_line_data_error_naming_the_source():
    with pytest.raises(DataError) as err:
        aligned_vectors(VECS, IDS, ["u1", "nobody"], mode="strict", source="dir/spe.npy", what="spe", exact=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("dir/spe.npy:") and "'nobody'" in msg and "1 missing" in msg
    with pytest.raises(DataError, match=r"^dir/spe.npy: spe vectors for 3 users but the data has 2; .*\(run me\)$"):
        aligned_vectors(VECS, IDS, ["u1", "u2"], mode="strict", source="dir/spe.npy", what="spe", hint="run me")


def test_strict_rejects_non_finite_rows_it_returns():
    bad = VECS.copy()
    bad[1, 0] = np.nan
    assert aligned_vectors(bad, IDS, ["u1"], source="f.npy", exact=False).tolist() == [[1.0, 2.0]]
    with pytest.raises(DataError, match="NaN"):
        aligned_vectors(bad, IDS, ["u2"], source="f.npy", exact=False)


def test_fill_gives_zero_rows_in_wanted_order():
    out = aligned_vectors(VECS, IDS, ["x", "3", "u1", "y"], mode="fill", source="s.npy")
    assert out.dtype == np.float32
    assert out.tolist() == [[0.0, 0.0], [5.0, 6.0], [1.0, 2.0], [0.0, 0.0]]  # no padding row is added


def test_fill_errors():
    with pytest.raises(DataError, match=r"^s.npy: none of its 3 user ids is a user of this dataset; .*\(cmd\)$"):
        aligned_vectors(VECS, IDS, ["x"], mode="fill", source="s.npy", hint="cmd")
    bad = VECS.copy()
    bad[2, 1] = np.inf  # fill checks the whole file, also rows it does not return
    with pytest.raises(DataError, match="^s.npy: source vectors contain NaN or infinite values$"):
        aligned_vectors(bad, IDS, ["u1"], mode="fill", source="s.npy")
    with pytest.raises(ValueError, match="mode"):
        aligned_vectors(VECS, IDS, ["u1"], mode="zero")


def test_grl_forward_identity_backward_negated_and_scaled():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.25)
    assert torch.equal(y, x.detach())
    (y * torch.tensor([1.0, 2.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [-0.25, -0.5, -1.0]
    z = torch.tensor([2.0], requires_grad=True)
    grad_reverse(z).sum().backward()  # default lambda 1
    assert z.grad.tolist() == [-1.0]


def test_masked_mean_ignores_padding():
    states = torch.tensor([[[9.0, 9.0], [1.0, 2.0], [3.0, 6.0]],    # first position is padding
                           [[2.0, 4.0], [4.0, 8.0], [6.0, 0.0]],    # all real
                           [[5.0, 5.0], [7.0, 7.0], [1.0, 1.0]]])   # all padding -> zeros
    real = torch.tensor([[False, True, True], [True, True, True], [False, False, False]])
    out = masked_mean(states, real)
    assert out.tolist() == [[2.0, 4.0], [4.0, 4.0], [0.0, 0.0]]


def test_recommendation_model_imports_only_core():
    """TriGRec stage 2 reads stage 1's output as files; it never imports the stage-1 package."""
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parent.parent / "recommendation_model"
    files = sorted(pkg.glob("*.py"))
    assert files
    bad = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{f.name}: {n}" for n in names if n.split(".")[0] == "user_representation_module"]
    assert not bad, bad
