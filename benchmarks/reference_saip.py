"""A SAIP step written the way the authors' release computes it, for speed comparisons (same math).

Written from docs/method.md#the-saip-objective (not copied): views are built per image (the release builds
them per
sample in the data loader with PIL) and collated into one batch per view; every view goes through the
backbone in its own forward pass (DINO multi-crop style); attention is the unfused softmax(QK^T)V; the
expert encodes each global view in its own pass; the CSS decoder recomputes the canvas features for each
query; the DINO loss loops over (teacher, student) pairs; everything in fp32.

Choices that *favour* the reference (so the speed-up is not inflated): block-6 features are taken from
the same pass as the final CLS (the release's exact pass structure for them is UNCONFIRMED), and the
per-image view loop reuses our tensor crop/colour ops instead of PIL.

``reference_step(method, batch)`` uses the weights of a ``SAIP`` instance, so ``check_same_math`` can
assert that both implementations give the same loss terms on the same views.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

import saip_bench  # noqa: F401  (torchvision shim before timm)
from saip_bench.pretrain.components.mae_decoder import masked_patch_mse, masking_from_noise
from saip_bench.pretrain.components.vit import embed, vit_forward_visible
from saip_bench.pretrain.methods.saip import SAIP, tokens_to_fmap
from saip_bench.pretrain.views import make_saip_views


@contextlib.contextmanager
def unfused_attention(module: torch.nn.Module) -> Iterator[None]:
    """timm attention modules with ``fused_attn=False`` (explicit softmax(QK^T)V), restored after."""
    changed = [m for m in module.modules() if getattr(m, "fused_attn", False)]
    for m in changed:
        m.fused_attn = False
    try:
        yield
    finally:
        for m in changed:
            m.fused_attn = True


def per_image_views(method: SAIP, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Views made one image at a time, then collated per view (a list of per-view batches)."""
    per_sample = []
    for i in range(batch["image"].shape[0]):
        per_sample.append(
            make_saip_views(
                batch["image"][i : i + 1],
                batch["sample_seed"][i : i + 1],
                batch["step_seed"],
                method.view_cfg,
                batch["background"][i : i + 1] if "background" in batch else None,
            )
        )
    n_local = method.view_cfg.n_local
    views: dict[str, Any] = {
        "x_a": torch.cat([v["global"][0:1] for v in per_sample]),
        "x_g": torch.cat([v["global"][1:2] for v in per_sample]),
        "locals": [torch.cat([v["local"][j : j + 1] for v in per_sample]) for j in range(n_local)],
    }
    for key in ("roi_scaled", "anchor_scaled", "masked", "mask_noise", "canvas", "roi_mask", "inst_mask"):
        if key in per_sample[0]:
            views[key] = torch.cat([v[key] for v in per_sample])
    views["mask_keep"] = per_sample[0].get("mask_keep")
    return views


def _vit_pass(net, images: torch.Tensor, tap: int | None = None, attn: bool = False) -> dict[str, Any]:
    """One unfused forward; optionally the block-``tap`` tokens and the last block's attention maps."""
    body = net.backbone.body
    x, _ = embed(body, images)
    out: dict[str, Any] = {}
    for index, block in enumerate(body.blocks):
        if attn and index == len(body.blocks) - 1:
            a = block.attn
            y = block.norm1(x)
            b, n, _ = y.shape
            q, k, v = a.qkv(y).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            out["qk"] = ((q * a.scale) @ k.transpose(-2, -1)).softmax(-1)
            out["vv"] = ((v * a.scale) @ v.transpose(-2, -1)).softmax(-1)
            h = (out["qk"] @ v).transpose(1, 2).reshape(b, n, -1)
            x = x + a.proj(h)
            x = x + block.mlp(block.norm2(x))
        else:
            x = block(x)
        if tap is not None and index == tap:
            out["tap"] = net.inter_norm(x)
    out["cls"] = body.norm(x)[:, 0]
    return out


