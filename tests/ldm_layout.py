"""The original (LDM / Stability) key layout of single-file checkpoints, written from diffusers
modules: the inverse of diffusers' single-file conversion for the tiny architectures, so tests
can write a file laid out like those users download and load it through diffusers' real
`from_single_file` path. SD 1.x keys (`model.diffusion_model.`, `first_stage_model.`,
`cond_stage_model.transformer.`) and SDXL's (`conditioner.embedders.0.transformer.` for the CLIP
text encoder, `conditioner.embedders.1.model.` in OpenCLIP's layout for the second one)."""

from __future__ import annotations

import torch

RESNET_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
              "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def _rename(sd: dict, prefixes: dict[str, str], inner=None) -> dict:
    """Rewrite each key's longest matching diffusers prefix; `inner(prefix, rest)` renames inside it."""
    out = {}
    order = sorted(prefixes, key=len, reverse=True)
    for key, value in sd.items():
        hit = next((p for p in order if key.startswith(p)), None)
        if hit is None:
            raise KeyError(f"no LDM name for {key}")
        rest = key[len(hit):]
        out[prefixes[hit] + (inner(hit, rest) if inner else rest)] = value
    return out


def unet_to_ldm(unet) -> dict:
    cfg, n, L = unet.config, len(unet.config.block_out_channels), unet.config.layers_per_block
    p = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
         # SDXL: the added conditioning's embedding (pooled text embeddings and time ids)
         "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
         "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
         "mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
         "mid_block.resnets.1.": "middle_block.2."}
    for i in range(n):
        for j in range(L):
            p[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{(L + 1) * i + j + 1}.0."
            p[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{(L + 1) * i + j + 1}.1."
        if i < n - 1:
            p[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(L + 1) * (i + 1)}.0.op."
        for j in range(L + 1):
            p[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{(L + 1) * i + j}.0."
            p[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{(L + 1) * i + j}.1."
        if i < n - 1:
            has_attn = "CrossAttn" in cfg.up_block_types[i]
            p[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{(L + 1) * i + L}.{2 if has_attn else 1}."

    def inner(prefix: str, rest: str) -> str:
        if ".resnets." in prefix or prefix.startswith("mid_block.resnets"):
            head, _, tail = rest.partition(".")
            return f"{RESNET_LDM.get(head, head)}.{tail}"
        return rest

    return {f"model.diffusion_model.{k}": v for k, v in _rename(unet.state_dict(), p, inner).items()}


def vae_kl_to_ldm(vae) -> dict:
    n, L = len(vae.config.block_out_channels), vae.config.layers_per_block
    p = {"quant_conv.": "quant_conv.", "post_quant_conv.": "post_quant_conv."}
    for part in ("encoder", "decoder"):
        for name in ("conv_in.", "conv_out."):
            p[f"{part}.{name}"] = f"{part}.{name}"
        p[f"{part}.conv_norm_out."] = f"{part}.norm_out."
        p[f"{part}.mid_block.resnets.0."] = f"{part}.mid.block_1."
        p[f"{part}.mid_block.resnets.1."] = f"{part}.mid.block_2."
        p[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
    for i in range(n):
        for j in range(L):
            p[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
        for j in range(L + 1):
            p[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{n - 1 - i}.block.{j}."
        if i < n - 1:
            p[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
            p[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{n - 1 - i}.upsample."
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

    def inner(prefix: str, rest: str) -> str:
        if prefix.endswith("attn_1.") or "attentions" in prefix:
            for old, new in attn.items():
                if rest.startswith(old + "."):
                    return new + rest[len(old):]
        return rest.replace("conv_shortcut.", "nin_shortcut.")

    out = _rename(vae.state_dict(), p, inner)
    # the original VAE's attention projections are 1x1 convolutions
    return {f"first_stage_model.{k}": (v[:, :, None, None] if ".attn_1." in k and v.ndim == 2 else v)
            for k, v in out.items()}


def text_encoder_to_ldm(text_encoder) -> dict:
    # original checkpoints nest the HF CLIP text model under text_model. (transformers 5 drops it)
    return {
        f"cond_stage_model.transformer.{k if k.startswith('text_model.') else 'text_model.' + k}": v
        for k, v in text_encoder.state_dict().items()
    }


def sdxl_text_encoders_to_ldm(text_encoder, text_encoder_2) -> dict:
    """SDXL's two text encoders: the first as HF CLIP keys under conditioner.embedders.0.transformer.,
    the second in OpenCLIP's layout under conditioner.embedders.1.model. (fused q/k/v in_proj,
    resblocks, ln_final, text_projection transposed)."""
    out = {f"conditioner.embedders.0.transformer.{k if k.startswith('text_model.') else 'text_model.' + k}": v
           for k, v in text_encoder.state_dict().items()}
    sd = text_encoder_2.state_dict()
    pre = "conditioner.embedders.1.model."
    out[pre + "token_embedding.weight"] = sd["text_model.embeddings.token_embedding.weight"]
    out[pre + "positional_embedding"] = sd["text_model.embeddings.position_embedding.weight"]
    out[pre + "ln_final.weight"] = sd["text_model.final_layer_norm.weight"]
    out[pre + "ln_final.bias"] = sd["text_model.final_layer_norm.bias"]
    out[pre + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in range(text_encoder_2.config.num_hidden_layers):
        layer, block = f"text_model.encoder.layers.{i}.", f"{pre}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{block}attn.in_proj_{kind}"] = torch.cat([sd[f"{layer}self_attn.{q}_proj.{kind}"] for q in "qkv"])
            for hf, clip in names.items():
                out[f"{block}{clip}.{kind}"] = sd[f"{layer}{hf}.{kind}"]
    return out
