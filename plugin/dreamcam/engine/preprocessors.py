"""ControlNet preprocessors: a frame batch in, the control images a ControlNet is trained on out.

Every preprocessor is a callable `(x) -> images`: x float (F, 3, H, W) in [-1, 1] on the
engine's device (the engine's own model input), images float (F, 3, H, W) in [0, 1] on the same
device, what diffusers' ControlNet pipelines hand their ControlNet.

- `canny`: OpenCV's Canny edges (thresholds 100/200) on the grey frame: sharp outlines, for
  canny ControlNets (lllyasviel/sd-controlnet-canny, control_v11p_sd15_canny).
- `softedge`: multi-scale Sobel gradient magnitude (1x, 1/2 and 1/4 size, averaged), on the
  device: soft, thick edges that hold a face's shape without every hair, for softedge/HED
  ControlNets (control_v11p_sd15_softedge); also a cheap stand-in for canny on a GPU.
- `depth`: Depth Anything V2 small (depth-anything/Depth-Anything-V2-Small-hf through
  transformers' DepthAnythingForDepthEstimation), relative depth (near bright) scaled to 0..1
  per frame, for depth ControlNets (control_v11f1p_sd15_depth). `depth:ID_OR_FOLDER` loads
  another checkpoint of that class; `depth:tiny` builds a random-weight tiny one (tests, benchmarks).
- `input`: the frame as is, for tile and recolour ControlNets (control_v11f1e_sd15_tile).

`make_preprocessor(spec)` builds one by name; a wrong name is a ConfigError of one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dreamcam.engine.control_spec import check_preprocessor_spec
from dreamcam.errors import ModelLoadError

log = logging.getLogger(__name__)

DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


class InputImage:
    """The frame itself (tile / recolour ControlNets)."""

    name = "input"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return to_unit(x)


class Canny:
    """OpenCV Canny edges of the grey frame, white on black, 3 channels."""

    name = "canny"

    def __init__(self, low: int = 100, high: int = 200) -> None:
        self.low, self.high = low, high

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import cv2  # cheap: OpenCV is imported by the frame path already

        frames = ((x.detach().float() + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)
        frames = frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        edges = np.stack([cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), self.low, self.high) for f in frames])
        out = torch.from_numpy(edges).to(device=x.device, dtype=x.dtype).div_(255.0)
        return out.unsqueeze(1).expand(-1, 3, -1, -1)


class SoftEdge:
    """Multi-scale Sobel: gradient magnitude of the grey frame at 1x, 1/2 and 1/4 size, upsampled
    and averaged, scaled so a strong edge is 1; runs on the engine's device."""

    name = "softedge"

    def __init__(self, scales: tuple[int, ...] = (1, 2, 4), gain: float = 4.0) -> None:
        self.scales, self.gain = scales, gain
        k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 4.0
        self._kernel = torch.stack([k, k.t()]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        rgb = to_unit(x.float())
        grey = (0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3])
        kernel = self._kernel.to(grey.device)
        total = torch.zeros_like(grey)
        for s in self.scales:
            g = F.avg_pool2d(grey, s) if s > 1 else grey
            grad = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), kernel)
            mag = grad.pow(2).sum(1, keepdim=True).sqrt()
            total += F.interpolate(mag, size=(h, w), mode="bilinear", align_corners=False) if s > 1 else mag
        out = (total * (self.gain / len(self.scales))).clamp_(0.0, 1.0)
        return out.to(x.dtype).expand(-1, 3, -1, -1)


class Depth:
    """Relative depth from a `DepthAnythingForDepthEstimation` model, 0..1 per frame, near bright.

    The frame is resized to `size` (a multiple of the model's 14-pixel patch, the long side; the
    model card's 518 by default) and normalised with ImageNet's mean and std, as its image
    processor does, but on the engine's device."""

    name = "depth"
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, model, size: int = 518) -> None:
        self.model = model.eval()
        self.patch = int(getattr(model.config, "patch_size", 14))
        self.size = size

    def to(self, device: torch.device) -> Depth:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = self.patch
        scale = self.size / max(h, w)
        th, tw = max(p, round(h * scale / p) * p), max(p, round(w * scale / p) * p)
        dtype = next(self.model.parameters()).dtype
        rgb = F.interpolate(to_unit(x.float()), size=(th, tw), mode="bicubic", align_corners=False).clamp_(0, 1)
        mean = torch.tensor(self.MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.STD, device=x.device).view(1, 3, 1, 1)
        depth = self.model(pixel_values=((rgb - mean) / std).to(dtype)).predicted_depth.float()
        depth = F.interpolate(depth.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)
        lo = depth.amin(dim=(2, 3), keepdim=True)
        hi = depth.amax(dim=(2, 3), keepdim=True)
        out = (depth - lo) / (hi - lo).clamp_min(1e-12)
        return out.to(x.dtype).expand(-1, 3, -1, -1)


def tiny_depth_model(seed: int = 0):
    """A random-weight tiny Depth Anything (same classes and data flow as V2 small), built offline."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=518, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DepthAnythingForDepthEstimation(config)


def load_depth_model(source: str = DEPTH_MODEL, *, online: bool = False):
    """A DepthAnythingForDepthEstimation from a hub id or folder ("tiny": random weights)."""
    if source == "tiny":
        return tiny_depth_model()
    from transformers import DepthAnythingForDepthEstimation

    log.info("loading depth model %s...", source)
    try:
        return DepthAnythingForDepthEstimation.from_pretrained(source, local_files_only=not online)
    except Exception as e:
        where = "" if online else " (not in the local cache and the hub is not reachable)"
        raise ModelLoadError(f"could not load the depth model {source!r}{where}: pass --control depth:FOLDER "
                             f"(a DepthAnythingForDepthEstimation folder) or --control depth:tiny (random weights, "
                             f"for tests); {' '.join(str(e).split())[:200]}") from e


def make_preprocessor(spec: str, *, online: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """A preprocessor by name: canny, softedge, input, depth or depth:ID_OR_FOLDER (depth:tiny)."""
    name = check_preprocessor_spec(spec)
    arg = spec.partition(":")[2]
    if name == "canny":
        return Canny()
    if name == "softedge":
        return SoftEdge()
    if name == "input":
        return InputImage()
    return Depth(load_depth_model(arg or DEPTH_MODEL, online=online))

