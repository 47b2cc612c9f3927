"""LeafHead: shapes, class order, label mapping and errors; roll-up against brute-force sums over
``nx.descendants``; state dict, TorchScript and torch.export."""

from __future__ import annotations

import io
import warnings

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from hierclf import Taxonomy
from hierclf.classes.esteva import partition, residual_node
from hierclf.errors import HierclfError, TaxonomyError, UnknownNameError
from hierclf.nn.head import LeafHead
from hierclf.taxonomy.synthetic import random_taxonomy

COARSE = ["benign", "melanoma", "keratinocyte_carcinoma"]


def brute_force_rollup(
    tax: Taxonomy, classes: tuple[str, ...], probs: np.ndarray, nodes: list[str]
) -> np.ndarray:
    """P(node) = sum of the class probabilities whose node is the node itself or one of its descendants
    (networkx), a residual class counting for its own node."""
    out = np.zeros((probs.shape[0], len(nodes)))
    for j, n in enumerate(nodes):
        under = {n} | nx.descendants(tax.graph, n)
        for k, c in enumerate(classes):
            if (residual_node(c) or c) in under:
                out[:, j] += probs[:, k]
    return out


# --- structure ----------------------------------------------------------------------------------------------


def test_default_is_leaves(dermamnist: Taxonomy) -> None:
    head = LeafHead(32, dermamnist)
    assert head.classes == dermamnist.leaves and head.n_classes == 7 and head.in_features == 32
    assert head(torch.randn(5, 32)).shape == (5, 7)
    assert head.nodes == dermamnist.nodes  # every node can be answered from the leaves
    assert head.residual == ()


def test_classes_sorted_into_preorder_and_aliases_resolved(dermamnist: Taxonomy) -> None:
    head = LeafHead(8, dermamnist, classes=["malignant_keratinocytic", "benign", "mel"])
    assert head.classes == ("benign", "melanoma", "keratinocyte_carcinoma")
    assert head.nodes == ("skin_lesion", "benign", "malignant", "melanoma", "keratinocyte_carcinoma")


@pytest.mark.parametrize(
    "classes, match",
    [
        (["benign", "melanoma"], "uncovered"),
        (["benign", "malignant", "melanoma"], "overlap"),
        (["benign", "benign", "malignant"], "more than once"),
    ],
)
def test_classes_must_be_a_cut(dermamnist: Taxonomy, classes: list[str], match: str) -> None:
    with pytest.raises(TaxonomyError, match=match):
        LeafHead(8, dermamnist, classes=classes)


def test_bad_arguments(dermamnist: Taxonomy) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'melanoma'"):
        LeafHead(8, dermamnist, classes=["benign", "melanomma", "keratinocyte_carcinoma"])
    with pytest.raises(HierclfError, match="in_features must be a positive integer"):
        LeafHead(0, dermamnist)
    with pytest.raises(HierclfError, match="dropout must be in"):
        LeafHead(8, dermamnist, dropout=1.0)
    with pytest.raises(HierclfError, match="single string"):
        LeafHead(8, dermamnist, classes="benign")


def test_no_bias_and_dropout(dermamnist: Taxonomy) -> None:
    head = LeafHead(8, dermamnist, bias=False, dropout=0.5)
    assert head.linear.bias is None
    x = torch.randn(64, 8)
    head.eval()
    torch.testing.assert_close(head(x), x @ head.linear.weight.T)
    head.train()
    assert not torch.allclose(head(x), x @ head.linear.weight.T)


# --- class_index --------------------------------------------------------------------------------------------


