"""Cached attention (StreamV2V's feature bank): the UNet's self-attention also looks at past frames.

Live img2img re-imagines every frame, so textures and small details flicker even on a still
camera. With cached attention on, every self-attention layer of the UNet's transformer blocks
(`attn1`) attends to its own keys and values *and* to those it computed for the last 1-4 frames,
kept in a bank; what the model drew a moment ago then pulls this frame towards the same detail.
Optional feature fusion goes further: an output token whose nearest banked output token has a
cosine similarity of at least `FUSION_THRESHOLD` (0.98) is blended towards it by the fusion
weight (only in the decoder's deep layers, `FUSION_LAYERS`, as StreamV2V does).

Which bank row a batch row reads: the bank is kept per UNet batch row. Row r of the stream batch
(engine/stream.py: step k of one frame lane, and the RCFG unconditional rows ahead of them) reads
and writes bank row r, so every row attends to the *same denoising step* of the previous frames
in its lane (with frame_buffer_size F, lane j's previous frame is the one F camera frames back),
and unconditional rows to the previous unconditional rows. Noise levels never mix.

Buffers: per layer, keys and values (MAX_BANK_FRAMES, rows, tokens, width) and, for fusion
layers, outputs of the same shape; allocated once, the first time cached attention is switched
on, at the largest size (4 frames), and never again: the knobs and `reset_attention_bank` only
write small device tensors (`BankControl`), so a CUDA graph captured with the bank keeps working.
The bank is a ring: refresh number n (counted from the last reset) writes slot n mod frames.
Which slots are attended is a device-side mask, so nothing on the host decides per frame.

Processors: the banked processors sit on the (possibly shared) UNet, one `AttentionRouter` per
UNet; before each UNet call an engine points the router at its own bank, or at none, in which
case every layer calls the processor it had before (the same object: the same computation).

Off, exactly and cheaply: until `set_attn_bank(n > 0)` the UNet's own processors run (nothing is
installed or allocated; the frame step's only extra work is one dictionary look-up);
`set_attn_bank(0)` in eager mode puts them back, so the output is bit for bit what it was
without the feature. Under a graphed backend (compiled, TensorRT) the shape
of the computation is fixed at capture: if cached attention was on when the backend started, the
graph attends to all 4 slots and computes fusion every frame (0 frames or fusion 0 then mask
them out, exactly for fusion, up to float rounding for the bank); if it was off, the graph has no
bank and switching it on there is refused with a line saying to start with `--attn-bank N`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dreamcam.errors import ConfigError

log = logging.getLogger(__name__)

MAX_BANK_FRAMES = 4
FUSION_THRESHOLD = 0.98  # cosine similarity at which an output token is blended to its banked neighbour
FUSION_LAYERS = ("mid_block", "up_blocks.0.", "up_blocks.1.")  # StreamV2V's: the decoder's deep layers
MAX_REFRESH = 16


def self_attention_layers(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, Attention) of every transformer block's self-attention (`...attn1`), in module order."""
    from diffusers.models.attention_processor import Attention

    return [(n, m) for n, m in unet.named_modules() if isinstance(m, Attention) and n.endswith("attn1")]


def layer_tokens(name: str, n_blocks: int, latent_hw: tuple[int, int]) -> int:
    """Tokens (h*w) a layer of an SD-style UNet sees: down_blocks.i at latent/2^i, the mid block at
    latent/2^(n-1), up_blocks.i at latent/2^(n-1-i) (stride-2 convolutions round up)."""
    part, _, rest = name.partition(".")
    if part == "down_blocks":
        level = int(rest.split(".")[0])
    elif part == "mid_block":
        level = n_blocks - 1
    elif part == "up_blocks":
        level = n_blocks - 1 - int(rest.split(".")[0])
    else:
        raise ConfigError(f"cached attention does not know where UNet layer {name!r} sits; "
                          "it supports SD-style UNets (down_blocks, mid_block, up_blocks)")
    h, w = latent_hw
    for _ in range(level):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h * w


@dataclass
class LayerBank:
    """One self-attention layer's banked keys, values and (fusion layers) outputs."""

    name: str
    tokens: int
    width: int
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor | None


