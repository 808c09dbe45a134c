"""search.rle: exact round trip, header, bad strings."""
import numpy as np
import pytest

from search import rle
from search.errors import InputError


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (36, 64), (0, 4)])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_round_trip(shape, p):
    mask = np.random.default_rng(1).random(shape) < p
    back = rle.decode(rle.encode(mask))
    assert back.shape == shape and back.dtype == bool
    assert np.array_equal(back, mask)


def test_format_starts_with_false_run():
    assert rle.encode(np.array([[1, 1, 0], [0, 1, 1]], bool)) == "2 3 0 2 2 2"
    assert rle.encode(np.zeros((2, 2), bool)) == "2 2 4"


def test_box():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert rle.box(rle.encode(m)) == (3, 2, 9, 5)
    assert rle.box(rle.encode(np.zeros((3, 3), bool))) is None


@pytest.mark.parametrize("bad", ["", "3", "2 2 1 1", "a b c", "2 2 -1 5"])
def test_bad_strings(bad):
    with pytest.raises(InputError):
        rle.decode(bad)


def test_not_2d():
    with pytest.raises(InputError):
        rle.encode(np.zeros(4, bool))
