"""SAIP: scale-aware image pretraining (CSM + CSR + CSS with an EMA expert),
docs/method.md#the-saip-objective.

One step, ViT-Tiny at the paper's views (B images):

- student, one pass per view size: the two globals (2B, 256x128; final CLS, block-6 tokens, last-block
  qk/vv logits), the six locals (6B, 128x64), the rescaled ROI crop l_7 and the rescaled small anchor r
  (one pass each, or one together when their sizes agree);
- expert (EMA of the whole wrapper), no grad: the two globals (CLS + attention logits) and the canvas
  through blocks 0-6 + ``inter_norm``;
- CSM: DINO multi-crop CE (10 student views vs 2 teacher views, 18 pairs) + same-view KL on the qk and
  vv attention maps; CSR: x_g x1.25 with the anchor-grid mask, visible tokens through blocks 0-6 +
  ``inter_norm``, MAE decoder fed the masked CLS and the anchor's block-6 CLS, norm-pix MSE on removed
  patches; CSS: dynamic-kernel search of the anchor (full scale) and of l_7 (rescaled) in the canvas
  (expert block-6 tokens), BCE vs the paste masks at the canvas token grid.

Block-6 features are taken from the same student passes that give the final CLS (the release runs
extra passes for them; the math is the same). ``inter_norm`` is the method's own LayerNorm, so the
exported backbone stays a plain timm model.

Hybrid / ConvNet backbones: CSM on the globally pooled last stage (no attention term: there is no
last-block token attention), CSS on the stride-16 stage (its flattened map with the pooled vector as
CLS), no CSR (as the authors' TinyViT wrapper: CSM + CSS). ``csr: true`` with such a backbone is refused.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.errors import SpecError
from saip_bench.pretrain.base import METHODS, PretrainMethod
from saip_bench.pretrain.components.css import CSSDecoder
from saip_bench.pretrain.components.dino import DINOHead, DINOLoss, entropy
from saip_bench.pretrain.components.ema import EMATeacher
from saip_bench.pretrain.components.mae_decoder import MAEDecoder, masked_patch_mse, masking_from_noise
from saip_bench.pretrain.components.vit import vit_forward, vit_forward_visible
from saip_bench.pretrain.views import SAIPViewConfig, colour_augments, make_saip_views


class ViewSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    global_size: tuple[int, int] = (256, 128)
    local_size: tuple[int, int] = (128, 64)
    n_local: int = Field(6, ge=0)
    scales: tuple[float, ...] = (0.75, 0.875, 1.125, 1.25)
    rescale_rounding: Literal["pad", "round16"] = "pad"
    masked_scale: float = 1.25
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    canvas_size: tuple[int, int] = (224, 224)
    paste_alpha: float = 0.7
    # ColorAugment fields overriding the photometric ops of every view (e.g. {jitter_p: 0, grayscale_p: 0});
    # empty = the DINO pipeline of the authors' code
    colour: dict[str, float] = Field(default_factory=dict)

    @field_validator("colour")
    @classmethod
    def _known_colour_fields(cls, value: dict[str, float]) -> dict[str, float]:
        colour_augments(value)  # raises ValueError naming unknown fields
        return value


class SAIPConfig(BaseModel):
    """Defaults are the paper's (docs/method.md#optimisation-and-schedule, #the-saip-objective)."""

    model_config = ConfigDict(extra="forbid")
    csm: bool = True
    csm_attn: bool = True
    csr: bool | Literal["auto"] = "auto"  # auto: on for ViT, off otherwise
    css: bool = True
    views: ViewSettings = Field(default_factory=ViewSettings)
    head_out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float | None = None
    warmup_teacher_steps: int = 0
    center_momentum: float = 0.9
    tap_block: int = 6  # ViT block whose output (+ inter_norm) feeds CSR and CSS
    csr_dim: int = 512
    csr_depth: int = 8
    csr_heads: int = 16
    norm_pix_loss: bool = True
    css_dim: int = 512
    css_heads: int = 16
    css_self_blocks: int = 2
    css_conv_layers: int = 3
    momentum_base: float = 0.996
    momentum_final: float = 1.0


