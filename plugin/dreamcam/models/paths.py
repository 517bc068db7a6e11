"""Where a model comes from, checked before anything loads: hub ids, paths and checkpoint files.

Shared by `loading` (the base pipeline) and `components` (VAE and LoRA), so a mistyped path or a
truncated download is said in one line, before the slow part.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from safetensors import safe_open

from dreamcam.errors import ModelLoadError

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
# the offline random-weight pipelines by name (`tiny_pipeline`), and the family each is
TINY_MODELS = {"tiny": "sd", "tiny-sdxl": "sdxl"}
# the tiny VAE (TAESD) that decodes each family's latents
TINY_VAES = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_checkpoint_file(path: Path) -> None:
    """Read a .safetensors header, or a .ckpt's archive index (cheap), so a corrupt or truncated
    download fails with a clear line rather than a loader's error about something else."""
    if path.suffix.lower() in (".ckpt", ".pt", ".pth", ".bin"):
        _check_torch_file(path)
        return
    if path.suffix.lower() != ".safetensors":
        return
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:
        raise ModelLoadError(
            f"{path.name} is not a readable .safetensors file ({one_line(e)}): it is corrupt or only partly "
            "downloaded; download it again"
        ) from e


def _check_torch_file(path: Path) -> None:
    # torch.save writes a zip archive (its index is at the end: a truncated download has none);
    # files from before torch 1.6 are a bare pickle, which starts with the PROTO opcode 0x80
    bad = None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if not any(n.endswith("data.pkl") for n in z.namelist()):
                    bad = "a zip archive without data.pkl"
        else:
            with open(path, "rb") as f:
                if f.read(1) != b"\x80":
                    bad = "neither a zip archive nor a pickle"
    except (OSError, zipfile.BadZipFile) as e:
        bad = one_line(e)
    if bad is not None:
        raise ModelLoadError(
            f"{path.name} is not a readable PyTorch checkpoint ({bad}): it is corrupt or only partly "
            "downloaded; download it again, or use the model's .safetensors file"
        )


_WHAT_TO_PASS = {
    "VAE": "pass a folder, a file or a hub id like madebyollin/taesd",
    "LoRA": "pass a .safetensors file, a folder or a hub id",
}


def check_exists(kind: str, source: str | None) -> None:
    """ModelLoadError when `source` (a path or hub id, or None) can be neither: a path that is
    not there. kind: "VAE" or "LoRA"."""
    if source is None or Path(str(source)).expanduser().exists():
        return
    if looks_like_path(str(source)) or not HUB_ID.match(str(source)):
        raise ModelLoadError(f"{kind} path {str(source)!r} does not exist; {_WHAT_TO_PASS[kind]}")


def is_checkpoint_path(id_or_path: str) -> bool:
    """A name that ends like a single checkpoint file (.safetensors, .ckpt), there or not."""
    return id_or_path.lower().endswith(CHECKPOINT_SUFFIXES)


def looks_like_path(text: str) -> bool:
    """Written like a file path rather than a hub id (owner/name)."""
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1:
        return True
    return Path(text).suffix.lower() in CHECKPOINT_SUFFIXES + (".pt", ".pth", ".bin")


def one_line(e: BaseException) -> str:
    """An exception's message on one line of at most 300 characters, for a ModelLoadError."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
