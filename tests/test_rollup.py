"""Roll-up against brute force (sums over ``nx.descendants``), property tests, gradients, dtypes, devices."""

from __future__ import annotations

import random
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierclf import Taxonomy, UnknownNameError
from hierclf.functional import RollUpError, conditional, log_rollup, rollup
from hierclf.nn.rollup_modules import LogRollUp, RollUp
from hierclf.taxonomy.synthetic import random_taxonomy

TAXONOMY_DIR = Path(__file__).resolve().parents[1] / "taxonomy"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def brute_force(
    probs: np.ndarray,
    tax: Taxonomy,
    nodes: list[str] | tuple[str, ...] | None = None,
    columns: tuple[str, ...] | None = None,
) -> np.ndarray:
    """P(node) = sum of the columns that are the node or one of its networkx descendants (float64 loops)."""
    columns = tax.leaves if columns is None else columns
    nodes = tax.nodes if nodes is None else nodes
    col = {c: i for i, c in enumerate(columns)}
    out = np.zeros((probs.shape[0], len(nodes)))
    for k, n in enumerate(nodes):
        under = {n} | nx.descendants(tax.graph, n)
        for c in under & set(col):
            out[:, k] += probs[:, col[c]].astype(np.float64)
    return out


def random_probs(n: int, k: int, seed: int = 0, alpha: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(k, alpha), size=n)


trees = st.builds(
    lambda n, d, f, s: random_taxonomy(n, max_depth=d, max_fan_out=f, seed=s),
    st.integers(2, 60),
    st.integers(1, 6),
    st.integers(2, 6),
    st.integers(0, 10_000),
)


def shuffled_siblings(tax: Taxonomy, seed: int) -> Taxonomy:
    """The same tree with every node's children in a random order (so a different leaf order)."""
    rng = random.Random(seed)
    data = tax.to_dict()
    stack = [data["root"]]
    while stack:
        node = stack.pop()
        kids = node.get("children", [])
        rng.shuffle(kids)
        stack.extend(kids)
    return Taxonomy.from_dict(data)


# --- correctness against brute force ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(tax=trees, n=st.integers(0, 40), seed=st.integers(0, 1000))
def test_all_nodes_match_brute_force(tax: Taxonomy, n: int, seed: int) -> None:
    probs = random_probs(n, len(tax.leaves), seed)
    np.testing.assert_allclose(rollup(probs, tax), brute_force(probs, tax), rtol=0, atol=1e-12)
    got32 = rollup(torch.from_numpy(probs.astype(np.float32)), tax)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.double().numpy(), brute_force(probs.astype(np.float32), tax), atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(tax=trees, seed=st.integers(0, 1000), data=st.data())
def test_named_nodes_and_single_node_path(tax: Taxonomy, seed: int, data: st.DataObject) -> None:
    nodes = data.draw(st.lists(st.sampled_from(tax.nodes), min_size=1, max_size=6))
    probs = random_probs(7, len(tax.leaves), seed)
    np.testing.assert_allclose(rollup(probs, tax, nodes), brute_force(probs, tax, nodes), atol=1e-12)
    np.testing.assert_allclose(rollup(probs, tax, nodes[0]), brute_force(probs, tax, nodes[:1]), atol=1e-12)


@pytest.mark.parametrize("name", ["dermamnist.yaml", "esteva.yaml", "isic.yaml"])
def test_shipped_trees_match_brute_force(name: str) -> None:
    path = TAXONOMY_DIR / name
    if not path.exists():
        pytest.skip(f"{name} not in this checkout")
    tax = Taxonomy.from_yaml(path)
    probs = random_probs(64, len(tax.leaves), seed=1, alpha=0.3)
    np.testing.assert_allclose(rollup(probs, tax), brute_force(probs, tax), atol=1e-12)
    module_out = RollUp(tax)(torch.from_numpy(probs)).numpy()
    np.testing.assert_allclose(module_out, brute_force(probs, tax), atol=1e-12)


