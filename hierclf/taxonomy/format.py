"""The taxonomy file format: pydantic models, and the JSON Schema exported from them.

A taxonomy file is a nested tree that a dermatologist can read and edit::

    name: dermamnist
    description: The seven HAM10000 / DermaMNIST classes in an Esteva-style tree.
    root:
      id: skin_lesion
      name: Skin lesion
      children:
        - id: malignant
          name: Malignant
          children:
            - id: melanoma
              name: Melanoma
              aliases: [mel, "Melanoma, NOS"]
              source_aliases: {isic2019: [MEL]}
              codes: {dermamnist: 4}

``docs/taxonomy-format.md`` documents every field; ``hierclf schema`` prints the JSON Schema.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

#: Node ids are snake_case: lowercase ASCII letters and digits in words joined by single underscores.
ID_PATTERN = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"
#: Dataset names (the keys of ``codes``) follow the same rule as ids.
DATASET_PATTERN = ID_PATTERN
#: Source names (the keys of ``source_aliases``: ``isic2019``, ``dermnet``) follow the same rule as ids.
SOURCE_PATTERN = ID_PATTERN
FORMAT_VERSION = 1


def slugify(name: str) -> str:
    """A snake_case id derived from a display name (ASCII, matches :data:`ID_PATTERN`).

    Accents are dropped (NFKD), ``+`` becomes ``plus`` (``CD30+`` -> ``cd30_plus``), every other run of
    characters that are not ASCII letters or digits becomes one ``_``, and a name that starts with a digit
    gets the prefix ``n_``. Raises ``ValueError`` when nothing usable is left.

    >>> slugify("Melanoma, NOS"), slugify("Lymphocytic proliferations - T-Cell/NK")
    ('melanoma_nos', 'lymphocytic_proliferations_t_cell_nk')
    >>> slugify("Primary cutaneous CD30+ lymphoproliferative disease"), slugify("Café-au-lait macule")
    ('primary_cutaneous_cd30_plus_lymphoproliferative_disease', 'cafe_au_lait_macule')
    """
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    text = text.replace("+", " plus ")
    slug = re.sub(r"[^a-z0-9]+", "_", text).strip("_")
    if not slug:
        raise ValueError(f"cannot derive an id from {name!r}: it has no ASCII letters or digits")
    if slug[0].isdigit():
        slug = "n_" + slug
    return slug


def _whole_id(value: str) -> str:
    """An id must match :data:`ID_PATTERN` as a whole: the pattern's ``$`` also matches before a final
    newline, so ``"melanoma\\n"`` would pass it."""
    if value.endswith("\n"):
        raise PydanticCustomError(
            "string_pattern_mismatch", "String should match pattern {pattern}", {"pattern": ID_PATTERN}
        )
    return value


#: characters that break a name over lines or hide in it (control characters, line and paragraph separators)
_UNPRINTABLE = ("Cc", "Zl", "Zp")


def _one_line(value: str) -> str:
    """Display names and aliases are one line of printable text (they label reports, figures, CLI output)."""
    bad = next((c for c in value if unicodedata.category(c) in _UNPRINTABLE), None)
    if bad is not None:
        raise PydanticCustomError(
            "control_character",
            f"contains the control or line-break character U+{ord(bad):04X}; names are one line of "
            "printable text",
        )
    return value


NodeId = Annotated[StrictStr, Field(pattern=ID_PATTERN), AfterValidator(_whole_id)]
Code = Annotated[StrictInt, Field(ge=0)]
Alias = Annotated[StrictStr, Field(pattern=r"\S"), AfterValidator(_one_line)]
DisplayName = Annotated[StrictStr, Field(pattern=r"\S"), AfterValidator(_one_line)]
SourceName = Annotated[StrictStr, Field(pattern=SOURCE_PATTERN), AfterValidator(_whole_id)]


class NodeSpec(BaseModel):
    """One node of the disease tree: a condition or a group of conditions."""

    # python-re: `\S` in the name patterns means what str.strip() means (Rust's regex differs on U+001C-1F)
    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")

    id: NodeId = Field(
        description="Stable snake_case identifier, unique in the whole tree (e.g. `melanoma`)."
    )
    name: DisplayName = Field(
        description="Display name as a clinician writes it (e.g. `Melanoma, NOS`); not empty."
    )
    aliases: list[Alias] = Field(
        default_factory=list,
        description="Other names of the same condition in other sources (HAM10000 codes like `mel`, ISIC or "
        "DermNet names). Matched case-insensitively; each may name one node only and may not shadow an id.",
    )
    source_aliases: dict[SourceName, list[Alias]] = Field(
        default_factory=dict,
        description="Names of this node in one source only, by source: `{isic2019: [AK], dermnet: [...]}`. "
        "A source resolves its labels in its own scope first, so two sources' conflicting abbreviations can "
        "name different nodes; inside one scope an alias names one node only, and none may shadow an id.",
    )
    codes: dict[Annotated[StrictStr, Field(pattern=DATASET_PATTERN), AfterValidator(_whole_id)], Code] = (
        Field(
            default_factory=dict,
            description="Integer label of this node in each dataset, e.g. `{dermamnist: 4}`. Per dataset the "
            "codes must be 0, 1, ..., n-1 with one node per code.",
        )
    )
    metadata: dict[StrictStr, Any] = Field(
        default_factory=dict,
        description="Free metadata (ICD codes, notes, sources); carried, never interpreted, except "
        "`single_child_ok: true`, which acknowledges a deliberate single-child node.",
    )
    children: list[NodeSpec] = Field(
        default_factory=list, description="Sub-conditions; a node without children is a leaf."
    )


class TaxonomyFile(BaseModel):
    """A whole taxonomy file: a name, optional description and metadata, and the root node."""

    # python-re: `\S` in the name patterns means what str.strip() means (Rust's regex differs on U+001C-1F)
    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")

    format_version: StrictInt = Field(
        default=FORMAT_VERSION,
        ge=FORMAT_VERSION,
        le=FORMAT_VERSION,
        description="Version of this file format; currently 1.",
    )
    name: NodeId = Field(description="snake_case name of the taxonomy, e.g. `dermamnist`.")
    description: StrictStr = Field(default="", description="What the tree covers and where it comes from.")
    metadata: dict[StrictStr, Any] = Field(
        default_factory=dict, description="Free metadata (source, licence)."
    )
    root: NodeSpec = Field(description="The root node of the tree.")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of taxonomy files (draft 2020-12, as pydantic exports it)."""
    schema = TaxonomyFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hierclf taxonomy file"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"
