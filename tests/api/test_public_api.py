"""Every name `passthru` lists resolves, and unknown names fail the normal way."""

import pytest

import passthru


@pytest.mark.parametrize("name", passthru.__all__)
def test_public_name_resolves(name):
    assert getattr(passthru, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        passthru.Nope  # noqa: B018
