"""The fused CPU kernel (numba) against the torch range-sum path and the brute force: bit-identical."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierclf import Taxonomy, _rollup_kernel
from hierclf.functional import _plan, _tensors, rollup
from hierclf.shipped import shipped_taxonomy
from hierclf.synthetic import random_taxonomy

pytestmark = pytest.mark.skipif(not _rollup_kernel.AVAILABLE, reason="numba is not installed")


def _torch_path(x: torch.Tensor, monkeypatch: pytest.MonkeyPatch, **kw: object) -> torch.Tensor:
    monkeypatch.setenv("HIERCLF_NO_NUMBA", "1")
    try:
        return rollup(x, **kw)  # type: ignore[arg-type]
    finally:
        monkeypatch.delenv("HIERCLF_NO_NUMBA")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_is_bit_identical_to_torch_path(dtype: torch.dtype, seed: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tax = random_taxonomy(300, max_depth=6, seed=seed)
    x = torch.rand(517, len(tax.leaves), dtype=dtype, generator=torch.Generator().manual_seed(seed))
    x /= x.sum(1, keepdim=True)
    x[:, 0] = 1e-30  # tiny values keep their relative precision in both paths
    assert _rollup_kernel.usable(x)
    fused = rollup(x, tax)
    reference = _torch_path(x, monkeypatch, taxonomy=tax)
    assert fused.dtype == dtype
    assert torch.equal(fused, reference)


def test_kernel_with_cut_columns_in_any_order(monkeypatch: pytest.MonkeyPatch) -> None:
    tax = random_taxonomy(120, max_depth=5, seed=3)
    cut = list(tax.children(tax.root))
    for child in tax.children(cut[0]):  # refine one branch so the cut is not a single level
        cut.append(child)
    cut.remove(cut[0])
    shuffled = list(reversed(cut))
    x = torch.rand(64, len(shuffled), dtype=torch.float64)
    fused = rollup(x, tax, columns=shuffled)
    reference = _torch_path(x, monkeypatch, taxonomy=tax, columns=shuffled)
    assert torch.equal(fused, reference)
    # brute force: each node is the sum of the cut columns under it
    plan = _plan(tax, None, shuffled)
    for k, node in enumerate(plan.nodes):
        under = {node, *tax.descendants(node)}
        cols = [i for i, c in enumerate(shuffled) if c in under]
        np.testing.assert_allclose(fused[:, k].numpy(), x[:, cols].sum(1).numpy(), rtol=1e-12, atol=1e-15)


def test_empty_batch_and_disable_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    tax = random_taxonomy(10, seed=0)
    assert rollup(torch.zeros(0, 10), tax).shape == (0, len(tax.nodes))
    monkeypatch.setenv("HIERCLF_NO_NUMBA", "1")
    assert not _rollup_kernel.usable(torch.zeros(2, 10))


def test_kernel_not_used_for_half_precision_or_autograd() -> None:
    assert not _rollup_kernel.usable(torch.zeros(2, 3, dtype=torch.float16))
    tax = random_taxonomy(10, seed=0)
    x = torch.rand(4, 10, dtype=torch.float64, requires_grad=True)
    rollup(x, tax).sum().backward()  # the differentiable torch path
    assert x.grad is not None


def test_plan_tensors_are_int64() -> None:
    tax = random_taxonomy(10, seed=0)
    perm, start, end = _tensors(_plan(tax, None, None), torch.device("cpu"))
    assert start.dtype == torch.int64 and end.dtype == torch.int64 and perm is None


def test_out_argument_writes_in_place_and_checks_its_shape() -> None:
    from hierclf.functional import RollUpError

    tax = random_taxonomy(40, seed=1)
    x = torch.rand(16, 40)
    out = torch.empty(16, len(tax.nodes))
    assert rollup(x, tax, out=out) is out
    assert torch.equal(out, rollup(x, tax))
    single = torch.empty(16, 1)
    assert rollup(x, tax, tax.root, out=single) is single
    with pytest.raises(RollUpError, match="out must be a contiguous"):
        rollup(x, tax, out=torch.empty(16, 3))
    with pytest.raises(RollUpError, match="out= is for inference"):
        rollup(x.requires_grad_(), tax, out=out)


# --- the kernel's program: tiles of four rows, column blocks, copies, subsets, chains ---------------------


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 7, 9, 33, 130])
def test_any_batch_size_is_bit_identical(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # tiles of four rows repeat the last row past the batch end, and tasks split the batch: no row may be
    # skipped or written with another row's values
    tax = random_taxonomy(60, max_depth=5, seed=batch)
    x = torch.rand(batch, 60, generator=torch.Generator().manual_seed(batch))
    fused = rollup(x, tax)
    assert torch.equal(fused, _torch_path(x, monkeypatch, taxonomy=tax))


def test_trees_wider_than_a_scan_block(monkeypatch: pytest.MonkeyPatch) -> None:
    # sums are written after the block holding their last column: ranges that span blocks, and cut
    # columns in shuffled order (the permuted scan)
    assert _rollup_kernel._BLOCK_COLUMNS < 2500
    tax = random_taxonomy(2500, max_depth=7, seed=4)
    x = torch.rand(21, 2500, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(rollup(x, tax), _torch_path(x, monkeypatch, taxonomy=tax))
    cut = list(tax.children(tax.root))
    order = np.random.default_rng(0).permutation(len(cut))
    columns = [cut[i] for i in order]
    xc = torch.rand(21, len(columns), dtype=torch.float64)
    assert torch.equal(rollup(xc, tax, columns=columns),
                       _torch_path(xc, monkeypatch, taxonomy=tax, columns=columns))


def test_single_child_chains_copy_the_same_column_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # isic.yaml has single-child nodes: a node and its only child are both one-column outputs of the same
    # leaf; the scan writes one of them, the other is an extra copy
    tax = Taxonomy.from_yaml(shipped_taxonomy("isic"))
    chains = [n for n in tax.nodes if len(tax.children(n)) == 1]
    assert chains
    x = torch.rand(10, len(tax.leaves), generator=torch.Generator().manual_seed(0))
    fused = rollup(x, tax)
    assert torch.equal(fused, _torch_path(x, monkeypatch, taxonomy=tax))
    position = {n: k for k, n in enumerate(tax.nodes)}
    for node in chains:
        child = tax.children(node)[0]
        if not tax.children(child):
            assert torch.equal(fused[:, position[node]], fused[:, position[child]])


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 80), st.integers(0, 2**16), st.data())
def test_any_subset_of_nodes_in_any_order(n_leaves: int, seed: int, data: st.DataObject) -> None:
    # subsets take the kernel's other mode (copies after the scan, the scan's stores sent to the output
    # written last); repeated names, leaves only, internal nodes only, mixtures
    tax = random_taxonomy(n_leaves, max_depth=5, seed=seed)
    nodes = data.draw(st.lists(st.sampled_from(tax.nodes), min_size=2, max_size=12))
    batch = data.draw(st.integers(1, 11))
    x = torch.rand(batch, n_leaves, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    fused = rollup(x, tax, nodes)
    assert _rollup_kernel.usable(x)
    os.environ["HIERCLF_NO_NUMBA"] = "1"
    try:
        reference = rollup(x, tax, nodes)
    finally:
        del os.environ["HIERCLF_NO_NUMBA"]
    assert torch.equal(fused, reference)


def test_programs_are_cached_and_bounded() -> None:
    tax = random_taxonomy(30, seed=5)
    x = torch.rand(4, 30)
    rollup(x, tax)
    plan = _plan(tax, None, None)
    key_args = (30, None, plan.start, plan.end)
    first = _rollup_kernel._program(*key_args)
    assert _rollup_kernel._program(*key_args) is first
    for k in range(_rollup_kernel._PROGRAMS_KEPT + 3):  # distinct requests: the oldest are dropped
        _rollup_kernel._program(31 + k, None, plan.start, plan.end)
    assert len(_rollup_kernel._PROGRAMS) == _rollup_kernel._PROGRAMS_KEPT
    assert _rollup_kernel._program(*key_args) is not first  # rebuilt after being dropped


def test_compiling_with_slp_restores_numba_setting() -> None:
    from numba.core import config

    def setting() -> object:
        return config.SLP_VECTORIZE

    before = setting()
    with _rollup_kernel._compiling_with_slp():
        assert setting() == 1
    assert setting() == before
    with pytest.raises(RuntimeError), _rollup_kernel._compiling_with_slp():
        raise RuntimeError("a failed compilation")
    assert setting() == before


def test_calls_from_several_threads_at_once() -> None:
    # e.g. a server answering requests in threads: every call gets its own, correct result
    from concurrent.futures import ThreadPoolExecutor

    tax = random_taxonomy(200, max_depth=6, seed=8)
    inputs = [torch.rand(37, 200, generator=torch.Generator().manual_seed(k)) for k in range(8)]
    expected = [rollup(x, tax) for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda x: rollup(x, tax), inputs * 3))
    for k, got in enumerate(results):
        assert torch.equal(got, expected[k % len(inputs)])
