"""The image tower: timm's VisionTransformer returning all tokens, with BLIP's state-dict keys."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor
from torch.utils.checkpoint import checkpoint

# Named sizes (patch, width, depth, heads), as in BLIP.
VIT_SIZES = {
    "base": (16, 768, 12, 12),
    "large": (16, 1024, 24, 16),
}


@dataclass(frozen=True)
class ViTSize:
    patch_size: int
    width: int
    depth: int
    heads: int


VIT_MAPPING_KEYS = ("patch_size", "width", "depth", "heads")


def vit_size(vit: str | Mapping) -> ViTSize:
    """Resolve the config value ``vit``: ``base``, ``large``, or a mapping {width, depth, heads, patch_size}.

    Ranges and divisibility are checked, and a left-out patch_size filled in, by the config schema
    (``configs.validate``); here only what the tower cannot be built without.
    """
    if isinstance(vit, str):
        if vit not in VIT_SIZES:
            raise ValueError(f"vit must be one of {sorted(VIT_SIZES)} or a mapping, not {vit!r}")
        return ViTSize(*VIT_SIZES[vit])
    if isinstance(vit, Mapping):
        missing = [k for k in VIT_MAPPING_KEYS if k not in vit]
        if missing:
            raise ValueError(f"vit mapping lacks {missing} (needs {list(VIT_MAPPING_KEYS)}): "
                             "build the model from a run config checked by configs.validate")
        return ViTSize(*(int(vit[k]) for k in VIT_MAPPING_KEYS))
    raise TypeError(f"vit must be a string or a mapping, not {type(vit).__name__}")


class VisionTower(VisionTransformer):
    """ViT without a head whose forward returns all tokens (B, 1+N, D).

    Gradient checkpointing wraps the last ``ckpt_layer`` blocks with ``torch.utils.checkpoint`` at
    call time, so the state-dict keys stay exactly BLIP's (``blocks.{i}.attn.qkv.weight``...).
    """

    def __init__(self, size: ViTSize, image_size: int, drop_path_rate: float = 0.0,
                 grad_ckpt: bool = False, ckpt_layer: int = 0):
        super().__init__(img_size=image_size, patch_size=size.patch_size, embed_dim=size.width,
                         depth=size.depth, num_heads=size.heads, mlp_ratio=4.0, qkv_bias=True,
                         num_classes=0, global_pool="", drop_path_rate=drop_path_rate)
        self.grad_ckpt = grad_ckpt
        self.ckpt_from = size.depth - ckpt_layer if grad_ckpt else size.depth
        self.width = size.width

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def forward(self, images: Tensor, cls_only: bool = False) -> Tensor:
        """(B, 3, H, W) -> (B, 1+N, D): the class token followed by every patch token.

        With ``cls_only`` -> (B, 1, D): the class token alone, its last block computed for it alone (every
        token still gives its key and value): exact, for callers that read nothing else (the momentum
        tower's ITC feature).
        """
        x = self.patch_embed(images)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = self.pos_drop(torch.cat([cls, x], dim=1) + self.pos_embed)
        use_ckpt = self.grad_ckpt and self.training and torch.is_grad_enabled()
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            run = partial(class_token_block, blk) if cls_only and i == last else blk
            x = checkpoint(run, x, use_reentrant=False) if use_ckpt and i >= self.ckpt_from else run(x)
        return self.norm(x)


def class_token_block(blk, x: Tensor) -> Tensor:
    """timm's ``Block.forward`` on (B, 1+N, D) tokens, computed for the class token only -> (B, 1, D).

    The keys and values of every token are needed; the query, the attention output, the projection and
    the MLP only for the class token. Same modules, same order, so the result equals ``blk(x)[:, :1]``
    (drop-path draws one value per sample either way). Written for every timm release the requirements
    admit: the attention width is heads x head width (``attn_dim`` exists only in newer releases), and
    the output norm and the gate, which older releases lack, count as absent there.
    """
    attn = blk.attn
    y = blk.norm1(x)
    b, n, _ = y.shape
    h, dh = attn.num_heads, attn.head_dim
    width = h * dh
    w, bias = attn.qkv.weight, attn.qkv.bias
    kv = F.linear(y, w[width:], None if bias is None else bias[width:])
    k, v = kv.reshape(b, n, 2, h, dh).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, dh) each
    q = F.linear(y[:, :1], w[:width], None if bias is None else bias[:width]).reshape(b, 1, h, dh).transpose(1, 2)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = out.transpose(1, 2).reshape(b, 1, width)
    if getattr(attn, "norm", None) is not None:
        out = attn.norm(out)
    if getattr(attn, "gate", None) is not None:
        out = out * attn.gate(y[:, :1]).sigmoid()
    out = attn.proj_drop(attn.proj(out))
    cls = x[:, :1] + blk.drop_path1(blk.ls1(out))
    return cls + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(cls))))


def create_vit(vit: str | Mapping, image_size: int, grad_ckpt: bool = False, ckpt_layer: int = 0,
               drop_path_rate: float = 0.0) -> tuple[VisionTower, int]:
    """Build the image tower; returns (tower, width)."""
    size = vit_size(vit)
    if image_size % size.patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {size.patch_size}")
    if not 0 <= ckpt_layer <= size.depth:
        raise ValueError(f"vit_ckpt_layer {ckpt_layer} must lie in [0, {size.depth}]")
    tower = VisionTower(size, image_size, drop_path_rate, grad_ckpt, ckpt_layer)
    return tower, size.width


def interpolate_pos_embed(pos_embed: Tensor, num_patches: int, num_extra: int = 1) -> Tensor:
    """Resize a (1, extra+G*G, D) position table to ``num_patches`` grid tokens (bicubic), keeping extras.

    Used when a checkpoint was trained at another resolution, e.g. 197 -> 577 tokens for 224 -> 384 px.
    """
    old_grid = int(round((pos_embed.shape[1] - num_extra) ** 0.5))
    new_grid = int(round(num_patches ** 0.5))
    if old_grid * old_grid != pos_embed.shape[1] - num_extra or new_grid * new_grid != num_patches:
        raise ValueError(f"position embeddings of {pos_embed.shape[1]} tokens do not form a square grid "
                         f"of {num_patches} patches")
    if old_grid == new_grid:
        return pos_embed
    extra, grid = pos_embed[:, :num_extra], pos_embed[:, num_extra:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)
    return torch.cat([extra, grid], dim=1)
