"""Names and references: what may appear in URLs, paths and logs."""

from __future__ import annotations

import pytest

from maas.errors import InvalidName
from maas.registry.names import validate_alias, validate_name
from maas.registry.refs import ModelRef, parse_ref

BAD_NAMES = ["../x", "a/b", "Iris", "", "x" * 129, "-x", "x..y", ".x", "a b", "a:b", "ü"]


@pytest.mark.parametrize("name", ["iris", "a", "x" * 128, "iris-v2_b.3", "0model"])
def test_valid_names_pass(name: str) -> None:
    assert validate_name("model", name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName) as caught:
        validate_name("model", name)
    assert caught.value.details == {"kind": "model"}


@pytest.mark.parametrize("alias", [*BAD_NAMES, "3", "0042", "latest"])
def test_invalid_aliases_are_refused(alias: str) -> None:
    with pytest.raises(InvalidName):
        validate_alias(alias)


@pytest.mark.parametrize("alias", ["production", "v2", "3a", "staging-1"])
def test_valid_aliases_pass(alias: str) -> None:
    assert validate_alias(alias) == alias


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("iris", ModelRef("iris")),
        ("iris:", ModelRef("iris")),
        ("iris:3", ModelRef("iris", 3)),
        ("iris:production", ModelRef("iris", "production")),
        ("iris:latest", ModelRef("iris", "latest")),
    ],
)
def test_parse_ref(text: str, ref: ModelRef) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize("ref", [ModelRef("iris"), ModelRef("iris", 3), ModelRef("iris", "prod")])
def test_format_round_trips(ref: ModelRef) -> None:
    assert parse_ref(ref.format()) == ref


@pytest.mark.parametrize("text", ["../x:1", "Iris:1", ":3", "iris:²", "iris:../x", "iris:A"])
def test_parse_ref_refuses_bad_references(text: str) -> None:
    with pytest.raises(InvalidName):
        parse_ref(text)