def test_class_index_leaves(dermamnist: Taxonomy) -> None:
    head = LeafHead(8, dermamnist)
    idx = head.class_index(["melanoma", "nv", "BCC", "Dermatofibroma", "melanoma"])
    assert idx.dtype == torch.long
    expected = [
        dermamnist.leaves.index(n)
        for n in ("melanoma", "melanocytic_nevus", "basal_cell_carcinoma", "dermatofibroma", "melanoma")
    ]
    assert idx.tolist() == expected
    assert head.class_index(np.array(["vasc"])).tolist() == [dermamnist.leaves.index("vascular_lesion")]
    assert head.class_index([]).shape == (0,)
    assert head.class_index("mel").ndim == 0


def test_class_index_labels_below_a_class(dermamnist: Taxonomy) -> None:
    head = LeafHead(8, dermamnist, classes=COARSE)
    # nevus, dermatofibroma and the benign node itself are all class 0; bcc and akiec are KC (2)
    labels = ["nv", "df", "benign", "benign_dermal", "mel", "bcc", "akiec", "keratinocyte_carcinoma"]
    assert head.class_index(labels).tolist() == [0, 0, 0, 0, 1, 2, 2, 2]


def test_class_index_above_cut_names_spanned_classes(dermamnist: Taxonomy) -> None:
    head = LeafHead(8, dermamnist, classes=COARSE)
    with pytest.raises(
        HierclfError,
        match=r"label 'cancer' \(node 'malignant'\) lies above the training "
        r"classes: it spans 2 classes "
        r"\('melanoma', 'keratinocyte_carcinoma'\)",
    ):
        head.class_index(["mel", "cancer"])
    with pytest.raises(HierclfError, match="spans 3 classes"):
        head.class_index(["skin_lesion"])
    with pytest.raises(UnknownNameError, match="did you mean"):
        head.class_index(["melanomma"])


def _residual_tree() -> tuple[Taxonomy, dict[str, int]]:
    tax = Taxonomy.from_text("""
name: res
root:
  id: root
  name: Root
  children:
    - {id: a, name: A, children: [{id: a1, name: A1}, {id: a2, name: A2}]}
    - id: b
      name: B
      aliases: [bee]
      children:
        - {id: b1, name: B1, children: [{id: b1x, name: B1x}, {id: b1y, name: B1y}]}
        - {id: b2, name: B2}
    - {id: c, name: C}
""")
    return tax, {"a1": 3, "a2": 4, "b1x": 2, "b1y": 2, "b2": 5, "c": 1, "b": 3}


def test_residual_classes_from_partition() -> None:
    tax, counts = _residual_tree()
    part = partition(tax, counts, max_class_size=10)
    head = LeafHead.from_partition(4, part)
    assert head.classes == part.classes == ("a", "b:residual", "b1", "b2", "c")
    assert head.residual == ("b",) and head.cut == ("a", "b1", "b2", "c")
    assert head.class_index(["bee", "b1y", "b2", "a2"]).tolist() == [1, 2, 3, 0]
    assert head.class_index(["b", "b1x", "c"]).tolist() == part.class_index(["b", "b1x", "c"]).tolist()
    with pytest.raises(HierclfError, match=r"spans 5 classes \('a', 'b:residual', 'b1', 'b2', 'c'\)"):
        head.class_index(["root"])
    # order given does not matter
    assert LeafHead(4, tax, ["c", "b2", "b1", "b:residual", "a"]).classes == head.classes


@pytest.mark.parametrize(
    "classes, match",
    [
        (["a", "b", "c", "b:residual"], "needs node 'b' to lie above"),
        (["a", "b1", "b2", "c", "b1x:residual"], "needs node 'b1x' to lie above"),
        (["a", "b1", "b2", "c", "zz:residual"], "unknown node 'zz' in residual class"),
        (["a", "b1", "b2", "c", "b:residual", "b:residual"], "more than once"),
    ],
)
def test_bad_residual_classes(classes: list[str], match: str) -> None:
    tax, _ = _residual_tree()
    with pytest.raises(HierclfError, match=match):
        LeafHead(4, tax, classes)