def test_esteva_scale_tree_matches_brute_force_and_blocks_agree() -> None:
    tax = random_taxonomy(2032, max_depth=9, seed=0)
    probs = random_probs(600, len(tax.leaves), seed=2, alpha=0.2).astype(np.float32)  # > one row block
    expected = brute_force(probs, tax)
    blocked = rollup(torch.from_numpy(probs), tax)  # eager, no grad: cache-sized row blocks
    whole = rollup(torch.from_numpy(probs).requires_grad_(), tax).detach()  # autograd path: whole batch
    np.testing.assert_allclose(blocked.double().numpy(), expected, atol=1e-6)
    assert torch.equal(blocked, whole)  # same formulation: bit-identical
    leaves = list(tax.index.leaf_rows)
    assert torch.equal(blocked[:, leaves], torch.from_numpy(probs))  # one-column outputs are exact copies


def test_small_nodes_keep_relative_precision_in_float32() -> None:
    """A float32 prefix gives ~6e-8 absolute noise for a 1e-9 node late in the order; float64 does not."""
    tax = random_taxonomy(200, max_depth=4, seed=5)
    probs = np.full((3, 200), 1e-9)
    probs[:, 0] = 1 - 199e-9
    x = torch.tensor(probs, dtype=torch.float32)
    got = rollup(x, tax).double().numpy()
    expected = brute_force(x.double().numpy(), tax)
    small = expected < 1e-6
    assert small.sum() > 50
    np.testing.assert_allclose(got[small], expected[small], rtol=1e-6)