def parse_config(config: dict[str, Any]) -> SAIPConfig:
    try:
        return SAIPConfig.model_validate(config)
    except ValidationError as exc:
        raise SpecError(f"saip method config: {exc}") from exc


def _tap_stage(backbone: Backbone) -> int:
    """Stage index of stride 16 (the counterpart of ViT block 6's grid) for hybrid/ConvNet bodies."""
    for index, stage in enumerate(backbone.stages):
        if stage.reduction == 16:
            return index
    return max(0, len(backbone.stages) - 2)


class SAIPNet(nn.Module):
    """Backbone + inter_norm + the three decoders; the expert is an EMA copy of this whole module."""

    def __init__(self, backbone: Backbone, cfg: SAIPConfig, use_csr: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.is_vit = backbone.family == "vit"
        if self.is_vit:
            tap_dim = backbone.num_features
            self.tap_index = cfg.tap_block
            self.patch = backbone.reduction
        else:
            self.tap_index = _tap_stage(backbone)
            tap_dim = backbone.stages[self.tap_index].channels
            self.patch = backbone.stages[self.tap_index].reduction
        self.inter_norm = nn.LayerNorm(tap_dim, eps=1e-6)
        self.csm_head = (
            DINOHead(backbone.num_features, cfg.head_out_dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim)
            if cfg.csm
            else None
        )
        anchor_grid = (cfg.views.global_size[0] // self.patch, cfg.views.global_size[1] // self.patch)
        self.csr_decoder = (
            MAEDecoder(
                tap_dim,
                cfg.csr_dim,
                cfg.csr_depth,
                cfg.csr_heads,
                patch_size=self.patch,
                pos_grid=anchor_grid,
                num_prefix=2,
            )
            if use_csr
            else None
        )
        self.css_decoder = (
            CSSDecoder(tap_dim, tap_dim, cfg.css_dim, cfg.css_heads, cfg.css_self_blocks, cfg.css_conv_layers)
            if cfg.css
            else None
        )

    # -------------------------------------------------------------- encoders
    def encode(
        self, images: torch.Tensor, tap: bool = False, attn_maps: bool = False
    ) -> dict[str, torch.Tensor]:
        """Final CLS (``cls``), optionally ``tap`` tokens (B, 1+N, C; inter-normed, CLS first),
        ``grid`` and the last block's ``qk``/``vv`` logits (ViT)."""
        body = self.backbone.body
        if self.is_vit:
            out = vit_forward(body, images, taps=(self.tap_index,) if tap else (), attn_maps=attn_maps)
            result = {"cls": out.tokens[:, 0], "grid": out.grid}
            if tap:
                result["tap"] = self.inter_norm(out.taps[self.tap_index])
            if attn_maps:
                result["qk"], result["vv"] = out.attn_qk, out.attn_vv
            return result
        last = len(self.backbone.stages) - 1
        indices = sorted({self.tap_index, last}) if tap else [last]
        maps = body.forward_intermediates(images, indices=indices, intermediates_only=True)
        fmaps = dict(zip(indices, maps, strict=True))
        result = {"cls": fmaps[last].mean(dim=(2, 3))}
        if tap:
            fmap = fmaps[self.tap_index]
            tokens = fmap.flatten(2).transpose(1, 2)
            tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
            result["tap"] = self.inter_norm(tokens)
            result["grid"] = tuple(fmap.shape[-2:])
        return result

    def encode_tap_only(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Blocks 0..tap (+ inter_norm) only: the expert's canvas features."""
        body = self.backbone.body
        if self.is_vit:
            out = vit_forward(body, images, stop=self.tap_index + 1)
            return self.inter_norm(out.tokens), out.grid
        fmap = body.forward_intermediates(
            images, indices=[self.tap_index], intermediates_only=True, stop_early=True
        )[0]
        tokens = fmap.flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
        return self.inter_norm(tokens), tuple(fmap.shape[-2:])

    def encode_masked(
        self, images: torch.Tensor, ids_keep: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        tokens, grid = vit_forward_visible(self.backbone.body, images, ids_keep, stop=self.tap_index + 1)
        return self.inter_norm(tokens), grid


def attention_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(softmax(teacher) || softmax(student)), averaged over batch, heads and query rows."""
    log_t = F.log_softmax(teacher_logits.float(), dim=-1)
    log_s = F.log_softmax(student_logits.float(), dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def css_bce(logits: torch.Tensor, paste_mask: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits of (B, h, w) mask logits against the (B, 1, H, W) paste mask, nearest-downsampled
    to the logit grid and averaged over cells."""
    target = F.interpolate(paste_mask.float(), size=tuple(logits.shape[-2:]), mode="nearest")[:, 0]
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def tokens_to_fmap(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, 1+HW, C) with CLS first -> (B, C, H, W)."""
    patches = tokens[:, 1:]
    return patches.transpose(1, 2).reshape(tokens.shape[0], -1, grid[0], grid[1])


@METHODS.register("saip", paper="SAIP (Wang et al., 2025): CSM + CSR + CSS with an EMA expert")
class SAIP(PretrainMethod):
    """SAIP: cross-scale matching, reconstruction and search with an EMA expert (the paper's method)."""

    name = "saip"
    supported_families = frozenset({"vit", "hybrid", "convnet"})
    needs_backgrounds = True
    find_unused_parameters = False
    # the ROI crop and the small anchor are rescaled by one of ``views.scales`` per batch
    dynamic_view_dims: ClassVar[dict[str, tuple[int, ...]]] = {"roi_scaled": (2, 3), "anchor_scaled": (2, 3)}

    def __init__(self, backbone: Backbone, config: dict[str, Any]) -> None:
        super().__init__(backbone, config)
        cfg = parse_config(config)
        reason = self.unsupported_reason(backbone, config)
        if reason:
            raise SpecError(reason)
        self.cfg = cfg
        self.use_csr = cfg.csr is True or (cfg.csr == "auto" and backbone.family == "vit")
        self.use_attn = cfg.csm and cfg.csm_attn and backbone.family == "vit"
        if not (cfg.csm or self.use_csr or cfg.css):
            raise SpecError("saip: every objective is switched off (csm, csr, css)")
        self.student = SAIPNet(backbone, cfg, self.use_csr)
        self.teacher = EMATeacher(self.student, cfg.momentum_base, cfg.momentum_final)
        self.dino_loss = (
            DINOLoss(
                cfg.head_out_dim,
                cfg.student_temp,
                cfg.teacher_temp,
                cfg.warmup_teacher_temp,
                cfg.warmup_teacher_steps,
                cfg.center_momentum,
            )
            if cfg.csm
            else None
        )
        patch = self.student.patch
        v = cfg.views
        self.view_cfg = SAIPViewConfig(
            global_size=tuple(v.global_size),
            local_size=tuple(v.local_size),
            n_local=v.n_local,
            scales=tuple(v.scales),
            rescale_rounding=v.rescale_rounding,
            masked_scale=v.masked_scale,
            mask_keep=1.0 - v.mask_ratio,
            canvas_size=tuple(v.canvas_size),
            paste_alpha=v.paste_alpha,
            patch=patch,
            with_masked=self.use_csr,
            with_canvas=cfg.css,
            **colour_augments(v.colour),
        )
        self.needs_backgrounds = cfg.css  # instance attribute: no canvas, no backgrounds needed
        # pooled-stage encoders leave the body's head norm unused
        self.find_unused_parameters = backbone.family != "vit"

    @classmethod
    def unsupported_reason(cls, backbone: Backbone, config: dict[str, Any]) -> str | None:
        reason = super().unsupported_reason(backbone, config)
        if reason:
            return reason
        if config.get("csr") is True and backbone.family != "vit":
            return (
                f"saip: CSR (masked visible-token reconstruction) needs a ViT backbone; {backbone.name!r} is "
                f"{backbone.family}: set method.csr to false or 'auto' (CSM + CSS, as the authors' TinyViT)"
            )
        return None

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **self.cfg.model_dump(mode="json"),
            "csr_active": self.use_csr,
            "csm_attn_active": self.use_attn,
        }

    def no_weight_decay_names(self) -> set[str]:
        return {"pos_embed", "cls_token", "mask_token", "reg_token"}

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]

    def make_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        return make_saip_views(
            batch["image"], batch["sample_seed"], batch["step_seed"], self.view_cfg, batch.get("background")
        )

    def on_after_step(self, step: int, total_steps: int) -> None:
        self.teacher.update(self.student, step, total_steps)
        if self.dino_loss is not None:
            self.dino_loss.set_step(step)

    # ------------------------------------------------------------------ the step
    def forward(self, views: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        student, teacher = self.student, self.teacher.module
        batch = int(views["batch_size"])
        need_tap = self.use_csr or cfg.css
        out: dict[str, torch.Tensor] = {}
        terms: list[torch.Tensor] = []

        if cfg.csm:
            glob = student.encode(views["global"], tap=need_tap, attn_maps=self.use_attn)
            anchor_tap = glob["tap"][:batch] if need_tap else None
        else:  # ablations without CSM only need x_a up to the tap block
            anchor_tap = student.encode_tap_only(views["global"][:batch])[0]
        roi = student.encode(views["roi_scaled"], tap=cfg.css) if (cfg.csm or cfg.css) else None

        if cfg.csm:
            local_cls = student.encode(views["local"])["cls"] if "local" in views else None
            anchor_cls = student.encode(views["anchor_scaled"])["cls"]
            cls_all = (
                [glob["cls"]] + ([local_cls] if local_cls is not None else []) + [roi["cls"], anchor_cls]
            )
            logits, embedding = student.csm_head.forward_with_embedding(torch.cat(cls_all))
            student_logits = logits.view(-1, batch, logits.shape[-1])
            with torch.no_grad():
                t_glob = teacher.encode(views["global"], attn_maps=self.use_attn)
                teacher_logits = teacher.csm_head(t_glob["cls"]).view(2, batch, -1)
            rep = self.dino_loss(student_logits, teacher_logits)
            out["loss/csm_rep"] = rep
            terms.append(rep)
            if self.use_attn:
                attn = attention_kl(t_glob["qk"], glob["qk"]) + attention_kl(t_glob["vv"], glob["vv"])
                out["loss/csm_attn"] = attn
                out["stat/csm_attn_x100"] = attn.detach() * 100.0
                terms.append(attn)
            with torch.no_grad():
                out["stat/embedding_std"] = embedding[: 2 * batch].float().std(dim=0).mean()
                out["stat/teacher_entropy"] = entropy(self.dino_loss.teacher_probs(teacher_logits))

        if self.use_csr:
            ids_keep, ids_restore, mask = masking_from_noise(views["mask_noise"], int(views["mask_keep"]))
            visible, grid = student.encode_masked(views["masked"], ids_keep)
            prefix = torch.stack([visible[:, 0], anchor_tap[:, 0]], dim=1)
            pred = student.csr_decoder(prefix, visible[:, 1:], ids_restore, grid)
            csr = masked_patch_mse(pred, views["masked"], mask, student.patch, cfg.norm_pix_loss)
            out["loss/csr"] = csr
            terms.append(csr)

        if cfg.css:
            with torch.no_grad():
                canvas_tokens, canvas_grid = teacher.encode_tap_only(views["canvas"])
            canvas_fmap = tokens_to_fmap(canvas_tokens, canvas_grid)
            memory, mask_features = student.css_decoder.canvas_features(canvas_fmap)
            css_inst = css_bce(student.css_decoder(anchor_tap, memory, mask_features), views["inst_mask"])
            css_roi = css_bce(student.css_decoder(roi["tap"], memory, mask_features), views["roi_mask"])
            out["loss/css_inst"] = css_inst
            out["loss/css_roi"] = css_roi
            terms += [css_inst, css_roi]

        out["loss"] = torch.stack([t.float() for t in terms]).sum()
        return out
