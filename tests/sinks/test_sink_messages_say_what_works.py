"""A bare path given as a sink is told to write file:PATH (virtualcam:PATH for a video device)."""

import pytest

from dreamcam.errors import ConfigError
from dreamcam.sinks import open_sink


@pytest.mark.parametrize(
    "spec,hint",
    [
        ("out.mp4", "to record to a file write --sink file:out.mp4"),
        ("/tmp/takes/out.mkv", "to record to a file write --sink file:/tmp/takes/out.mkv"),
        ("takes/out?size=640x360", "to record to a file write --sink file:takes/out?size=640x360"),
        ("/dev/video10", "to send to that virtual camera write --sink virtualcam:/dev/video10"),
    ],
)
def test_a_bare_path_as_a_sink_is_told_to_name_its_kind(spec, hint):
    with pytest.raises(ConfigError) as e:
        open_sink(spec, width=64, height=64)
    assert str(e.value) == f"unknown sink {spec!r}: {hint}"


def test_a_word_that_is_no_path_still_lists_the_sinks():
    with pytest.raises(ConfigError, match=r"unknown sink 'hdmi'; use virtualcam\[:BACKEND\], udp://HOST:PORT, file:PATH"):
        open_sink("hdmi", width=64, height=64)
