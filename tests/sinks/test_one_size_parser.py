"""One WIDTHxHEIGHT parser serves --output-size, a sink's ?size= and --camera-size: outputs must
be even sizes in 16..8192 (video encoders), a size asked of a camera only positive."""

import pytest

from dreamcam.errors import ConfigError
from dreamcam.sinks.base import parse_size


def test_a_camera_size_may_be_odd_or_small_an_output_size_may_not():
    assert parse_size("641x481", "--camera-size", video=False) == (641, 481)
    assert parse_size(" 8X8 ", "--camera-size", video=False) == (8, 8)
    with pytest.raises(ConfigError, match=r"^--output-size must be even numbers in 16\.\.8192"):
        parse_size("641x481")


@pytest.mark.parametrize("bad", ["0x10", "1280", "12.5x3", "-2x4", "axb", ""])
def test_what_is_not_a_size_names_the_flag_and_the_form(bad):
    with pytest.raises(ConfigError, match=rf"^--camera-size takes WIDTHxHEIGHT in pixels, e.g. 1280x720; got {bad!r}$"):
        parse_size(bad, "--camera-size", video=False)
