"""Aliases scoped to a source (``source_aliases``): resolution order, validation of clashes, round trips and
the JSON Schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from hierclf.errors import UnknownNameError
from hierclf.taxonomy.format import json_schema
from hierclf.taxonomy.tree import AmbiguousNameError, Taxonomy
from hierclf.taxonomy.validation import validate_text

# "AK" means actinic keratosis in ISIC 2019's columns and (in this made-up source) an "atypical keratosis"
# group elsewhere: the case scopes exist for.
TREE = """\
name: scoped
root:
  id: lesion
  name: Skin lesion
  children:
    - id: actinic_keratosis
      name: Actinic keratosis
      aliases: [akiec]
      source_aliases:
        isic2019: [AK]
        dermnet: [Actinic Keratosis Basal Cell Carcinoma]
    - id: seborrheic_keratosis
      name: Seborrheic keratosis
      aliases: [bkl]
      source_aliases:
        clinic: [AK, SK]
    - id: melanoma
      name: Melanoma
      aliases: [mel]
      source_aliases:
        isic2019: [MEL]
        clinic: [bkl]
"""


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return Taxonomy.from_text(TREE)


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("AK", "isic2019", "actinic_keratosis"),
        ("ak", "clinic", "seborrheic_keratosis"),  # case-insensitive, each source its own meaning
        ("AK", ["clinic", "isic2019"], "seborrheic_keratosis"),  # scopes are searched in order
        ("AK", ["isic2019", "clinic"], "actinic_keratosis"),
        ("bkl", None, "seborrheic_keratosis"),  # the global alias
        ("bkl", "clinic", "melanoma"),  # the source's own alias wins over a global alias
        ("bkl", "isic2019", "seborrheic_keratosis"),  # a source without its own meaning falls back
        ("mel", "unknown_source", "melanoma"),  # a source without scoped aliases sees the global names
        ("melanoma", "clinic", "melanoma"),  # ids always win
        ("MEL", None, "melanoma"),  # a source alias of one node resolves without a source too
        ("actinic keratosis   basal cell carcinoma", None, "actinic_keratosis"),
        ("SK", None, "seborrheic_keratosis"),
    ],
)
def test_resolution_order(tax: Taxonomy, name: str, source: object, expected: str) -> None:
    assert tax.resolve(name, source=source) == expected  # type: ignore[arg-type]


def test_a_source_alias_with_two_meanings_needs_its_source(tax: Taxonomy) -> None:
    with pytest.raises(AmbiguousNameError) as info:
        tax.resolve("AK")
    assert info.value.owners == {"clinic": "seborrheic_keratosis", "isic2019": "actinic_keratosis"}
    message = str(info.value)
    assert "'seborrheic_keratosis' in source 'clinic'" in message
    assert "'actinic_keratosis' in source 'isic2019'" in message
    assert isinstance(info.value, UnknownNameError)  # callers listing unknown labels list it too
    assert "ak" not in tax.names()  # names() lists only what resolves without a source
    assert "ak" in tax.names(source="clinic")


def test_unknown_name_in_a_source_suggests_scoped_aliases(tax: Taxonomy) -> None:
    with pytest.raises(UnknownNameError) as info:
        tax.resolve("MELL", source="isic2019")
    assert str(info.value) == (
        "unknown node 'MELL' in taxonomy 'scoped' (source isic2019); did you mean 'mel'?"
    )


def test_source_scopes_and_round_trips(tax: Taxonomy) -> None:
    assert tax.source_scopes == ("clinic", "dermnet", "isic2019")
    again = Taxonomy.from_text(tax.to_yaml())
    assert again == tax
    assert again.node("actinic_keratosis").source_aliases == {
        "isic2019": ["AK"],
        "dermnet": ["Actinic Keratosis Basal Cell Carcinoma"],
    }
    graph = tax.graph
    assert graph.nodes["melanoma"]["source_aliases"] == {"isic2019": ["MEL"], "clinic": ["bkl"]}
    rebuilt = Taxonomy.from_networkx(graph, name="scoped")
    assert rebuilt.resolve("bkl", source="clinic") == "melanoma"


def _problems(text: str) -> list[str]:
    return [str(p) for p in validate_text(text, file="t.yaml").problems]


def _tree(*leaves: str) -> str:
    body = "".join(f"    - {leaf}\n" for leaf in leaves)
    return f"name: t\nroot:\n  id: a\n  name: A\n  children:\n{body}"


def test_a_clash_inside_one_scope_is_an_error() -> None:
    text = _tree(
        "{id: b, name: B, source_aliases: {isic: [X]}}",
        "{id: c, name: C, source_aliases: {isic: [x], dermnet: [X]}}",
    )
    report = validate_text(text, file="t.yaml")
    assert [str(p) for p in report.problems] == [
        "t.yaml:7:48: error: source alias 'x' names two nodes in source 'isic': 'b' (line 6) and 'c'"
    ]
    assert report.problems[0].code == "source-alias-conflict"
    assert report.problems[0].node == "c"


def test_the_same_alias_in_two_scopes_is_fine() -> None:
    text = _tree(
        "{id: b, name: B, source_aliases: {isic: [X]}}", "{id: c, name: C, source_aliases: {derm: [X]}}"
    )
    assert _problems(text) == []


def test_a_source_alias_repeating_the_same_nodes_alias_is_fine() -> None:
    text = _tree("{id: b, name: B, aliases: [X], source_aliases: {isic: [x, X]}}", "{id: c, name: C}")
    assert _problems(text) == []


def test_a_source_alias_may_not_shadow_an_id() -> None:
    text = _tree("{id: b, name: B, source_aliases: {isic: [C]}}", "{id: c, name: C}")
    assert _problems(text) == [
        "t.yaml:6:48: error: source alias 'C' (source 'isic') of node 'b' shadows the id of node 'c'"
    ]


@pytest.mark.parametrize(
    ("scoped", "expected"),
    [
        (
            "{Isic: [X]}",
            "t.yaml:6:47: error: node 'b': invalid source name 'Isic' in source_aliases: expected "
            "snake_case: lowercase letters and digits in words joined by single '_', starting with a letter",
        ),
        ("{isic: ['  ']}", "t.yaml:6:48: error: node 'b': empty alias: remove it or write the other name"),
        (
            '{isic: ["a\\tb"]}',
            "t.yaml:6:48: error: node 'b': alias 'a\\tb' contains the control or line-break character "
            "U+0009; names are one line of printable text",
        ),
        ("{isic: X}", "t.yaml:6:47: error: node 'b': source_aliases.isic: expected a list, got text"),
        ("[X]", "t.yaml:6:40: error: node 'b': source_aliases: expected a mapping, got a list"),
    ],
)
def test_malformed_source_aliases_are_positioned(scoped: str, expected: str) -> None:
    text = _tree(f"{{id: b, name: B, source_aliases: {scoped}}}", "{id: c, name: C}")
    assert _problems(text) == [expected]


def test_the_json_schema_knows_source_aliases() -> None:
    schema = json_schema()
    good = {
        "name": "t",
        "root": {
            "id": "a",
            "name": "A",
            "children": [
                {"id": "b", "name": "B", "source_aliases": {"isic": ["X"]}},
                {"id": "c", "name": "C"},
            ],
        },
    }
    jsonschema.validate(good, schema)
    bad = json.loads(json.dumps(good))
    bad["root"]["children"][0]["source_aliases"] = {"isic": "X"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