# --- invariants ---------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(tax=trees, seed=st.integers(0, 1000))
def test_root_is_one_and_parent_is_sum_of_children(tax: Taxonomy, seed: int) -> None:
    probs = torch.from_numpy(random_probs(9, len(tax.leaves), seed))
    out = rollup(probs, tax)
    pos = tax.index.position
    torch.testing.assert_close(out[:, pos[tax.root]], torch.ones(9, dtype=torch.float64), rtol=0, atol=1e-12)
    internal = [n for n in tax.nodes if not tax.is_leaf(n)]
    parents = out[:, [pos[n] for n in internal]]
    children = torch.stack([out[:, [pos[c] for c in tax.children(n)]].sum(1) for n in internal], 1)
    torch.testing.assert_close(parents, children, rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(tax=trees, seed=st.integers(0, 1000), shuffle=st.integers(0, 1000))
def test_sibling_order_changes_nothing(tax: Taxonomy, seed: int, shuffle: int) -> None:
    other = shuffled_siblings(tax, shuffle)
    probs = random_probs(5, len(tax.leaves), seed)
    # the same per-leaf probabilities, laid out in the other tree's leaf order
    by_leaf = {leaf: probs[:, i] for i, leaf in enumerate(tax.leaves)}
    probs_other = np.stack([by_leaf[leaf] for leaf in other.leaves], 1)
    nodes = list(tax.nodes)
    np.testing.assert_allclose(rollup(probs, tax, nodes), rollup(probs_other, other, nodes), atol=1e-12)


# --- inputs over a cut --------------------------------------------------------------------------------------


def test_cut_columns_in_any_order(dermamnist: Taxonomy) -> None:
    cut = ("malignant", "dermatofibroma", "melanocytic_nevus", "vascular_lesion", "benign_keratosis")
    probs = random_probs(11, len(cut), seed=3)
    expected_nodes = [n for n in dermamnist.nodes if dermamnist.cut_node_above(n, cut) is None]
    module = RollUp(dermamnist, columns=cut)
    assert module.nodes == tuple(expected_nodes)
    expected = brute_force(probs, dermamnist, expected_nodes, columns=cut)
    np.testing.assert_allclose(rollup(probs, dermamnist, columns=cut), expected, atol=1e-12)
    np.testing.assert_allclose(module(torch.from_numpy(probs)).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(
        rollup(probs, dermamnist, ["benign", "cancer"], columns=cut),
        brute_force(probs, dermamnist, ["benign", "malignant"], columns=cut),
        atol=1e-12,
    )


@settings(max_examples=25, deadline=None)
@given(tax=trees, seed=st.integers(0, 1000), data=st.data())
def test_random_cuts_match_brute_force(tax: Taxonomy, seed: int, data: st.DataObject) -> None:
    # a random cut: walk down from the root, stopping at each node with probability 1/2
    rng = random.Random(seed)
    cut, stack = [], [tax.root]
    while stack:
        n = stack.pop()
        if tax.is_leaf(n) or rng.random() < 0.5:
            cut.append(n)
        else:
            stack.extend(tax.children(n))
    rng.shuffle(cut)
    probs = random_probs(6, len(cut), seed)
    above = [n for n in tax.nodes if tax.cut_node_above(n, cut) is None]
    np.testing.assert_allclose(
        rollup(probs, tax, columns=cut), brute_force(probs, tax, above, tuple(cut)), atol=1e-12
    )
    node = data.draw(st.sampled_from(above))
    np.testing.assert_allclose(
        rollup(probs, tax, node, columns=cut), brute_force(probs, tax, [node], tuple(cut)), atol=1e-12
    )


def test_node_below_the_cut_names_the_cut_node(dermamnist: Taxonomy) -> None:
    cut = ("benign", "malignant")
    with pytest.raises(RollUpError, match="'mel' lies below the input columns.*ancestor 'malignant'"):
        rollup(np.full((1, 2), 0.5), dermamnist, ["mel"], columns=cut)
    with pytest.raises(RollUpError, match="'basal_cell_carcinoma'.*'malignant'"):
        RollUp(dermamnist, ["basal_cell_carcinoma"], columns=cut)


def test_columns_that_are_not_a_cut_are_refused(dermamnist: Taxonomy) -> None:
    from hierclf import TaxonomyError

    with pytest.raises(TaxonomyError, match="overlap"):
        rollup(np.full((1, 2), 0.5), dermamnist, columns=["malignant", "melanoma"])
    with pytest.raises(TaxonomyError, match="uncovered"):
        rollup(np.full((1, 1), 1.0), dermamnist, columns=["malignant"])


# --- dtypes, shapes, numpy, errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "atol"),
    [(torch.float16, 2e-3), (torch.bfloat16, 1e-2), (torch.float32, 1e-6), (torch.float64, 1e-12)],
)
@pytest.mark.parametrize("nodes", [None, ["malignant"], ["malignant", "benign_dermal", "mel"]])
def test_dtypes(dermamnist: Taxonomy, dtype: torch.dtype, atol: float, nodes: list[str] | None) -> None:
    probs = torch.from_numpy(random_probs(300, 7, seed=4)).to(dtype)
    expected = brute_force(
        probs.double().numpy(), dermamnist, None if nodes is None else [dermamnist.resolve(n) for n in nodes]
    )
    for out in (rollup(probs, dermamnist, nodes), RollUp(dermamnist, nodes)(probs)):
        assert out.dtype == dtype
        np.testing.assert_allclose(out.double().numpy(), expected, atol=atol, rtol=0)


def test_numpy_in_numpy_out_and_leading_dims(dermamnist: Taxonomy) -> None:
    probs = random_probs(24, 7, seed=5).astype(np.float32).reshape(2, 3, 4, 7)
    out = rollup(probs, dermamnist, ["malignant", "benign"])
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 4, 2) and out.dtype == np.float32
    flat = brute_force(probs.reshape(-1, 7), dermamnist, ["malignant", "benign"])
    np.testing.assert_allclose(out.reshape(-1, 2), flat, atol=1e-6)
    reversed_view = probs.reshape(-1, 7)[::-1]  # negative strides are copied, not refused
    np.testing.assert_allclose(rollup(reversed_view, dermamnist, "malignant"), flat[::-1, :1], atol=1e-6)
    assert isinstance(log_rollup(np.log(probs), dermamnist), np.ndarray)
    assert isinstance(conditional(probs, dermamnist, "mel", "nv"), np.ndarray)


def test_empty_batch(dermamnist: Taxonomy) -> None:
    assert rollup(torch.zeros(0, 7), dermamnist).shape == (0, len(dermamnist.nodes))
    assert log_rollup(torch.zeros(0, 7), dermamnist).shape == (0, len(dermamnist.nodes))


