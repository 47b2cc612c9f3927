"""The fused CPU kernel (numba) against the torch range-sum path and the brute force: bit-identical."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierclf import Taxonomy
from hierclf.functional import rollup
from hierclf.rollup_engine import cpu_kernels as _rollup_kernel
from hierclf.rollup_engine import torch_ops
from hierclf.rollup_engine.request_plans import plan as _plan
from hierclf.taxonomy.shipped import shipped_taxonomy
from hierclf.taxonomy.synthetic import random_taxonomy

pytestmark = pytest.mark.skipif(not _rollup_kernel.AVAILABLE, reason="numba is not installed")


def _torch_path(x: torch.Tensor, monkeypatch: pytest.MonkeyPatch, **kw: object) -> torch.Tensor:
    monkeypatch.setenv("HIERCLF_NO_NUMBA", "1")
    try:
        return rollup(x, **kw)  # type: ignore[arg-type]
    finally:
        monkeypatch.delenv("HIERCLF_NO_NUMBA")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_is_bit_identical_to_torch_path(
    dtype: torch.dtype, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    tax = random_taxonomy(300, max_depth=6, seed=seed)
    x = torch.rand(517, len(tax.leaves), dtype=dtype, generator=torch.Generator().manual_seed(seed))
    x /= x.sum(1, keepdim=True)
    x[:, 0] = 1e-30  # tiny values keep their relative precision in both paths
    assert torch_ops.uses_cpu_kernel(x)
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
    assert not torch_ops.uses_cpu_kernel(torch.zeros(2, 10))
    assert not _rollup_kernel.usable(np.zeros((2, 10)))


def test_kernel_not_used_for_half_precision_or_autograd() -> None:
    assert not torch_ops.uses_cpu_kernel(torch.zeros(2, 3, dtype=torch.float16))
    assert not _rollup_kernel.usable(np.zeros((2, 3), dtype=np.float16))
    assert not torch_ops.uses_cpu_kernel(torch.zeros(2, 3, requires_grad=True))
    tax = random_taxonomy(10, seed=0)
    x = torch.rand(4, 10, dtype=torch.float64, requires_grad=True)
    rollup(x, tax).sum().backward()  # the differentiable torch path
    assert x.grad is not None


def test_plan_tensors_are_int64() -> None:
    tax = random_taxonomy(10, seed=0)
    index = torch_ops.range_index(_plan(tax, None, None), torch.device("cpu"))
    assert index.start.dtype == torch.int64 and index.end.dtype == torch.int64 and index.perm is None


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
    assert torch.equal(
        rollup(xc, tax, columns=columns), _torch_path(xc, monkeypatch, taxonomy=tax, columns=columns)
    )


def test_single_child_chains_copy_the_same_column_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # isic.yaml has single-child nodes: a node and its only child are both one-column outputs of the same
    # leaf (two copies of one column), or the same multi-column range (two equal sums)
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
    # subsets: the scan stops at the last range's end; repeated names, leaves only, internal nodes only,
    # mixtures
    tax = random_taxonomy(n_leaves, max_depth=5, seed=seed)
    nodes = data.draw(st.lists(st.sampled_from(tax.nodes), min_size=2, max_size=12))
    batch = data.draw(st.integers(1, 11))
    x = torch.rand(batch, n_leaves, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    fused = rollup(x, tax, nodes)
    assert torch_ops.uses_cpu_kernel(x)
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


# --- log_rollup's CPU kernel (no autograd): one pass over the tree per row --------------------------------


def _log_torch_path(
    x: torch.Tensor, tax: Taxonomy, nodes: object = None, columns: object = None
) -> torch.Tensor:
    from hierclf.functional import log_rollup

    os.environ["HIERCLF_NO_NUMBA"] = "1"
    try:
        return log_rollup(x, tax, nodes, columns=columns)  # type: ignore[arg-type]
    finally:
        del os.environ["HIERCLF_NO_NUMBA"]


def _log_brute_force(x: np.ndarray, tax: Taxonomy, nodes: list[str], columns: list[str]) -> np.ndarray:
    out = np.empty((x.shape[0], len(nodes)))
    for k, node in enumerate(nodes):
        under = {node, *tax.descendants(node)}
        cols = [i for i, c in enumerate(columns) if c in under]
        out[:, k] = np.logaddexp.reduce(x[:, cols], axis=1)
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.integers(0, 2**16), st.data())
def test_log_kernel_matches_logaddexp_and_the_torch_path(
    n_leaves: int, seed: int, data: st.DataObject
) -> None:
    from hierclf.functional import log_rollup, rollup_nodes

    tax = random_taxonomy(n_leaves, max_depth=5, seed=seed)
    use_cut = data.draw(st.booleans())
    columns = list(tax.leaves)
    if use_cut:  # the root's children, in shuffled order
        columns = list(tax.children(tax.root))
        columns = [columns[i] for i in np.random.default_rng(seed).permutation(len(columns))]
    nodes = data.draw(
        st.one_of(
            st.none(), st.lists(st.sampled_from(rollup_nodes(tax, columns=columns)), min_size=2, max_size=10)
        )
    )
    rng = np.random.default_rng(seed)
    # log-probabilities spread over hundreds of units: per-node shifts matter
    x = rng.normal(0, 1, (data.draw(st.integers(1, 9)), len(columns))) * rng.choice([1, 300])
    xt = torch.from_numpy(x)
    got = log_rollup(xt, tax, nodes, columns=columns if use_cut else None)
    names = list(rollup_nodes(tax, nodes, columns=columns if use_cut else None))
    np.testing.assert_allclose(got.numpy(), _log_brute_force(x, tax, names, columns), rtol=1e-12, atol=1e-12)
    reference = _log_torch_path(xt, tax, nodes, columns if use_cut else None)
    np.testing.assert_allclose(got.numpy(), reference.numpy(), rtol=1e-13, atol=1e-13)


def test_log_kernel_is_stable_far_below_the_row_maximum() -> None:
    from hierclf.functional import log_rollup

    tax = Taxonomy.from_yaml(shipped_taxonomy("dermamnist"))
    lp = torch.tensor([[0.0, -1000.0, -1001.0, -2000.0, -1e6, -1e6, -1e6]], dtype=torch.float64)
    assert torch_ops.uses_cpu_kernel(lp)
    out = log_rollup(lp, tax, ["melanocytic_nevus", "benign_keratosis", "benign_dermal", "malignant"])
    expected = [0.0, -1000.0, float(np.logaddexp(-1001.0, -2000.0)), -1e6 + np.log(3)]
    np.testing.assert_allclose(out.numpy()[0], expected, rtol=1e-12)


def test_log_kernel_infinities_and_nan_as_the_torch_path() -> None:
    from hierclf.functional import log_rollup

    tax = Taxonomy.from_yaml(shipped_taxonomy("dermamnist"))
    rows = torch.tensor(
        [
            [float("-inf")] * 7,
            [0.0] + [float("-inf")] * 6,
            [float("inf"), 0.0, -1.0, float("-inf"), 2.0, 3.0, 4.0],
            [float("nan"), 0.0, -1.0, -2.0, 2.0, 3.0, 4.0],
        ],
        dtype=torch.float64,
    )
    got = log_rollup(rows, tax)
    assert torch.equal(torch.isnan(got), torch.isnan(_log_torch_path(rows, tax)))
    assert torch.allclose(got, _log_torch_path(rows, tax), equal_nan=True)
    assert torch.isneginf(got[0]).all()  # every column at -inf: every node at -inf
    assert got[1, 0].item() == 0.0 and got[1, tax.nodes.index(tax.root)].item() == 0.0


def test_log_kernel_float32_and_leaves_exact() -> None:
    from hierclf.functional import log_rollup

    tax = random_taxonomy(500, max_depth=7, seed=2)
    x = torch.randn(300, 500, generator=torch.Generator().manual_seed(2)) * 20
    got = log_rollup(x, tax)
    assert got.dtype == torch.float32
    leaf_pos = [tax.nodes.index(leaf) for leaf in tax.leaves]
    assert torch.equal(got[:, leaf_pos], x)  # a one-column node is its column, bit for bit
    reference = _log_torch_path(x.double(), tax)
    np.testing.assert_allclose(got.double().numpy(), reference.numpy(), rtol=2e-7, atol=1e-5)


def test_log_module_uses_the_kernel_and_agrees_with_the_function() -> None:
    from hierclf.functional import log_rollup
    from hierclf.nn.rollup_modules import LogRollUp

    tax = random_taxonomy(150, max_depth=6, seed=6)
    cut = list(reversed(tax.children(tax.root)))  # a cut in another order than pre-order
    for nodes, columns in (
        (None, None),
        ([tax.root, tax.leaves[3], tax.children(tax.root)[0]], None),
        (None, cut),
        ([tax.root, cut[0]], cut),
    ):
        n = 150 if columns is None else len(cut)
        x = torch.randn(40, n, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 50
        module = LogRollUp(tax, nodes, columns=columns)
        assert module.state_dict() == {}  # the kernel's tree is rebuilt, never stored
        assert torch_ops.uses_cpu_kernel(x)
        torch.testing.assert_close(module(x), log_rollup(x, tax, nodes, columns=columns), rtol=0, atol=0)
        with torch.enable_grad():  # autograd goes through the torch path, to the same values
            graded = module(x.clone().requires_grad_())
        assert not torch_ops.uses_cpu_kernel(x.clone().requires_grad_())
        torch.testing.assert_close(graded.detach(), module(x), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["isic", "fitzpatrick17k"])
def test_staged_and_direct_kernels_agree_bit_for_bit(
    name: str, dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    # short rows go through _kernel_staged (a scratch tile, rows written out forward), long rows through
    # _kernel: the same arithmetic, so the same bits, for all nodes, subsets, cuts out of order and chains
    tax = Taxonomy.from_yaml(shipped_taxonomy(name))
    x = np.random.default_rng(5).random((37, len(tax.leaves))).astype(dtype)
    cut = list(reversed(tax.children(tax.root)))
    xc = np.random.default_rng(6).random((37, len(cut))).astype(dtype)
    requests = [
        (x, None, None),
        (x, [tax.root, tax.leaves[2], tax.children(tax.root)[0]], None),
        (xc, None, cut),
    ]
    for values, nodes, columns in requests:
        request = _plan(tax, nodes, columns)
        results = {}
        for stage in (0, 1 << 30):  # never staged, always staged
            monkeypatch.setattr(_rollup_kernel, "_STAGE_BYTES", stage)
            results[stage] = _rollup_kernel.range_sums(values, request.perm, request.start, request.end)
        assert np.array_equal(results[0], results[1 << 30])
        reference = _torch_path(
            torch.from_numpy(values), monkeypatch, taxonomy=tax, nodes=nodes, columns=columns
        )
        assert np.array_equal(results[0], reference.numpy())


def test_small_calls_run_on_one_thread() -> None:
    # waking numba's OpenMP pool between torch operations costs milliseconds: small calls stay on one thread
    assert _rollup_kernel._threads(10) == 1
    big = _rollup_kernel._threads(_rollup_kernel._PARALLEL_WORK)
    assert big == max(1, min(_rollup_kernel.numba.config.NUMBA_NUM_THREADS, torch.get_num_threads()))


def test_engine_imports_no_torch_for_numpy_inputs() -> None:
    """numpy in: no torch needed. The plan, the kernels and the numpy core never import torch."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from hierclf import Taxonomy\n"
        "from hierclf.functional import conditional, log_rollup, rollup\n"
        "tax = Taxonomy.from_yaml('taxonomy/isic.yaml')\n"
        "p = np.random.default_rng(0).dirichlet(np.ones(len(tax.leaves)), size=9)\n"
        "rollup(p, tax); rollup(p, tax, 'malignant'); log_rollup(np.log(p), tax)\n"
        "conditional(p, tax, 'malignant', 'benign')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_engine_layers() -> None:
    """The engine imports no ``hierclf.nn``; only ``torch_ops`` imports torch (at any level of a module)."""
    import ast

    engine = Path(__file__).resolve().parents[1] / "hierclf" / "rollup_engine"
    for path in sorted(engine.glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        assert not {m for m in imported if m.startswith("hierclf.nn")}, path.name
        if path.name != "torch_ops.py":
            assert not {m for m in imported if m.split(".")[0] == "torch"}, path.name
