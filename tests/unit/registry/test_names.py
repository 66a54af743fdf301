"""Names and references: what may appear in URLs, paths and logs."""

from __future__ import annotations

import pytest

from maas.errors import InvalidName
from maas.protocols.bounds import MAX_VERSION
from maas.registry.names import validate_alias, validate_name
from maas.registry.refs import ModelRef, parse_ref, parse_selector

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
        ("iris:007", ModelRef("iris", 7)),
        (f"iris:{MAX_VERSION}", ModelRef("iris", MAX_VERSION)),
        # Past the bound, a number is one no version has; int() never sees the digits.
        (f"iris:{MAX_VERSION + 1}", ModelRef("iris", MAX_VERSION + 1)),
        ("iris:99999999999999999999", ModelRef("iris", MAX_VERSION + 1)),
        ("iris:" + "9" * 5000, ModelRef("iris", MAX_VERSION + 1)),
    ],
)
def test_parse_ref(text: str, ref: ModelRef) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize("ref", [ModelRef("iris"), ModelRef("iris", 3), ModelRef("iris", "prod")])
def test_format_round_trips(ref: ModelRef) -> None:
    assert parse_ref(ref.format()) == ref


@pytest.mark.parametrize(
    "text", ["../x:1", "Iris:1", ":3", "iris:²", "iris:³", "iris:\u0661", "iris:../x", "iris:A"]
)
def test_parse_ref_refuses_bad_references(text: str) -> None:
    with pytest.raises(InvalidName):
        parse_ref(text)


@pytest.mark.parametrize("text", ["³", "²1", "\u0661\u0662", "x\x00", "Prod"])
def test_a_selector_is_ascii_digits_or_an_alias_name(text: str) -> None:
    """Path segments and job specs use the same reader as references."""
    with pytest.raises(InvalidName) as caught:
        parse_selector(text)
    assert caught.value.code == "invalid_name"