def test_bad_inputs(dermamnist: Taxonomy) -> None:
    shape_message = r"roll-up input has shape \(2, 6\); expected \(\.\.\., 7\) with one column per leaf"
    with pytest.raises(RollUpError, match=shape_message):
        rollup(torch.zeros(2, 6), dermamnist)
    with pytest.raises(RollUpError, match="must be floating point, got dtype int64"):
        rollup(torch.zeros(2, 7, dtype=torch.long), dermamnist)
    with pytest.raises(RollUpError, match="must be floating point, got dtype int64"):
        rollup(np.zeros((2, 7), dtype=np.int64), dermamnist)
    with pytest.raises(RollUpError, match="torch.Tensor or numpy.ndarray"):
        rollup([[0.0] * 7], dermamnist)  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="did you mean 'malignant'"):
        rollup(torch.zeros(2, 7), dermamnist, ["malignat"])
    with pytest.raises(ValueError, match=shape_message):  # RollUpError is a ValueError
        RollUp(dermamnist)(torch.zeros(2, 6))


# --- gradients ----------------------------------------------------------------------------------------------


def test_gradcheck(dermamnist: Taxonomy) -> None:
    x = torch.from_numpy(random_probs(4, 7, seed=6)).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: rollup(p, dermamnist), (x,))
    assert torch.autograd.gradcheck(lambda p: rollup(p, dermamnist, "malignant"), (x,))
    assert torch.autograd.gradcheck(lambda p: log_rollup(p.log(), dermamnist), (x,))
    assert torch.autograd.gradcheck(lambda p: conditional(p, dermamnist, ["mel", "akiec"], ["nv"]), (x,))
    assert torch.autograd.gradcheck(
        RollUp(dermamnist, columns=("benign", "malignant")), (x[:, :2].detach().clone().requires_grad_(),)
    )
    assert torch.autograd.gradcheck(LogRollUp(dermamnist), (x.log().detach().requires_grad_(),))


def test_gradient_is_sum_over_ancestors(dermamnist: Taxonomy) -> None:
    x = torch.from_numpy(random_probs(1, 7)).requires_grad_()
    rollup(x, dermamnist).sum().backward()
    depth_plus_one = [len(dermamnist.ancestors(leaf)) + 1 for leaf in dermamnist.leaves]
    assert x.grad.tolist() == [[float(d) for d in depth_plus_one]]


# --- log roll-up --------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(tax=trees, seed=st.integers(0, 1000))
def test_log_rollup_matches_brute_force(tax: Taxonomy, seed: int) -> None:
    probs = random_probs(5, len(tax.leaves), seed)
    np.testing.assert_allclose(np.exp(log_rollup(np.log(probs), tax)), brute_force(probs, tax), rtol=1e-10)


def test_log_rollup_is_stable_far_below_the_row_maximum(dermamnist: Taxonomy) -> None:
    lp = torch.tensor(
        [[0.0, -1000.0, -1001.0, -2000.0, -1e6, -1e6, -1e6]], dtype=torch.float64, requires_grad=True
    )
    out = log_rollup(lp, dermamnist, ["melanocytic_nevus", "benign_keratosis", "benign_dermal", "malignant"])
    expected = [0.0, -1000.0, float(np.logaddexp(-1001.0, -2000.0)), -1e6 + np.log(3)]
    np.testing.assert_allclose(out.detach().numpy()[0], expected, rtol=1e-12)
    out.sum().backward()
    assert torch.isfinite(lp.grad).all()
    np.testing.assert_allclose(lp.grad.numpy()[0], [1, 1, 1, 0, 1 / 3, 1 / 3, 1 / 3], atol=1e-12)
    for module_out in (LogRollUp(dermamnist, ["malignant"])(lp), LogRollUp(dermamnist)(lp)):
        assert torch.isfinite(module_out).all()


def test_log_rollup_of_minus_infinity(dermamnist: Taxonomy) -> None:
    lp = torch.full((1, 7), float("-inf"))
    lp[0, 0] = 0.0
    out = log_rollup(lp, dermamnist, ["melanocytic_nevus", "malignant", "skin_lesion"])
    assert out.tolist() == [[0.0, float("-inf"), 0.0]]


def test_log_rollup_float32_and_blocks(dermamnist: Taxonomy) -> None:
    probs = random_probs(5000, 7, seed=7)
    out = log_rollup(torch.from_numpy(np.log(probs)).float(), dermamnist)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(np.exp(out.double().numpy()), brute_force(probs, dermamnist), rtol=1e-5)