# --- probabilities ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_log_probs_and_probs(dermamnist: Taxonomy, dtype: torch.dtype) -> None:
    head = LeafHead(8, dermamnist)
    logits = torch.randn(6, 7).to(dtype)
    lp = head.log_probs(logits)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, F.log_softmax(logits.float(), dim=-1))
    torch.testing.assert_close(head.probs(logits).sum(-1), torch.ones(6))


@pytest.fixture()
def functional() -> object:
    return pytest.importorskip(
        "hierclf.functional", reason="the roll-up engine (hierclf.functional) is not written yet"
    )


@pytest.mark.usefixtures("functional")
@pytest.mark.parametrize("classes", [None, COARSE, ["benign", "malignant"], ["skin_lesion"]])
def test_rollup_matches_brute_force(dermamnist: Taxonomy, classes: list[str] | None) -> None:
    head = LeafHead(8, dermamnist, classes)
    logits = torch.randn(10, head.n_classes) * 3
    probs = torch.softmax(logits.double(), -1).numpy()
    got = head.rollup(logits)
    assert got.shape == (10, len(head.nodes)) and got.dtype == torch.float32
    expected = brute_force_rollup(dermamnist, head.classes, probs, list(head.nodes))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    some = ["malignant", "skin_lesion", "mel" if classes != ["benign", "malignant"] else "benign"]
    resolved = [dermamnist.resolve(n) for n in some]
    if all(n in head.nodes for n in resolved):
        np.testing.assert_allclose(
            head.rollup(logits, some).numpy(),
            brute_force_rollup(dermamnist, head.classes, probs, resolved),
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.usefixtures("functional")
def test_rollup_with_residual_classes() -> None:
    tax, counts = _residual_tree()
    head = LeafHead.from_partition(4, partition(tax, counts, max_class_size=10))
    logits = torch.randn(7, 5, dtype=torch.float16)
    probs = torch.softmax(logits.double(), -1).numpy()
    got = head.rollup(logits)
    assert head.nodes == ("root", "a", "b", "b1", "b2", "c")
    np.testing.assert_allclose(
        got.numpy(), brute_force_rollup(tax, head.classes, probs, list(head.nodes)), rtol=1e-4, atol=1e-5
    )
    # b = residual + b1 + b2; root = everything
    np.testing.assert_allclose(got[:, 0].numpy(), 1.0, rtol=1e-5)
    sub = head.rollup(logits, ["b", "bee", "root"])
    np.testing.assert_allclose(sub.numpy(), got[:, [2, 2, 0]].numpy(), rtol=1e-6)


@pytest.mark.usefixtures("functional")
def test_rollup_rejects_nodes_below_the_classes(dermamnist: Taxonomy) -> None:
    head = LeafHead(8, dermamnist, classes=COARSE)
    # the messages of every face of the roll-up (hierclf.rollup_engine.request_plans); RollUpError is a
    # HierclfError
    with pytest.raises(
        HierclfError,
        match="node 'bcc' lies below the input columns: the probabilities only cover its ancestor "
        "'keratinocyte_carcinoma'",
    ):
        head.rollup(torch.randn(2, 3), ["malignant", "bcc"])
    with pytest.raises(
        HierclfError,
        match=r"roll-up input has shape \(2, 4\); expected \(\.\.\., 3\) with one column per class",
    ):
        head.rollup(torch.randn(2, 4))


@pytest.mark.usefixtures("functional")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_leaves=st.integers(2, 60), seed=st.integers(0, 1000), limit=st.integers(1, 400))
def test_rollup_property_random_partitions(n_leaves: int, seed: int, limit: int) -> None:
    tax = random_taxonomy(n_leaves, max_depth=5, max_fan_out=4, seed=seed)
    rng = np.random.default_rng(seed)
    counts = {n: int(rng.integers(0, 100)) for n in tax.nodes if tax.is_leaf(n) or rng.random() < 0.3}
    head = LeafHead.from_partition(3, partition(tax, counts, max_class_size=limit))
    logits = torch.randn(4, head.n_classes, generator=torch.Generator().manual_seed(seed))
    probs = torch.softmax(logits.double(), -1).numpy()
    np.testing.assert_allclose(
        head.rollup(logits).numpy(),
        brute_force_rollup(tax, head.classes, probs, list(head.nodes)),
        rtol=1e-5,
        atol=1e-6,
    )


