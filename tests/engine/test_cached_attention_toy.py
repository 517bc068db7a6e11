"""Cached attention on the trained toy model (a UNet whose picture follows its input): on a still
scene with fresh camera noise every frame, the self-attention features change less from frame
to frame with the bank, and after a cut the new scene shows at once (the bank holds it back by
a fraction of a level, not by the size of the cut). Eager engine on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine, load_pipeline
from dreamcam.engine.attention import router_for, self_attention_layers
from dreamcam.errors import ConfigError

SIZE, FRAMES, CUT = 128, 12, 9


@pytest.fixture(scope="module")
def toy():
    try:
        return load_pipeline("toy", device="cpu", dtype=torch.float32, progress=False)
    except ConfigError as e:  # the toy model ships with the package; a checkout without it says so
        pytest.skip(str(e))


def _clip(noise=12.0):
    """A still picture (gradients and discs) with fresh camera noise per frame, cut to another at CUT."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    scenes = []
    for seed in (1, 2):
        r = np.random.default_rng(seed)
        img = np.stack([x, y, 1 - x * y], axis=-1) * 200 + 20
        for _ in range(5):
            cx, cy, rad = r.uniform(0.1, 0.9), r.uniform(0.1, 0.9), r.uniform(0.05, 0.2)
            img[(x - cx) ** 2 + (y - cy) ** 2 < rad * rad] = r.uniform(0, 255, 3)
        scenes.append(img)
    return [np.clip(scenes[k >= CUT] + rng.normal(0, noise, scenes[0].shape), 0, 255).astype(np.uint8)
            for k in range(FRAMES)]


def _run(pipe, clip, bank, fusion=0.0):
    """Pictures, and per self-attention layer its outputs frame by frame."""
    layers = self_attention_layers(pipe.unet)
    feats: dict[str, list[torch.Tensor]] = {n: [] for n, _ in layers}
    hooks = [m.register_forward_hook(lambda _m, _a, out, n=n: feats[n].append(out.detach().clone()))
             for n, m in layers]
    try:
        e = StreamEngine(pipe, [18], SIZE, SIZE, cfg_type="none", device="cpu", dtype=torch.float32)
        e.prepare("a watercolor painting", seed=2)
        e.set_attn_fusion(fusion)
        e.set_attn_bank(bank)
        pictures = [e.img2img(f).astype(np.float32) for f in clip]
        e.set_attn_bank(0)
    finally:
        for h in hooks:
            h.remove()
        router = router_for(pipe.unet, create=False)
        if router is not None:
            router.uninstall()
    return pictures, feats


def _feature_change(feats):
    """Mean over layers of the relative frame-to-frame change of the still part (after 3 frames)."""
    per_layer = [np.mean([float((f[k] - f[k - 1]).abs().mean() / f[k].abs().mean()) for k in range(3, CUT)])
                 for f in feats.values()]
    return float(np.mean(per_layer))


def _picture_change(pictures):
    return float(np.mean([np.abs(pictures[k] - pictures[k - 1]).mean() for k in range(3, CUT)]))


def test_the_bank_steadies_the_features_of_a_still_noisy_scene_and_lets_a_cut_through(toy):
    clip = _clip()
    off_pics, off_feats = _run(toy, clip, 0)
    on_pics, on_feats = _run(toy, clip, 2)
    fused_pics, fused_feats = _run(toy, clip, 4, fusion=1.0)

    # the self-attention features move far less from frame to frame (measured: about half, a third with 4 + fusion)
    assert _feature_change(on_feats) < 0.7 * _feature_change(off_feats)
    assert _feature_change(fused_feats) < _feature_change(on_feats)
    # and the picture does not move more (the toy's picture change is mostly the input noise itself)
    assert _picture_change(on_pics) <= _picture_change(off_pics) * 1.01
    assert _picture_change(fused_pics) <= _picture_change(off_pics) * 1.01

    # the cut: the new scene is there on its first frame, within a fraction of the cut's size of the no-bank picture
    cut_size = np.abs(off_pics[CUT] - off_pics[CUT - 1]).mean()
    assert cut_size > 5
    for pics in (on_pics, fused_pics):
        assert np.abs(pics[CUT] - off_pics[CUT]).mean() < 0.1 * cut_size
        assert np.abs(pics[-1] - off_pics[-1]).mean() < np.abs(pics[CUT] - off_pics[CUT]).mean() + 0.05