# --- conditional --------------------------------------------------------------------------------------------


def test_conditional_against_brute_force(dermamnist: Taxonomy) -> None:
    probs = random_probs(50, 7, seed=8)
    pos = brute_force(probs, dermamnist, ["melanoma", "keratinocyte_carcinoma"]).sum(1)
    neg = brute_force(probs, dermamnist, ["benign"]).sum(1)
    # bcc lies under keratinocyte carcinoma too: counted once
    got = conditional(probs, dermamnist, ["MEL", "malignant_keratinocytic", "bcc"], ["benign"])
    np.testing.assert_allclose(got, pos / (pos + neg), rtol=1e-12)
    cut = ("benign", "melanoma", "keratinocyte_carcinoma")
    cut_probs = brute_force(probs, dermamnist, list(cut))
    np.testing.assert_allclose(
        conditional(cut_probs, dermamnist, ["melanoma"], ["benign"], columns=cut),
        cut_probs[:, 1] / (cut_probs[:, 1] + cut_probs[:, 0]),
        rtol=1e-12,
    )


def test_conditional_overlap_and_undefined_rows(dermamnist: Taxonomy) -> None:
    with pytest.raises(RollUpError, match="overlap: 1 leaves lie under both \\('melanoma'\\)"):
        conditional(np.full((1, 7), 1 / 7), dermamnist, ["malignant"], ["mel", "nv"])
    with pytest.raises(RollUpError, match="at least one"):
        conditional(np.full((1, 7), 1 / 7), dermamnist, [], ["nv"])
    probs = np.zeros((2, 7))
    probs[0, 1] = 1.0  # all mass on benign keratosis: melanoma vs nevus undefined
    probs[1, 4] = 1.0  # melanoma
    assert conditional(probs, dermamnist, "mel", "nv").tolist() == [0.5, 1.0]
    got = conditional(probs, dermamnist, "mel", "nv", undefined=float("nan"))
    assert np.isnan(got[0]) and got[1] == 1.0
    x = torch.from_numpy(probs).requires_grad_()
    conditional(x, dermamnist, "mel", "nv").sum().backward()
    assert torch.isfinite(x.grad).all()


# --- modules ------------------------------------------------------------------------------------------------


def test_module_state_dict_round_trip_and_buffers(dermamnist: Taxonomy) -> None:
    module = RollUp(dermamnist, ["malignant", "benign"])
    assert module.state_dict() == {}  # the index is rebuilt from the taxonomy, never stored
    fresh = RollUp(dermamnist, ["malignant", "benign"])
    fresh.load_state_dict(module.state_dict())
    x = torch.from_numpy(random_probs(3, 7))
    assert torch.equal(fresh(x), module(x))
    buffers = {name for name, _ in module.named_buffers()}
    assert buffers == {"perm", "start", "end", "sum_start", "sum_end", "take"}
    assert "malignant" in repr(module)


def test_module_moves_dtype(dermamnist: Taxonomy) -> None:
    module = RollUp(dermamnist).to(torch.float64)  # buffers are integer: unchanged
    assert module.start.dtype == torch.int64
    assert module(torch.from_numpy(random_probs(2, 7))).dtype == torch.float64


@CUDA
@pytest.mark.parametrize("cls", [RollUp, LogRollUp])
def test_module_on_cuda(dermamnist: Taxonomy, cls: type) -> None:
    module = cls(dermamnist, columns=("malignant", "benign")).to("cuda")
    assert module.start.device.type == "cuda"
    x = torch.from_numpy(random_probs(5, 2)).cuda()
    if cls is LogRollUp:
        x = x.log()
    cpu = cls(dermamnist, columns=("malignant", "benign"))(x.cpu())
    torch.testing.assert_close(module(x).cpu(), cpu)
    torch.testing.assert_close(
        rollup(torch.exp(x) if cls is LogRollUp else x, dermamnist, columns=("malignant", "benign")).cpu(),
        rollup(
            torch.exp(x.cpu()) if cls is LogRollUp else x.cpu(), dermamnist, columns=("malignant", "benign")
        ),
    )


