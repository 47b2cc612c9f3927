"""One list of cases through every face of the roll-up, against a brute-force sum over ``nx.descendants``.

Faces: :func:`~hierclf.functional.rollup` on numpy arrays and on tensors, ``rollup(out=)``, :class:`RollUp`
eager and scripted, :class:`LogRollUp`, :func:`~hierclf.functional.log_rollup`,
:func:`~hierclf.functional.conditional` and :meth:`LeafHead.rollup`. Cases: the shipped trees, random trees
and a tree with single-child chains; float16, bfloat16, float32, float64; input columns that are the
leaves, a cut given out of pre-order, and a cut with residual classes; CPU and CUDA (skipped without one).
The error cases run through every face too and must raise the same exception with the same message.
Then the numpy core against the torch path, bit for bit (float32 and float64).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np
import pytest
import torch

from hierclf import Taxonomy, UnknownNameError
from hierclf.classes.esteva import residual_class, residual_node
from hierclf.functional import RollUpError, conditional, log_rollup, rollup, rollup_nodes
from hierclf.nn.head import LeafHead
from hierclf.nn.rollup_modules import LogRollUp, RollUp
from hierclf.rollup_engine import cpu_kernels
from hierclf.taxonomy.shipped import shipped_taxonomy
from hierclf.taxonomy.synthetic import random_taxonomy

CHAINS = """
name: chains
root:
  id: root
  name: Root
  children:
    - {id: x, name: X, children: [{id: y, name: Y, children: [{id: l1, name: L1}, {id: l2, name: L2}]}]}
    - {id: z, name: Z, children: [{id: l3, name: L3}]}
    - {id: w, name: W, children: [{id: l4, name: L4}, {id: l5, name: L5}, {id: l6, name: L6}]}