# --- serialisation and compilation --------------------------------------------------------------------------


def test_state_dict_round_trip(dermamnist: Taxonomy) -> None:
    head = LeafHead(8, dermamnist, classes=COARSE)
    assert set(head.state_dict()) == {"linear.weight", "linear.bias"}
    buf = io.BytesIO()
    torch.save(head.state_dict(), buf)
    buf.seek(0)
    other = LeafHead(8, dermamnist, classes=COARSE)
    other.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(3, 8)
    torch.testing.assert_close(other(x), head(x))


def test_torchscript_and_export(dermamnist: Taxonomy) -> None:
    head = LeafHead(8, dermamnist, classes=COARSE).eval()
    x = torch.randn(5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in recent torch
        scripted = torch.jit.script(head)
    torch.testing.assert_close(scripted(x), head(x))
    batch = torch.export.Dim("batch")
    exported = torch.export.export(head, (torch.randn(2, 8),), dynamic_shapes={"features": {0: batch}})
    torch.testing.assert_close(exported.module()(x), head(x))


def test_buffers_follow_the_module(dermamnist: Taxonomy) -> None:
    head = LeafHead(8, dermamnist).to(torch.float64)
    assert head.linear.weight.dtype == torch.float64
    assert head.cut_columns.dtype == torch.long  # index buffers keep their integer dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("functional")
def test_cuda_rollup_stays_on_device() -> None:
    tax, counts = _residual_tree()
    head = LeafHead.from_partition(4, partition(tax, counts, max_class_size=10)).cuda()
    logits = head(torch.randn(3, 4, device="cuda"))
    out = head.rollup(logits)
    assert out.device.type == "cuda"
    np.testing.assert_allclose(out.cpu().numpy(), head.cpu().rollup(logits.cpu()).numpy(), rtol=1e-5)


# --- cut_probs: residual classes folded into the cut ------------------------------------------------------


def test_cut_probs_without_residual_is_softmax(dermamnist: Taxonomy) -> None:
    head = LeafHead(8, dermamnist, classes=COARSE)
    logits = torch.randn(4, 3)
    torch.testing.assert_close(head.cut_probs(logits), torch.softmax(logits, -1))


def test_cut_probs_shares_residual_mass_by_hand() -> None:
    tax, counts = _residual_tree()
    head = LeafHead.from_partition(4, partition(tax, {**counts, "root": 2}, max_class_size=10))
    assert head.classes == ("root:residual", "a", "b:residual", "b1", "b2", "c")
    assert head.cut == ("a", "b1", "b2", "c")
    logits = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    out = head.cut_probs(logits)
    p = torch.softmax(logits.detach().float(), -1).double().numpy()
    r0, a, rb, b1, b2, c = p.T
    # the root's residual is shared among everything under the root, then b's (grown) residual among b1, b2
    rest = a + rb + b1 + b2 + c
    a, rb, b1, b2, c = (x * (1 + r0 / rest) for x in (a, rb, b1, b2, c))
    expected = np.stack([a, b1 + rb * b1 / (b1 + b2), b2 + rb * b2 / (b1 + b2), c], axis=1)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.detach().sum(1).numpy(), 1.0, rtol=1e-5)
    # the ratio b1 : b2 within b is the model's own
    np.testing.assert_allclose((out[:, 1] / out[:, 2]).detach().numpy(), p[:, 3] / p[:, 4], rtol=1e-4)
    out.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_cut_probs_even_split_when_children_have_no_mass() -> None:
    tax, counts = _residual_tree()
    head = LeafHead.from_partition(4, partition(tax, counts, max_class_size=10))  # a, b:res, b1, b2, c
    logits = torch.tensor([[0.0, 0.0, -1e4, -1e4, 0.0]])
    np.testing.assert_allclose(head.cut_probs(logits).numpy(), [[1 / 3, 1 / 6, 1 / 6, 1 / 3]], rtol=1e-5)