@pytest.mark.parametrize("cls", [RollUp, LogRollUp])
@pytest.mark.parametrize("nodes", [None, ["malignant"]])
def test_script_and_export(dermamnist: Taxonomy, cls: type, nodes: list[str] | None) -> None:
    import warnings

    module = cls(dermamnist, nodes, columns=("melanoma", "benign", "keratinocyte_carcinoma"))
    x = torch.from_numpy(random_probs(6, 3, seed=9))
    if cls is LogRollUp:
        x = x.log()
    expected = module(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in favour of export / compile
        scripted = torch.jit.script(module)
    torch.testing.assert_close(scripted(x), expected)
    exported = torch.export.export(module, (x,))
    torch.testing.assert_close(exported.module()(x), expected)


def test_compile_traces_without_graph_breaks(dermamnist: Taxonomy) -> None:
    """Dynamo traces the module in one graph (backend "eager" keeps this quick: no code generation)."""
    module = RollUp(dermamnist)
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    x = torch.from_numpy(random_probs(6, 7, seed=10))
    torch.testing.assert_close(compiled(x), module(x))


def test_benchmark_smoke_run(tmp_path: Path) -> None:
    """The benchmark script runs end to end at tiny sizes and writes its JSON (no timing is asserted)."""
    import importlib.util
    import json

    script = TAXONOMY_DIR.parent / "benchmarks" / "rollup.py"
    spec = importlib.util.spec_from_file_location("bench_rollup", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        assert (
            bench.main(
                [
                    "--quick",
                    "--leaves",
                    "12",
                    "--batch",
                    "8",
                    "--threads",
                    "1",
                    "--out",
                    str(tmp_path / "r.json"),
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "r.json").read_text())
    methods = {r["method"] for r in report["results"]}
    assert {"copy floor", "hierclf rollup()", "dense probs @ A", "Python loop over nodes"} <= methods


# --- the plan (hierclf.rollup_engine.request_plans) ----------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(tax=trees, seed=st.integers(0, 1000))
def test_plan_ranges_of_a_cut_are_the_taxonomy_s(tax: Taxonomy, seed: int) -> None:
    """The plan's column ranges (anchors in pre-order, residual classes allowed) equal
    ``Taxonomy.column_ranges`` on plain cuts, single-child chains included."""
    from hierclf.rollup_engine.request_plans import _column_ranges

    rng = random.Random(seed)
    cut, stack = [], [tax.root]
    while stack:
        n = stack.pop()
        if tax.is_leaf(n) or rng.random() < 0.4:
            cut.append(n)
        else:
            stack.extend(tax.children(n))
    ordered = tax.cut(cut)
    for got, expected in zip(_column_ranges(tax, ordered), tax.column_ranges(ordered)):
        assert np.array_equal(got, expected)


def test_plan_ranges_with_single_child_chains() -> None:
    from hierclf.rollup_engine.request_plans import _column_ranges
    from hierclf.taxonomy.shipped import shipped_taxonomy

    tax = Taxonomy.from_yaml(shipped_taxonomy("isic"))
    # a leaf whose parent has no other child is replaced by that parent: the cut holds the chain's top
    lifted = [p if len(tax.children(p := tax.parent(leaf) or leaf)) == 1 else leaf for leaf in tax.leaves]
    cut = tax.cut(dict.fromkeys(lifted))
    assert set(cut) - set(tax.leaves)
    for got, expected in zip(_column_ranges(tax, cut), tax.column_ranges(cut)):
        assert np.array_equal(got, expected)


@settings(max_examples=25, deadline=None)
@given(tax=trees, seed=st.integers(0, 1000), data=st.data())
def test_log_rollup_of_some_nodes_is_the_same_as_of_all(
    tax: Taxonomy, seed: int, data: st.DataObject
) -> None:
    # the log kernel's tree is cut down to the wanted nodes' subtrees: every wanted node is computed as in
    # the whole tree, bit for bit
    nodes = data.draw(st.lists(st.sampled_from(tax.nodes), min_size=1, max_size=6))
    x = np.log(random_probs(7, len(tax.leaves), seed))
    every = log_rollup(x, tax)
    position = {n: k for k, n in enumerate(tax.nodes)}
    assert np.array_equal(log_rollup(x, tax, nodes), every[:, [position[n] for n in nodes]])