def _kl(teacher: torch.Tensor, student: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return (teacher * torch.log((teacher + eps) / (student + eps))).sum(-1).mean()


def reference_forward(method: SAIP, views: dict[str, Any]) -> dict[str, torch.Tensor]:
    cfg = method.cfg
    student, teacher = method.student, method.teacher.module
    tap = student.tap_index
    out: dict[str, torch.Tensor] = {}
    with unfused_attention(student), unfused_attention(teacher):
        s_a = _vit_pass(student, views["x_a"], tap, attn=method.use_attn)
        s_g = _vit_pass(student, views["x_g"], None, attn=method.use_attn)
        student_cls = [s_a["cls"], s_g["cls"]]
        student_cls += [_vit_pass(student, local)["cls"] for local in views["locals"]]
        roi = _vit_pass(student, views["roi_scaled"], tap)
        student_cls += [roi["cls"], _vit_pass(student, views["anchor_scaled"])["cls"]]
        student_logits = [student.csm_head(c) for c in student_cls]
        with torch.no_grad():
            t_a = _vit_pass(teacher, views["x_a"], attn=method.use_attn)
            t_g = _vit_pass(teacher, views["x_g"], attn=method.use_attn)
            teacher_logits = [teacher.csm_head(t_a["cls"]), teacher.csm_head(t_g["cls"])]
        loss_fn = method.dino_loss
        temp = loss_fn.current_teacher_temp()
        teacher_probs = [F.softmax((t - loss_fn.center) / temp, dim=-1) for t in teacher_logits]
        total, pairs = 0.0, 0
        for iq, q in enumerate(teacher_probs):
            for v, s in enumerate(student_logits):
                if v == iq:
                    continue
                total = total + torch.sum(-q * F.log_softmax(s / loss_fn.student_temp, dim=-1), dim=-1).mean()
                pairs += 1
        out["loss/csm_rep"] = total / pairs
        loss_fn.update_center(torch.stack(teacher_logits))
        if method.use_attn:
            out["loss/csm_attn"] = 0.5 * (
                _kl(t_a["qk"], s_a["qk"])
                + _kl(t_a["vv"], s_a["vv"])
                + _kl(t_g["qk"], s_g["qk"])
                + _kl(t_g["vv"], s_g["vv"])
            )
        if method.use_csr:
            ids_keep, ids_restore, mask = masking_from_noise(views["mask_noise"], int(views["mask_keep"]))
            visible, grid = vit_forward_visible(
                student.backbone.body, views["masked"], ids_keep, stop=tap + 1
            )
            visible = student.inter_norm(visible)
            prefix = torch.stack([visible[:, 0], s_a["tap"][:, 0]], dim=1)
            pred = student.csr_decoder(prefix, visible[:, 1:], ids_restore, grid)
            out["loss/csr"] = masked_patch_mse(pred, views["masked"], mask, student.patch, cfg.norm_pix_loss)
        if cfg.css:
            with torch.no_grad():
                canvas_tokens, canvas_grid = teacher.encode_tap_only(views["canvas"])
            canvas_fmap = tokens_to_fmap(canvas_tokens, canvas_grid)
            for name, query, paste in (("inst", s_a["tap"], "inst_mask"), ("roi", roi["tap"], "roi_mask")):
                memory, mask_features = student.css_decoder.canvas_features(canvas_fmap)
                logits = student.css_decoder(query, memory, mask_features)
                target = F.interpolate(views[paste], size=canvas_grid, mode="nearest")[:, 0]
                out[f"loss/css_{name}"] = F.binary_cross_entropy_with_logits(logits, target)
    out["loss"] = sum(v for k, v in out.items() if k.startswith("loss/"))
    return out


def reference_step(method: SAIP, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Views + forward + backward, the release's way (fp32)."""
    views = per_image_views(method, batch)
    out = reference_forward(method, views)
    out["loss"].backward()
    return out


def check_same_math(method: SAIP, batch: dict[str, torch.Tensor], tol: float = 2e-3) -> dict[str, float]:
    """Both implementations on copies of the same weights and batch, fp32; returns |difference| per term."""
    ours, ref = copy.deepcopy(method), copy.deepcopy(method)
    with torch.no_grad():
        fast = ours(ours.make_views(batch, torch.Generator()))
    with torch.no_grad():
        slow = reference_forward(ref, per_image_views(ref, batch))
    diffs = {k: abs(float(fast[k]) - float(slow[k])) for k in fast if k.startswith("loss")}
    bad = {k: d for k, d in diffs.items() if d > tol * max(1.0, abs(float(slow[k])))}
    if bad:
        raise AssertionError(f"reference and saip-bench disagree: {bad}")
    return diffs