class BankControl:
    """The small device tensors that steer the bank. `begin_frame` updates them once per UNet call
    with device ops only (no host decision), so a captured graph replays it as it is."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        n = MAX_BANK_FRAMES
        self.slots = torch.arange(n, device=device)
        self.frames = torch.zeros((), dtype=torch.long, device=device)  # attn_bank: slots in use (0 = off)
        self.every = torch.ones((), dtype=torch.long, device=device)  # attn_refresh
        self.fusion = torch.zeros((), dtype=dtype, device=device)  # attn_fusion
        self.frame = torch.zeros((), dtype=torch.long, device=device)  # frames since the last reset
        self.count = torch.zeros((), dtype=torch.long, device=device)  # refreshes since the last reset
        self.mask = torch.zeros(n, dtype=torch.bool, device=device)  # slots attended this frame
        self.write = torch.zeros(n, dtype=torch.bool, device=device)  # the slot written this frame (one-hot or none)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.frames, self.every, self.fusion, self.frame, self.count, self.mask, self.write

    def begin_frame(self) -> None:
        on = self.frames > 0
        refresh = torch.remainder(self.frame, self.every) == 0
        slot = torch.remainder(self.count, self.frames.clamp(min=1))
        self.mask.copy_((self.slots < self.frames) & (self.slots < self.count))
        self.write.copy_((self.slots == slot) & refresh & on)
        self.count.add_((refresh & on).long())
        self.frame.add_(1)

    def restart_where(self, cut: torch.Tensor) -> None:
        """`reset` of the counters where `cut` (0-dim) is > 0, as device ops (no host decision);
        `begin_frame` then attends to no filled slot and writes slot 0."""
        keep = (cut <= 0).to(self.frame.dtype)
        self.frame.mul_(keep)
        self.count.mul_(keep)

    def reset(self) -> None:
        self.frame.zero_()
        self.count.zero_()
        self.mask.zero_()
        self.write.zero_()


class AttentionBank:
    """The bank of every self-attention layer of one UNet, its control tensors and its processors.

    Args:
        unet: the UNet2DConditionModel the engine runs.
        rows: UNet batch rows (the engine's `unet_batch_size`).
        latent_hw: the latent size (h, w).
        device, dtype: the engine's.
    """

    def __init__(self, unet: torch.nn.Module, rows: int, latent_hw: tuple[int, int], device: torch.device,
                 dtype: torch.dtype) -> None:
        self.unet = unet
        self.rows = rows
        self.latent_hw = latent_hw
        self.control = BankControl(device, dtype)
        self.static = False  # a graphed backend holds the engine: attend to every slot, always fuse
        self.fusion_host = 0.0  # the fusion weight, for eager mode's "skip when 0"
        self.frames_host = 0
        self._io: dict[int, tuple[torch.Tensor, ...]] | None = None  # export mode: bank tensors given as inputs
        self._io_out: dict[int, tuple[torch.Tensor, ...]] = {}
        n_blocks = len(unet.config.block_out_channels)
        self.layers: list[LayerBank] = []
        shape0 = (MAX_BANK_FRAMES, rows)
        for name, attn in self_attention_layers(unet):
            tokens = layer_tokens(name, n_blocks, latent_hw)
            width = attn.to_k.out_features
            k = torch.zeros((*shape0, tokens, width), dtype=dtype, device=device)
            fuse = name.startswith(FUSION_LAYERS)
            out_w = attn.to_out[0].out_features
            o = torch.zeros((*shape0, tokens, out_w), dtype=dtype, device=device) if fuse else None
            self.layers.append(LayerBank(name, tokens, width, k, torch.zeros_like(k), o))
        if not self.layers:
            raise ConfigError("cached attention found no self-attention layer (attn1) in this UNet")
        self.installed = False  # whether the engine's frames route through this bank

    # ------------------------------------------------------------------ state

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every tensor a frame changes (bank and counters), for a backend's warm-up snapshot."""
        bank = [t for layer in self.layers for t in (layer.k, layer.v, layer.o) if t is not None]
        return (*bank, *self.control.tensors())

    def reset(self) -> None:
        """Forget every banked frame: the next frame refills slot 0; no value of the old ones is read
        again (the mask hides unfilled slots, and they are zeroed besides)."""
        self.control.reset()
        for layer in self.layers:
            for t in (layer.k, layer.v, layer.o):
                if t is not None:
                    t.zero_()

    @property
    def read_slots(self) -> int:
        """Slots a layer reads: all of them in a graph (fixed shapes), the ones in use in eager mode."""
        return MAX_BANK_FRAMES if self.static else max(1, self.frames_host)

    # ------------------------------------------------------------------ export (ONNX) mode

    @contextlib.contextmanager
    def functional(self, inputs: list[torch.Tensor], mask: torch.Tensor, write: torch.Tensor,
                   fusion: torch.Tensor) -> Iterator[list[torch.Tensor]]:
        """Within: layers read the bank from `inputs` (io_names order) and the control from the
        arguments, and hand their new bank tensors out (the yielded list, same order) instead of
        writing the buffers: the form an exported graph takes (bank in -> bank out)."""
        it = iter(inputs)
        self._io = {i: tuple(next(it) if t is not None else None for t in (layer.k, layer.v, layer.o))
                    for i, layer in enumerate(self.layers)}
        self._io_ctl = (mask, write, fusion)
        self._io_out = {}
        out: list[torch.Tensor] = []
        try:
            yield out
            for i in range(len(self.layers)):
                out.extend(t for t in self._io_out[i] if t is not None)
        finally:
            self._io = None

    def io_names(self) -> list[str]:
        """The bank's graph inputs (append "_out" for the outputs), in `functional` order."""
        names = []
        for i, layer in enumerate(self.layers):
            names += [f"bank_k{i}", f"bank_v{i}"] + ([f"bank_o{i}"] if layer.o is not None else [])
        return names

    def io_tensors(self) -> list[torch.Tensor]:
        """The live bank buffers in `io_names` order."""
        return [t for layer in self.layers for t in (layer.k, layer.v, layer.o) if t is not None]

    def _read(self, i: int) -> tuple[tuple[torch.Tensor | None, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.control
        if self._io is not None:
            return self._io[i], *self._io_ctl
        layer = self.layers[i]
        return (layer.k, layer.v, layer.o), c.mask, c.write, c.fusion

    def _store(self, i: int, r: int, new: tuple[torch.Tensor | None, ...]) -> None:
        if self._io is not None:
            self._io_out[i] = new
            return
        layer = self.layers[i]
        for buf, t in zip((layer.k, layer.v, layer.o), new):
            if buf is not None:
                buf[:r].copy_(t)


class AttentionRouter:
    """The banked processors of one UNet (shared by every engine on it) and the bank the frame
    running now uses: `bank` None sends every layer to the processor it had before (the very
    same object, so the result is bit for bit the UNet's own). An engine points `bank` at its
    own bank, or at None, before each UNet call (`route`)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.modules = [m for _, m in self_attention_layers(unet)]
        self.processors = [BankedAttnProcessor(self, i) for i in range(len(self.modules))]
        self.originals: list[Any] = [None] * len(self.modules)
        self.bank: AttentionBank | None = None

    def installed(self) -> bool:
        return all(m.processor is p for m, p in zip(self.modules, self.processors))

    def install(self) -> None:
        """Put the banked processors on the attn1 layers (again, where something replaced them:
        diffusers' fuse/unfuse_qkv_projections set every layer's processor)."""
        for i, attn in enumerate(self.modules):
            if attn.processor is not self.processors[i]:
                if self.originals[i] is None:  # the UNet's own, not a fused one set over ours meanwhile
                    self.originals[i] = attn.processor
                attn.set_processor(self.processors[i])

    def uninstall(self) -> None:
        """Give every attn1 layer back the processor it had before `install` (idempotent; the
        originals are kept: unfusing projections may put ours back, and a second call undoes it)."""
        self.bank = None
        for i, attn in enumerate(self.modules):
            if self.originals[i] is not None and attn.processor is self.processors[i]:
                attn.set_processor(self.originals[i])


_ROUTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def router_for(unet: torch.nn.Module, create: bool = True) -> AttentionRouter | None:
    """The UNet's router (made on first use when `create`)."""
    router = _ROUTERS.get(unet)
    if router is None and create:
        router = _ROUTERS[unet] = AttentionRouter(unet)
    return router


class BankedAttnProcessor:
    """A diffusers attention processor for self-attention with banked keys/values of past frames
    (the bank its router points at; with none, the layer's own processor runs).

    Works with separate (to_q, to_k, to_v) and fused (to_qkv, `fuse_qkv_projections`) projections.
    """

    def __init__(self, router: AttentionRouter, index: int) -> None:
        self.router = router
        self.index = index

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        bank, i = self.router.bank, self.index
        if bank is None:
            return self.router.originals[i](attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                            *args, **kwargs)
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ConfigError("cached attention replaces self-attention only (no encoder states, no mask)")
        layer = bank.layers[i]
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b4, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(b4, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        b, n, _ = hidden_states.shape
        (bk, bv, bo_all), mask, write, fusion = bank._read(i)
        if not torch.jit.is_tracing() and (n != bk.shape[2] or b != bk.shape[1]):
            raise ConfigError(f"cached attention: layer {layer.name} got {b} rows x {n} tokens, the bank holds "
                              f"{bk.shape[1]} x {bk.shape[2]}: the engine's size or batch changed; re-create the engine")

        # 1. Projections (fused or not)
        if getattr(attn, "fused_projections", False) and hasattr(attn, "to_qkv"):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)

        # 2. Keys and values of this frame, then of the banked frames (masked when not filled/used)
        r = bank.read_slots
        bk, bv = bk[:r], bv[:r]
        bo = bo_all[:r] if bo_all is not None else None
        c = key.shape[-1]
        keys = torch.cat([key, bk.transpose(0, 1).reshape(b, r * n, c)], dim=1)
        values = torch.cat([value, bv.transpose(0, 1).reshape(b, r * n, c)], dim=1)
        bank_keys = mask[:r, None].expand(r, n).reshape(1, r * n)
        key_mask = torch.cat([torch.ones_like(bank_keys[:, :n]), bank_keys], dim=1)

        heads = attn.heads
        hd = c // heads
        q = query.view(b, -1, heads, hd).transpose(1, 2)
        k = keys.view(b, -1, heads, hd).transpose(1, 2)
        v = values.view(b, -1, heads, hd).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask.view(1, 1, 1, -1), dropout_p=0.0,
                                             is_causal=False)
        out = out.transpose(1, 2).reshape(b, -1, heads * hd).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b4, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor
        plain = out

        # 3. Feature fusion: tokens very like a banked output token move towards it
        tok = plain if input_ndim == 3 else plain.flatten(2).transpose(1, 2)
        if bo is not None and (bank.static or bank._io is not None or bank.fusion_host > 0):
            flat = bo.transpose(0, 1).reshape(b, r * n, -1)
            sim = F.normalize(tok, dim=-1) @ F.normalize(flat, dim=-1).transpose(1, 2)
            sim = sim.masked_fill(~bank_keys.view(1, 1, -1), -2.0)  # an unused slot is never the nearest
            best, idx = sim.max(dim=-1)
            nearest = torch.gather(flat, 1, idx.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
            fused = torch.where((best >= FUSION_THRESHOLD).unsqueeze(-1), torch.lerp(tok, nearest, fusion), tok)
            out = fused if input_ndim == 3 else fused.transpose(1, 2).reshape(plain.shape)

        # 4. This frame into the written slot (if any): the pre-fusion values, as StreamV2V banks them
        w = write[:r].view(r, 1, 1, 1)
        new_o = torch.where(w, tok.unsqueeze(0), bo) if bo is not None else None
        bank._store(i, r, (torch.where(w, key.unsqueeze(0), bk), torch.where(w, value.unsqueeze(0), bv), new_o))
        return out


class CachedAttention:
    """The engine's cached-attention knobs and bank (a base of `StreamEngine`; see the module
    docstring). Uses the engine's unet, unet_batch_size, latent size, device and dtype."""

    attn_bank = 0
    attn_refresh = 1
    attn_fusion = 0.0
    _attn: AttentionBank | None = None
    _attn_graph: str | None = None  # the graphed backend holding the engine, if any
    _attn_graph_armed = False  # whether its graph was captured with the bank

    @property
    def attention_bank(self) -> AttentionBank | None:
        """The bank (None until cached attention is first switched on)."""
        return self._attn

    @property
    def attention_active(self) -> bool:
        """Whether frames run through the bank (on, or held by a graph captured with it)."""
        return self._attn is not None and self._attn.installed

    def _bank(self) -> AttentionBank:
        if self._attn is None:
            unet = self.pipe.unet  # the module itself, not a backend's swapped callable
            self._attn = AttentionBank(unet, self.unet_batch_size, (self.latent_height, self.latent_width),
                                       self.device, self.dtype)
            self._attn.control.every.fill_(self.attn_refresh)
            self._attn.control.fusion.fill_(self.attn_fusion)
            # the motion guard's scene cut (engine/feedback.py) forgets the bank too: no ghost of the old scene
            hooks = getattr(self, "scene_cut_hooks", None)
            if hooks is not None:
                hooks.append(self.reset_attention_bank_on)
            self._attn.fusion_host = self.attn_fusion
        return self._attn

    def route_attention(self) -> None:
        """Before each UNet call: point the UNet's self-attention at this engine's bank and set this
        frame's slot mask and write slot (on), or at nothing (off; a dict look-up when the UNet
        never had the bank)."""
        if self._attn is not None and self._attn.installed:
            router = router_for(self.pipe.unet)
            router.install()  # a no-op unless another engine's "off" or a fuse replaced them
            router.bank = self._attn
            if self.use_denoising_batch:
                self._attn.control.begin_frame()
        else:
            router = router_for(self.pipe.unet, create=False)
            if router is not None:
                router.bank = None

    @torch.no_grad()
    def set_attn_bank(self, frames: int) -> None:
        """0..4 past frames each self-attention layer also attends to (0: off). A change refills
        the bank from the next frame."""
        frames = _whole("attn_bank", frames, 0, MAX_BANK_FRAMES)
        if frames and not getattr(self, "use_denoising_batch", True):
            raise ConfigError("cached attention runs on the stream batch: use_denoising_batch=False calls the UNet "
                              "once per step, so set attn_bank 0 or use the stream batch")
        if frames and self._attn_graph is not None and not self._attn_graph_armed:
            raise ConfigError(f"the {self._attn_graph} backend captured its graph without cached attention: "
                              "start dreamcam with --attn-bank N (N > 0) to use it there, or use --backend eager")
        if frames == self.attn_bank:
            return
        self.attn_bank = frames
        if frames == 0 and self._attn is None:
            return
        bank = self._bank()
        bank.frames_host = frames
        bank.control.frames.fill_(frames)
        bank.reset()
        if frames:
            bank.installed = True
            router_for(self.pipe.unet).install()
        elif self._attn_graph is None:  # eager: the UNet's own processors again, bit for bit as without the bank
            bank.installed = False
            router_for(self.pipe.unet).uninstall()

    @torch.no_grad()
    def set_attn_refresh(self, n: int) -> None:
        """Bank a new frame every n frames (1 = every frame)."""
        self.attn_refresh = _whole("attn_refresh", n, 1, MAX_REFRESH)
        if self._attn is not None:
            self._attn.control.every.fill_(self.attn_refresh)

    @torch.no_grad()
    def set_attn_fusion(self, w: float) -> None:
        """0..1: how far output tokens move towards a banked token at least 0.98 alike (0 = off)."""
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0.0 <= w <= 1.0:
            raise ConfigError(f"attn_fusion must be a number between 0 and 1, got {w!r}")
        self.attn_fusion = float(w)
        if self._attn is not None:
            self._attn.control.fusion.fill_(self.attn_fusion)
            self._attn.fusion_host = self.attn_fusion

    @torch.no_grad()
    def reset_attention_bank(self) -> None:
        """Forget the banked frames (a scene cut): the bank refills from the next frame, and nothing
        of the old scene is attended to again. No-op while cached attention was never on."""
        if self._attn is not None:
            self._attn.reset()

    def reset_attention_bank_on(self, cut: torch.Tensor) -> None:
        """`reset_attention_bank` where the 0-dim device tensor `cut` is 1 (the motion guard saw a
        scene cut), with device ops only, so a captured graph holds it: the refresh counters restart,
        which hides every filled slot from this frame on and refills the bank from slot 0."""
        if self._attn is not None:
            self._attn.control.restart_where(cut)

    def attention_state(self) -> tuple[torch.Tensor, ...]:
        """The tensors a frame writes for the next one through cached attention (bank and
        counters; empty while it is off), which a graphed backend copies to undo its warm-up."""
        return self._attn.tensors() if self.attention_active else ()

    def hold_attention_for_graph(self, backend: str) -> None:
        """A graphed backend is about to warm up and capture: fix the bank's shapes (every slot,
        fusion always computed) when cached attention is on, or refuse turning it on later when
        it is off. Also puts the processors back where fusing projections replaced them."""
        self._attn_graph = backend
        self._attn_graph_armed = self.attention_active
        if self._attn_graph_armed:
            router_for(self.pipe.unet).install()
            self._attn.static = True

    def release_attention_from_graph(self) -> None:
        """The graphed backend is closed: eager rules again, and the UNet's processors are what the
        knob says (banked while on, its own while off). Idempotent: a backend calls it again after
        unfusing projections, which puts back the processors saved when it fused them."""
        self._attn_graph, self._attn_graph_armed = None, False
        if self._attn is not None:
            self._attn.static = False
            self._attn.installed = bool(self.attn_bank)
        router = router_for(self.pipe.unet, create=False)
        if router is not None and self.attention_active:
            router.install()
        elif router is not None:
            router.uninstall()


def _whole(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be a whole number between {lo} and {hi}, got {value!r}")
    return value
