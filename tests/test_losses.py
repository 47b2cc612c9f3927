"""Losses and class weights against hand computations written out in numpy (not the library's code)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hierclf.errors import HierclfError, UnknownNameError
from hierclf.nn.losses import AsymmetricLoss, CrossEntropyLoss, FocalLoss, build_loss, class_weights


def _batch(n: int = 16, c: int = 5, seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    target = torch.randint(0, c, (n,), generator=g)
    return logits, target


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --- class weights --------------------------------------------------------------------------------------


def test_inverse_weights_by_hand() -> None:
    w = class_weights([10, 30, 60], "inverse").numpy()
    raw = np.array([1 / 10, 1 / 30, 1 / 60])
    np.testing.assert_allclose(w, raw / raw.sum() * 3, rtol=1e-6)
    assert w.dtype == np.float32


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999, 0.9999])
def test_effective_weights_by_hand(beta: float) -> None:
    counts = np.array([5, 50, 500, 5000])
    raw = (1 - beta) / (1 - beta ** counts.astype(float))
    w = class_weights(counts, "effective", beta).numpy()
    np.testing.assert_allclose(w, raw / raw.sum() * 4, rtol=1e-5)


def test_effective_weights_limits() -> None:
    counts = [3, 30, 300]
    # beta -> 0: every class has effective number 1 -> uniform; beta -> 1: inverse frequency
    np.testing.assert_allclose(class_weights(counts, "effective", 1e-9).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        class_weights(counts, "effective", 1 - 1e-9).numpy(),
        class_weights(counts, "inverse").numpy(),
        rtol=1e-4,
    )


def test_none_scheme_is_ones() -> None:
    assert class_weights([1, 100, 7], "none").tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("scheme", ["inverse", "effective", "none"])
def test_empty_classes_get_zero_weight_and_a_warning(scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hierclf.nn.losses"):
        w = class_weights([10, 0, 30, 0], scheme)
    assert torch.isfinite(w).all()
    assert w[1] == 0 and w[3] == 0
    # normalised over the two non-empty classes only, exactly as without the empty ones
    np.testing.assert_allclose(w[[0, 2]].numpy(), class_weights([10, 30], scheme).numpy(), rtol=1e-6)
    assert "2 of 4 classes have no images" in caplog.text


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=30).filter(any),
    st.sampled_from(["inverse", "effective"]),
    st.sampled_from([0.9, 0.99, 0.999, 0.9999]),
)
def test_weight_properties(counts: list[int], scheme: str, beta: float) -> None:
    w = class_weights(counts, scheme, beta).numpy().astype(np.float64)
    n = np.array(counts)
    assert np.isfinite(w).all() and (w >= 0).all()
    assert w.sum() == pytest.approx((n > 0).sum(), rel=1e-5)
    assert (w[n == 0] == 0).all() and (w[n > 0] > 0).all()
    # more images -> no larger weight
    order = np.argsort(n[n > 0], kind="stable")
    assert (np.diff(w[n > 0][order]) <= 1e-6 * w.max()).all()


@pytest.mark.parametrize(
    "counts, match",
    [
        ([0, 0], "every one of the 2 classes has zero images"),
        ([3, -1], "class 1 has count -1"),
        ([3, float("nan")], "finite"),
        ([], "non-empty 1-D"),
        ([[1, 2]], "1-D"),
    ],
)
def test_bad_counts(counts: list, match: str) -> None:
    with pytest.raises(HierclfError, match=match):
        class_weights(counts)


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5, 1.5])
def test_bad_beta(beta: float) -> None:
    with pytest.raises(HierclfError, match="beta must be a number strictly between 0 and 1"):
        class_weights([1, 2], "effective", beta)


def test_unknown_scheme() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'inverse'"):
        class_weights([1, 2], "invers")


# --- cross-entropy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_ce_by_hand(eps: float) -> None:
    logits, target = _batch()
    c = logits.shape[1]
    logp = _np_log_softmax(logits.numpy())
    q = (1 - eps) * np.eye(c)[target.numpy()] + eps / c
    expected = -(q * logp).sum(axis=1)
    loss = build_loss("ce", label_smoothing=eps)
    np.testing.assert_allclose(loss(logits, target).item(), expected.mean(), rtol=1e-5)
    torch.testing.assert_close(
        loss(logits, target), F.cross_entropy(logits.float(), target, label_smoothing=eps)
    )


@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("scheme", ["inverse", "effective"])
def test_weighted_ce_by_hand(eps: float, scheme: str) -> None:
    logits, target = _batch(n=32, c=4, seed=1)
    counts = np.array([400, 40, 4, 0])
    target = target % 3  # the empty class never occurs as a target
    if scheme == "inverse":
        raw = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    else:
        n = counts[:3].astype(float)
        raw = np.append((1 - 0.99) / (1 - 0.99**n), 0.0)
    w = raw / raw.sum() * 3
    logp = _np_log_softmax(logits.numpy())
    t = target.numpy()
    per_sample = (1 - eps) * w[t] * -logp[np.arange(len(t)), t] + eps / 4 * (w * -logp).sum(axis=1)
    loss = build_loss("weighted_ce", counts, weights=scheme, beta=0.99, label_smoothing=eps)
    np.testing.assert_allclose(loss(logits, target).item(), per_sample.sum() / w[t].sum(), rtol=1e-5)
    none = build_loss("weighted_ce", counts, weights=scheme, beta=0.99, label_smoothing=eps, reduction="none")
    np.testing.assert_allclose(none(logits, target).numpy(), per_sample, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        loss(logits, target),
        F.cross_entropy(
            logits.float(), target, weight=torch.as_tensor(w, dtype=torch.float32), label_smoothing=eps
        ),
    )


def test_weighted_ce_explicit_weights() -> None:
    logits, target = _batch(c=3)
    loss = build_loss("weighted_ce", weights=[1.0, 2.0, 0.5])
    torch.testing.assert_close(
        loss(logits, target), F.cross_entropy(logits.float(), target, weight=torch.tensor([1.0, 2.0, 0.5]))
    )


# --- focal ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 2.5])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_focal_by_hand(gamma: float, with_alpha: bool) -> None:
    logits, target = _batch(n=20, c=6, seed=2)
    alpha = np.array([0.5, 1.0, 2.0, 1.5, 0.25, 0.75])
    t = target.numpy()
    logp_t = _np_log_softmax(logits.numpy())[np.arange(len(t)), t]
    p_t = np.exp(logp_t)
    expected = -((1 - p_t) ** gamma) * logp_t * (alpha[t] if with_alpha else 1.0)
    loss = FocalLoss(gamma, alpha.tolist() if with_alpha else None, reduction="none")
    np.testing.assert_allclose(loss(logits, target).numpy(), expected, rtol=1e-5, atol=1e-7)
    mean = FocalLoss(gamma, alpha.tolist() if with_alpha else None)
    np.testing.assert_allclose(mean(logits, target).item(), expected.mean(), rtol=1e-5)


def test_focal_gamma_zero_is_ce() -> None:
    logits, target = _batch(seed=3)
    torch.testing.assert_close(
        build_loss("focal", gamma=0.0)(logits, target), F.cross_entropy(logits.float(), target)
    )


def test_focal_alpha_from_counts() -> None:
    logits, target = _batch(c=3, seed=4)
    counts = [100, 10, 1]
    loss = build_loss("focal", counts, gamma=2.0, alpha="effective", beta=0.9)
    torch.testing.assert_close(loss.alpha, class_weights(counts, "effective", 0.9))


# --- asymmetric -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gamma_pos, gamma_neg, clip", [(0.0, 4.0, 0.05), (1.0, 4.0, 0.05), (0.5, 2.0, 0.0), (0.0, 0.0, 0.2)]
)
def test_asymmetric_by_hand(gamma_pos: float, gamma_neg: float, clip: float) -> None:
    logits, target = _batch(n=24, c=5, seed=5)
    x = logits.numpy()
    p = _np_sigmoid(x)
    y = np.eye(5)[target.numpy()]
    p_m = np.maximum(p - clip, 0.0)
    pos = y * (1 - p) ** gamma_pos * np.log(p)
    neg = (1 - y) * p_m**gamma_neg * np.log(1 - p_m)
    expected = -(pos + neg).sum(axis=1)
    loss = AsymmetricLoss(gamma_pos, gamma_neg, clip, reduction="none")
    np.testing.assert_allclose(loss(logits, target).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        AsymmetricLoss(gamma_pos, gamma_neg, clip)(logits, target).item(), expected.mean(), rtol=1e-5
    )


def test_asymmetric_zero_is_bce() -> None:
    logits, target = _batch(seed=6)
    onehot = F.one_hot(target, logits.shape[1]).float()
    expected = F.binary_cross_entropy_with_logits(logits.float(), onehot, reduction="none").sum(1).mean()
    torch.testing.assert_close(AsymmetricLoss(0.0, 0.0, 0.0)(logits, target), expected)


# --- shared behaviour -------------------------------------------------------------------------------------

ALL = [
    ("ce", {}),
    ("ce", {"label_smoothing": 0.1}),
    ("weighted_ce", {"weights": "effective", "label_smoothing": 0.1}),
    ("focal", {"gamma": 2.0, "alpha": "inverse"}),
    ("focal", {"gamma": 0.5}),
    ("asymmetric", {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05}),
    ("asymmetric", {"gamma_pos": 0.5, "gamma_neg": 3.0, "clip": 0.0}),
]
COUNTS = [50, 5, 500, 20, 1]


@pytest.mark.parametrize("name, params", ALL)
def test_reductions(name: str, params: dict) -> None:
    logits, target = _batch(seed=7)
    per = build_loss(name, COUNTS, reduction="none", **params)(logits, target)
    assert per.shape == (16,) and per.dtype == torch.float32
    torch.testing.assert_close(build_loss(name, COUNTS, reduction="sum", **params)(logits, target), per.sum())
    if name != "weighted_ce":  # weighted mean divides by the weights, checked by hand above
        torch.testing.assert_close(build_loss(name, COUNTS, **params)(logits, target), per.mean())


@pytest.mark.parametrize("name, params", ALL)
def test_gradients_finite_even_when_saturated(name: str, params: dict) -> None:
    logits, target = _batch(seed=8)
    logits = logits.float()
    logits[:4] = 0.0
    logits[4:8, :] = -100.0
    logits[4:8].scatter_(1, target[4:8, None], 100.0)  # p_t == 1 exactly in float32
    logits[8:12].scatter_(1, target[8:12, None], -100.0)  # p_t == 0
    logits.requires_grad_(True)
    loss = build_loss(name, COUNTS, **params)(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name, params", ALL)
def test_half_precision_inputs_compute_in_float32(dtype: torch.dtype, name: str, params: dict) -> None:
    logits, target = _batch(seed=9)
    low = logits.to(dtype).requires_grad_(True)
    loss = build_loss(name, COUNTS, **params)
    out = loss(low, target)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, loss(low.detach().float(), target))
    out.backward()
    assert low.grad is not None and low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()


def test_module_moves_with_to() -> None:
    loss = build_loss("weighted_ce", COUNTS).to(torch.float64)  # buffers follow .to like any module's
    assert loss.weight is not None


# --- errors -----------------------------------------------------------------------------------------------


def test_unknown_loss_lists_known() -> None:
    with pytest.raises(
        UnknownNameError,
        match=r"unknown loss 'facal' \(known losses: asymmetric, ce, focal, marginal, "
        r"weighted_ce\); did you mean 'focal'\?",
    ):
        build_loss("facal")


def test_name_is_normalised() -> None:
    assert isinstance(build_loss("Weighted-CE", [1, 2]), CrossEntropyLoss)


@pytest.mark.parametrize(
    "name, counts, params, error, match",
    [
        ("ce", None, {"gamma": 2.0}, UnknownNameError, "unknown parameter 'gamma' for loss 'ce'"),
        ("focal", None, {"gamma": -1.0}, HierclfError, "gamma must be a finite number >= 0"),
        ("focal", None, {"alpha": 0.25}, HierclfError, "must be per-class"),
        ("focal", None, {"alpha": "inverse"}, HierclfError, "needs class_counts"),
        ("weighted_ce", None, {}, HierclfError, "needs class_counts"),
        (
            "weighted_ce",
            [1, 2],
            {"weights": [1.0, 2.0, 3.0]},
            HierclfError,
            "3 entries but there are 2 classes",
        ),
        ("weighted_ce", [1, 2], {"weights": [1.0, -2.0]}, HierclfError, "non-negative"),
        ("weighted_ce", [1, 2], {"weights": "efective"}, UnknownNameError, "did you mean 'effective'"),
        ("weighted_ce", [1, 2], {"beta": 1.0}, HierclfError, "beta must be"),
        ("ce", None, {"label_smoothing": 1.0}, HierclfError, "label_smoothing must be in"),
        ("ce", None, {"reduction": "avg"}, UnknownNameError, "unknown reduction 'avg'"),
        ("asymmetric", None, {"gamma_neg": -4.0}, HierclfError, "gamma_neg must be"),
        ("asymmetric", None, {"clip": 1.0}, HierclfError, "clip must be in"),
    ],
)
def test_bad_params(name: str, counts: list | None, params: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_loss(name, counts, **params)


def test_shape_errors() -> None:
    loss = build_loss("weighted_ce", [1, 2, 3])
    with pytest.raises(HierclfError, match="3 class weights for 4 logits"):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(HierclfError, match=r"target must have shape \(batch,\)"):
        loss(torch.zeros(2, 3), torch.tensor([[0], [1]]))


def test_none_params_mean_default() -> None:
    loss = build_loss("focal", gamma=None, alpha=None)
    assert isinstance(loss, FocalLoss) and loss.gamma == 2.0
    assert math.isclose(build_loss("asymmetric").gamma_neg, 4.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name, params", ALL)
def test_cuda_matches_cpu(name: str, params: dict) -> None:
    logits, target = _batch(seed=10)
    loss = build_loss(name, COUNTS, **params)
    cpu = loss(logits.half().float(), target)
    gpu = loss.cuda()(logits.half().cuda(), target.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)
