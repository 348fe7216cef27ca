"""The examples in the standard library's docstrings run and give what they show."""

import doctest
import importlib
import pkgutil

import pytest

import sparsedsl.stdlib

MODULES = sorted(m.name for m in pkgutil.walk_packages(sparsedsl.stdlib.__path__, "sparsedsl.stdlib."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