@pytest.mark.usefixtures("functional")
def test_cut_probs_keeps_every_node_at_or_above_a_residual() -> None:
    tax, counts = _residual_tree()
    head = LeafHead.from_partition(4, partition(tax, counts, max_class_size=10))
    logits = torch.randn(5, 5)
    from hierclf.functional import rollup

    folded = rollup(head.cut_probs(logits), tax, ["root", "a", "b", "c"], columns=head.cut)
    torch.testing.assert_close(folded, head.rollup(logits, ["root", "a", "b", "c"]))


def _cut_probs_by_loop(head: LeafHead, logits: Tensor) -> Tensor:
    """The reference: one residual class at a time in pre-order (an outer one reaches inner ones first),
    each shared among the columns of its node in proportion (evenly when they are all 0)."""
    p = torch.softmax(logits.float(), -1)
    for j, c in enumerate(head.classes):
        base = residual_node(c)
        if base is None:
            continue
        inside = [
            k
            for k, other in enumerate(head.classes)
            if k != j and (residual_node(other) or other) in {base, *head.taxonomy.descendants(base)}
        ]
        block = p[:, inside]
        total = block.sum(1, keepdim=True)
        share = torch.where(
            total > 0, block / total.clamp_min(1e-38), torch.full_like(block, 1 / len(inside))
        )
        p = p.clone()
        p[:, inside] = block + share * p[:, j : j + 1]
    cut = [k for k, c in enumerate(head.classes) if residual_node(c) is None]
    return p[:, cut]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_leaves=st.integers(2, 60), seed=st.integers(0, 1000), limit=st.integers(1, 60))
def test_cut_probs_levels_equal_the_loop_over_residual_classes(n_leaves: int, seed: int, limit: int) -> None:
    """Folding one nesting level at a time is the pre-order loop over residual classes (nested ones too)."""
    tax = random_taxonomy(n_leaves, max_depth=5, max_fan_out=4, seed=seed)
    rng = np.random.default_rng(seed)
    counts = {n: int(rng.integers(1, 50)) for n in tax.nodes}  # images at inner nodes: residual classes
    head = LeafHead.from_partition(3, partition(tax, counts, max_class_size=limit))
    logits = torch.randn(6, head.n_classes, generator=torch.Generator().manual_seed(seed)) * 4
    logits[0] = -1e4  # a row whose mass sits on one class: zero totals, the even split
    logits[0, 0] = 0.0
    torch.testing.assert_close(head.cut_probs(logits), _cut_probs_by_loop(head, logits), rtol=1e-5, atol=1e-7)


def test_rollup_builds_nothing_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head's roll-up is a RollUp built once (non-persistent buffers); node lists are resolved once."""
    import hierclf.nn.head as head_module
    from hierclf.nn.rollup_modules import RollUp

    tax, counts = _residual_tree()
    head = LeafHead.from_partition(4, partition(tax, counts, max_class_size=10))
    assert isinstance(head.roll, RollUp) and head.roll.columns == head.classes
    assert set(head.state_dict()) == {"linear.weight", "linear.bias"}
    logits = torch.randn(5, head.n_classes)
    first = head.rollup(logits, ["b", "root"])

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("built during a call")

    monkeypatch.setattr(head_module, "plan", refuse)
    monkeypatch.setattr(RollUp, "__init__", refuse)
    assert torch.equal(head.rollup(logits, ["b", "root"]), first)
    assert head.rollup(logits).shape == (5, len(head.nodes))
