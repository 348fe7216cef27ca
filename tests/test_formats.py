import pytest

from sparsedsl.errors import FormatError
from sparsedsl.lang.formats import as_format, parse_format


@pytest.mark.parametrize("name,ndim", [("csr", 2), ("csc", 2), ("dcsr", 2), ("coo", 2), ("coo", 3),
                                       ("csf", 3), ("bitmap", 2), ("nm(2,4)", 2), ("bsr(4,4)", 2),
                                       ("blocked_bitmap(2,2)", 2), ("dense", 3)])
def test_named_formats_round_trip_through_their_spelling(name, ndim):
    fmt = as_format(name, ndim)
    assert parse_format(fmt.spelling()) == fmt


@pytest.mark.parametrize("bad", ["csx", "bsr(0,4)", "(i, j) -> (i: dense, k: compressed)",
                                 "(i, j) -> (i: dense, j: sparse)", "(i, j) -> (i: singleton, j: dense)",
                                 "(i, j) -> (i / 2: dense, j: dense)"])
def test_bad_formats_raise_format_error(bad):
    with pytest.raises(FormatError):
        as_format(bad, 2)
