"""One similarity filter for the engine and the live loop: `repeat` gives back the kept output for a
near-identical frame, `keep` takes each output the model computed. `StreamEngine.process` uses it on
the model input, the runner on the uint8 frame through `image_key`."""

from __future__ import annotations

import numpy as np
import torch
from dreamcam import StreamEngine
from dreamcam.engine.similarity import SimilarityFilter, image_key


def test_nothing_is_repeated_until_an_output_is_kept_and_never_past_max_skip():
    sim = SimilarityFilter(threshold=0.5, max_skip_frame=2)
    x = torch.ones(1, 3, 8, 8)
    assert sim.repeat(x) is None  # the first frame: nothing to compare with
    assert sim.repeat(x) is None and sim.skipped_total == 1  # similar, but no output to repeat yet
    sim.keep("out-1")
    assert [sim.repeat(x) for _ in range(4)] == ["out-1", "out-1", None, "out-1"]  # at most 2 + 1 in a row
    assert sim.repeat(-x) is None  # a different frame runs
    sim.keep(None)
    assert sim.repeat(-x) is None  # forgotten


def test_image_key_is_every_fourth_pixel_in_model_range():
    img = np.zeros((64, 48, 3), np.uint8)
    img[::4, ::4] = 255
    key = image_key(img)
    assert key.shape == (16, 12, 3) and key.dtype == torch.float32 and bool((key == 1.0).all())


def test_the_engine_repeats_through_the_filter_and_a_new_prepare_forgets(tiny_pipe):
    engine = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none", device="cpu", dtype=torch.float32)
    engine.prepare("a cat")
    engine.enable_similar_image_filter(threshold=0.5, max_skip_frame=100)
    x = torch.full((1, 3, 64, 64), 0.5)  # not all zeros: the cosine of a zero frame is 0
    first = engine.process(x)
    assert engine.process(x) is first  # identical: the kept output, not a new one
    engine.prepare("a dog")
    assert engine.process(x) is not first  # the old prompt's output is not repeated