"""


@functools.cache
def tree(name: str) -> Taxonomy:
    if name == "chains":
        return Taxonomy.from_text(CHAINS)
    if name.startswith("random"):
        n, seed = (int(v) for v in name.split("-")[1:])
        return random_taxonomy(n, max_depth=6, seed=seed)
    return Taxonomy.from_yaml(shipped_taxonomy(name))


TREES = ["dermamnist", "esteva", "isic", "fitzpatrick17k", "random-40-1", "random-300-2", "chains"]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
#: absolute tolerance of a probability / a log-probability in each output dtype (one final rounding)
PROB_ATOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-6, torch.float64: 1e-12}
LOG_ATOL = {torch.float16: 2e-2, torch.bfloat16: 1e-1, torch.float32: 1e-5, torch.float64: 1e-10}
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    ),
]


def _internal_child(tax: Taxonomy, node: str) -> str | None:
    return next((c for c in tax.children(node) if not tax.is_leaf(c)), None)


@functools.cache
def columns_of(name: str, kind: str) -> tuple[str, ...] | None:
    """``leaves``: None; ``cut``: the root's children with one branch refined, reversed (out of
    pre-order); ``residual``: the root's children with one internal child split into its children plus
    its residual class, shuffled."""
    tax = tree(name)
    if kind == "leaves":
        return None
    top = list(tax.children(tax.root))
    split = next((c for c in top if _internal_child(tax, c) is not None or not tax.is_leaf(c)), None)
    if split is None:
        pytest.skip(f"{name}: no internal node below the root to split")
    cut = [c for c in top if c != split] + list(tax.children(split))
    if kind == "cut":
        return tuple(reversed(cut))
    with_residual = [*cut, residual_class(split)]
    order = np.random.default_rng(len(with_residual)).permutation(len(with_residual))
    return tuple(with_residual[k] for k in order)


@functools.cache
def _membership(tax: Taxonomy, nodes: tuple[str, ...], columns: tuple[str, ...]) -> np.ndarray:
    """``(n_columns, n_nodes)``: 1 where the column is anchored at the node or one of its networkx
    descendants (a residual class at its own node)."""
    anchors = [residual_node(c) or c for c in columns]
    member = np.zeros((len(columns), len(nodes)))
    for k, node in enumerate(nodes):
        under = {node} | nx.descendants(tax.graph, node)
        member[[j for j, a in enumerate(anchors) if a in under], k] = 1.0
    return member


def brute_force(
    values: np.ndarray, tax: Taxonomy, nodes: tuple[str, ...], columns: tuple[str, ...]
) -> np.ndarray:
    """P(node): the sum of the columns under it (:func:`_membership`), in float64."""
    return values.astype(np.float64) @ _membership(tax, tuple(nodes), tuple(columns))


def probabilities(n: int, dtype: torch.dtype, device: str, seed: int = 0) -> torch.Tensor:
    p = np.random.default_rng(seed).dirichlet(np.ones(n), size=9).reshape(3, 3, n)  # leading dims too
    return torch.from_numpy(p).to(dtype=dtype, device=device)


def case(name: str, kind: str) -> tuple[Taxonomy, tuple[str, ...] | None, tuple[str, ...]]:
    tax = tree(name)
    columns = columns_of(name, kind)
    return (
        tax,
        columns,
        tax.leaves
        if columns is None
        else tuple(tax.resolve(c) if residual_node(c) is None else c for c in columns),
    )


@functools.cache
def scripted(name: str, kind: str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in favour of export / compile
        return torch.jit.script(RollUp(tree(name), columns=columns_of(name, kind)))


def _as_array(x: Any) -> np.ndarray:
    return (
        x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    )


# --- every face against the brute force ---------------------------------------------------------------------


CASES = pytest.mark.parametrize("name", TREES)
KINDS = pytest.mark.parametrize("kind", ["leaves", "cut", "residual"])
ON = pytest.mark.parametrize("device", DEVICES)


def _check_probability_faces(name: str, kind: str, dtype: torch.dtype, device: str) -> None:
    tax, columns, names = case(name, kind)
    x = probabilities(len(names), dtype, device)
    nodes = rollup_nodes(tax, columns=columns)
    expected = brute_force(_as_array(x).reshape(-1, len(names)), tax, nodes, names).reshape(3, 3, -1)
    reference = rollup(x, tax, columns=columns)
    assert (
        reference.dtype == dtype and reference.device.type == device and reference.shape == (3, 3, len(nodes))
    )
    out = torch.empty_like(reference)
    faces: dict[str, Any] = {
        "functional tensor": reference,
        "rollup(out=)": rollup(x, tax, columns=columns, out=out),
        "RollUp": RollUp(tax, columns=columns).to(device)(x),
        "RollUp scripted": scripted(name, kind).to(device)(x),
    }
    assert faces["rollup(out=)"] is out
    if dtype != torch.bfloat16 and device == "cpu":  # numpy has no bfloat16
        faces["functional numpy"] = rollup(x.numpy(), tax, columns=columns)
        assert faces["functional numpy"].dtype == x.numpy().dtype
    for face, got in faces.items():
        np.testing.assert_allclose(_as_array(got), expected, atol=PROB_ATOL[dtype], rtol=0, err_msg=face)
        if dtype in (torch.float32, torch.float64):  # one compute behind every face: the same bits
            assert np.array_equal(_as_array(got), _as_array(reference)), face


@ON
@KINDS
@CASES
def test_probability_faces_match_brute_force(name: str, kind: str, device: str) -> None:
    for dtype in DTYPES:  # a loop, not a parameter: hundreds of tiny cases stay fast
        _check_probability_faces(name, kind, dtype, device)


def _check_log_faces(name: str, kind: str, dtype: torch.dtype, device: str) -> None:
    tax, columns, names = case(name, kind)
    lp = probabilities(len(names), torch.float64, device, seed=1).log().to(dtype)
    nodes = rollup_nodes(tax, columns=columns)
    exp_in = np.exp(_as_array(lp).reshape(-1, len(names)))
    expected = np.log(brute_force(exp_in, tax, nodes, names)).reshape(3, 3, -1)
    faces = {
        "log_rollup tensor": log_rollup(lp, tax, columns=columns),
        "LogRollUp": LogRollUp(tax, columns=columns).to(device)(lp),
    }
    if dtype != torch.bfloat16 and device == "cpu":
        faces["log_rollup numpy"] = log_rollup(lp.numpy(), tax, columns=columns)
    for face, got in faces.items():
        assert got.dtype == (lp.numpy().dtype if isinstance(got, np.ndarray) else dtype), face
        np.testing.assert_allclose(_as_array(got), expected, atol=LOG_ATOL[dtype], rtol=0, err_msg=face)


@ON
@KINDS
@CASES
def test_log_faces_match_log_of_brute_force(name: str, kind: str, device: str) -> None:
    for dtype in DTYPES:  # a loop, not a parameter: hundreds of tiny cases stay fast
        _check_log_faces(name, kind, dtype, device)


def _disjoint_pair(tax: Taxonomy, columns: tuple[str, ...] | None) -> tuple[str, str]:
    from hierclf.rollup_engine.request_plans import plan

    request = plan(tax, None, columns)
    for i in range(len(request.nodes)):
        for j in range(i + 1, len(request.nodes)):
            if request.end[i] <= request.start[j] or request.end[j] <= request.start[i]:
                return request.nodes[i], request.nodes[j]
    raise AssertionError("no two disjoint nodes")


def _check_conditional_faces(name: str, kind: str, dtype: torch.dtype, device: str) -> None:
    tax, columns, names = case(name, kind)
    x = probabilities(len(names), dtype, device, seed=2)
    pos, neg = _disjoint_pair(tax, columns)
    sides = brute_force(_as_array(x).reshape(-1, len(names)), tax, (pos, neg), names)
    expected = (sides[:, 0] / sides.sum(1)).reshape(3, 3)
    faces = {"conditional tensor": conditional(x, tax, pos, neg, columns=columns)}
    if dtype != torch.bfloat16 and device == "cpu":
        faces["conditional numpy"] = conditional(x.numpy(), tax, pos, neg, columns=columns)
    for face, got in faces.items():
        assert got.shape == (3, 3), face
        np.testing.assert_allclose(_as_array(got), expected, atol=4 * PROB_ATOL[dtype], rtol=0, err_msg=face)
    if "conditional numpy" in faces and dtype in (torch.float32, torch.float64):
        assert np.array_equal(faces["conditional numpy"], faces["conditional tensor"].numpy())


@ON
@KINDS
@CASES
def test_conditional_faces_match_brute_force(name: str, kind: str, device: str) -> None:
    for dtype in DTYPES:  # a loop, not a parameter: hundreds of tiny cases stay fast
        _check_conditional_faces(name, kind, dtype, device)


@functools.cache
def head_of(name: str, kind: str) -> LeafHead:
    return LeafHead(4, tree(name), columns_of(name, kind))


def _check_leaf_head(name: str, kind: str, dtype: torch.dtype, device: str) -> None:
    head = head_of(name, kind).to(device)
    logits = (torch.randn(3, 3, head.n_classes, generator=torch.Generator().manual_seed(3)) * 3).to(dtype)
    probs = torch.softmax(logits.to(device).float().double(), -1).cpu().numpy().reshape(-1, head.n_classes)
    got = head.rollup(logits.to(device))
    assert got.dtype == torch.float32 and got.device.type == device and got.shape == (3, 3, len(head.nodes))
    expected = brute_force(probs, head.taxonomy, head.nodes, head.classes).reshape(3, 3, -1)
    np.testing.assert_allclose(_as_array(got), expected, atol=2e-6, rtol=0)
    some = list(head.nodes[::3])
    picked = head.rollup(logits.to(device), some)
    assert torch.equal(picked, got[..., [head.nodes.index(n) for n in some]])


@ON
@KINDS
@CASES
def test_leaf_head_rollup_is_the_softmax_rolled_up(name: str, kind: str, device: str) -> None:
    for dtype in DTYPES:  # a loop, not a parameter: hundreds of tiny cases stay fast
        _check_leaf_head(name, kind, dtype, device)


# --- the error cases, the same on every face ----------------------------------------------------------------


def _faces(tax: Taxonomy, columns: tuple[str, ...] | None) -> dict[str, Callable[..., Any]]:
    """Every face as ``f(values, nodes=None)``; ``values`` as given (numpy faces get numpy)."""
    pos, neg = _disjoint_pair(tax, columns)

    def as_numpy(v: Any) -> Any:
        return v.numpy() if isinstance(v, torch.Tensor) else v

    def as_tensor(v: Any) -> Any:
        return torch.from_numpy(v) if isinstance(v, np.ndarray) else v

    return {
        "functional numpy": lambda v, nodes=None: rollup(as_numpy(v), tax, nodes, columns=columns),
        "functional tensor": lambda v, nodes=None: rollup(as_tensor(v), tax, nodes, columns=columns),
        "log_rollup numpy": lambda v, nodes=None: log_rollup(as_numpy(v), tax, nodes, columns=columns),
        "log_rollup tensor": lambda v, nodes=None: log_rollup(as_tensor(v), tax, nodes, columns=columns),
        "conditional numpy": lambda v, nodes=None: conditional(
            as_numpy(v), tax, nodes or pos, neg, columns=columns
        ),
        "conditional tensor": lambda v, nodes=None: conditional(
            as_tensor(v), tax, nodes or pos, neg, columns=columns
        ),
        "RollUp": lambda v, nodes=None: RollUp(tax, nodes, columns=columns)(as_tensor(v)),
        "LogRollUp": lambda v, nodes=None: LogRollUp(tax, nodes, columns=columns)(as_tensor(v)),
    }


def _raised(fn: Callable[[], Any]) -> tuple[type, str]:
    with pytest.raises((RollUpError, UnknownNameError)) as info:
        fn()
    return type(info.value), str(info.value)


def _same_everywhere(results: dict[str, tuple[type, str]]) -> None:
    first = next(iter(results.values()))
    for face, got in results.items():
        assert got == first, f"{face}: {got} differs from {first}"


BAD_INPUTS = {
    "wrong last dimension": lambda n: np.full((2, n + 1), 0.1),
    "0-d input": lambda n: np.array(0.5),
    "integer dtype": lambda n: np.zeros((2, n), dtype=np.int64),
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize("kind", ["leaves", "cut", "residual"])
@pytest.mark.parametrize("name", ["dermamnist", "isic", "chains"])
def test_bad_inputs_raise_the_same_error_on_every_face(name: str, kind: str, bad: str) -> None:
    tax = tree(name)
    columns = columns_of(name, kind)
    head = head_of(name, kind)
    in_order = None if columns is None else head.classes  # the head's columns: its classes, pre-order
    values = BAD_INPUTS[bad](head.n_classes)
    results = {face: _raised(lambda f=f: f(values)) for face, f in _faces(tax, in_order).items()}
    results["LeafHead.rollup"] = _raised(lambda: head.rollup(torch.from_numpy(values)))
    _same_everywhere(results)
    assert results["LeafHead.rollup"][0] is RollUpError
    kind_word = "leaf" if columns is None else "class"
    if bad == "wrong last dimension":
        assert f"one column per {kind_word} (" in results["RollUp"][1]
    if columns is not None:  # the cut given out of pre-order: the message names the columns as given
        shuffled = {face: _raised(lambda f=f: f(values)) for face, f in _faces(tax, columns).items()}
        _same_everywhere(shuffled)


@pytest.mark.parametrize("kind", ["cut", "residual"])
@pytest.mark.parametrize("name", ["dermamnist", "isic", "chains", "random-300-2"])
def test_node_below_the_cut_raises_the_same_error_on_every_face(name: str, kind: str) -> None:
    tax = tree(name)
    head = head_of(name, kind)
    below = next(n for n in tax.nodes if n not in head.nodes)
    values = np.full((2, head.n_classes), 1.0 / head.n_classes)
    results = {face: _raised(lambda f=f: f(values, [below])) for face, f in _faces(tax, head.classes).items()}
    results["LeafHead.rollup"] = _raised(lambda: head.rollup(torch.from_numpy(values), [below]))
    _same_everywhere(results)
    assert (
        results["RollUp"][0] is RollUpError
        and f"node {below!r} lies below the input columns" in results["RollUp"][1]
    )


@pytest.mark.parametrize("kind", ["leaves", "cut", "residual"])
def test_unknown_node_raises_the_same_error_on_every_face(kind: str) -> None:
    tax = tree("dermamnist")
    head = head_of("dermamnist", kind)
    values = np.full((2, head.n_classes), 1.0 / head.n_classes)
    results = {
        face: _raised(lambda f=f: f(values, ["malignat"])) for face, f in _faces(tax, head._columns).items()
    }
    results["LeafHead.rollup"] = _raised(lambda: head.rollup(torch.from_numpy(values), ["malignat"]))
    _same_everywhere(results)
    assert results["RollUp"][0] is UnknownNameError and "did you mean 'malignant'" in results["RollUp"][1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_of_a_wrong_shape_raises_the_same_error_on_every_face(dtype: type) -> None:
    tax = tree("isic")
    x = np.full((4, len(tax.leaves)), 1.0 / len(tax.leaves), dtype=dtype)
    wrong = np.empty((4, 3), dtype=dtype)
    results = {
        "functional numpy": _raised(lambda: rollup(x, tax, out=wrong)),
        "functional tensor": _raised(lambda: rollup(torch.from_numpy(x), tax, out=torch.from_numpy(wrong))),
    }
    _same_everywhere(results)
    assert results["functional numpy"][0] is RollUpError
    assert results["functional numpy"][1].startswith(f"out must be a contiguous {np.dtype(dtype).name} array")
    with pytest.raises(
        RollUpError, match="out must be"
    ):  # a numpy input takes a numpy out, a tensor a tensor
        rollup(x, tax, out=torch.empty(4, len(tax.nodes), dtype=torch.from_numpy(x).dtype))


# --- the numpy core against the torch path, bit for bit -----------------------------------------------------


def _numpy_and_torch(
    fn: Callable[..., Any], x: np.ndarray, *args: Any, **kw: Any
) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(fn(x, *args, **kw)), fn(torch.from_numpy(x), *args, **kw).numpy()


@pytest.mark.parametrize("numba", [True, False], ids=["kernels", "numpy fallback"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["isic", "fitzpatrick17k", "random-300-2", "chains"])
def test_numpy_core_is_bit_identical_to_the_torch_path(
    name: str, dtype: type, numba: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if numba and not cpu_kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    if not numba:
        monkeypatch.setenv("HIERCLF_NO_NUMBA", "1")  # both sides: numpy fallback against torch ops
    tax = tree(name)
    rng = np.random.default_rng(7)
    x = rng.dirichlet(np.full(len(tax.leaves), 0.3), size=257).astype(dtype)
    x[:5, :3] = 0.0  # exact zeros, and a row with no mass on a side below
    top = tax.children(tax.root)
    widest = max(tax.nodes, key=lambda n: len(tax.leaves_under(n)) if n != tax.root else -1)
    node_sets: list[Any] = [None, list(top[:3]) + [tax.leaves[0]], widest, tax.leaves[-1]]
    for nodes in node_sets:
        a, b = _numpy_and_torch(rollup, x, tax, nodes)
        assert np.array_equal(a, b), nodes
    pos, neg = top[0], list(top[1:])
    a, b = _numpy_and_torch(conditional, x, tax, pos, neg)
    assert np.array_equal(a, b)
    if numba:  # the log kernel on both faces; the numpy fallback is equal to rounding only
        logs = np.log(x + 1e-30).astype(dtype)
        for nodes in node_sets:
            a, b = _numpy_and_torch(log_rollup, logs, tax, nodes)
            assert np.array_equal(a, b), nodes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_order_sum_is_torch_sum_bit_for_bit(dtype: type) -> None:
    """The numpy core's single-node and conditional sums follow torch's CPU order of additions: every
    width around torch's vector (8 or 4 lanes), its four-vector groups and its 16-step cascade levels."""
    from hierclf.rollup_engine.numpy_ops import torch_order_sum

    rng = np.random.default_rng(11)
    x = (rng.dirichlet(np.full(5000, 0.2), size=67) * rng.choice([1.0, 1e-3, 1e3], size=(67, 1))).astype(
        dtype
    )
    for width in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 127, 255, 256, 257, 1023, 4097):
        block = x[:, 13 : 13 + width]  # a slice of wider rows, as a node's columns are
        expected = torch.from_numpy(block).sum(1, dtype=torch.from_numpy(block).dtype).numpy()
        assert np.array_equal(torch_order_sum(np.ascontiguousarray(block)), expected), width
        # index_select (a contiguous copy), then sum in float64: a cut out of order, float32 cast first
        gathered = np.ascontiguousarray(x[:, rng.permutation(5000)[:width]])
        expected = torch.from_numpy(gathered).sum(1, dtype=torch.float64).numpy()
        assert np.array_equal(torch_order_sum(gathered.astype(np.float64)), expected), width
