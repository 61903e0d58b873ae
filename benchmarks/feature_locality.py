"""How much patch detail do a backbone's tokens keep? Held-out ridge R² per block, random init vs checkpoints.

Explains the dense pretrained-vs-random results (docs/tasks_dense.md): a random-init ViT's tokens are a
near-lossless linear code of the patch pixels at every block, so a frozen dense head on them is a small
conv net on pixels. Prints a markdown table (block x backbone: pixel R², within-patch detail R²).

    python benchmarks/feature_locality.py --images '/tmp/w/lip/TrainVal_images/train_images/*.jpg' \
        --checkpoint saip=/tmp/pvr/pretrain/saip-nocolour-1200/backbone.safetensors --blocks 0,3,5,11
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import saip_bench  # noqa: F401  (installs the torchvision shim before timm)
from saip_bench.commands.profile import parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="glob of image files (sorted; first --max-images)")
    parser.add_argument("--checkpoint", action="append", default=[], help="name=path/to/backbone.safetensors")
    parser.add_argument("--backbone", default="vit_tiny", help="architecture of the random-init row")
    parser.add_argument("--size", type=parse_size, default=(128, 96), help="HxW the images are resized to")
    parser.add_argument("--blocks", default="0,3,5,11")
    parser.add_argument("--max-images", type=int, default=160)
    parser.add_argument("--alpha", type=float, default=10.0, help="ridge penalty")
    parser.add_argument("--seed", type=int, default=0, help="random-init seed")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from saip_bench.errors import UserError
    from saip_bench.tasks.common import load_rgb, pil_to_tensor
    from saip_bench.tasks.dense.locality import block_table, probe_backbones, token_locality

    size = args.size
    paths = sorted(glob.glob(args.images))[:args.max_images]
    if len(paths) < 2:
        raise UserError(f"--images {args.images!r} matched {len(paths)} file(s); the probe needs at least 2")
    images = torch.stack([pil_to_tensor(load_rgb(p), size) for p in paths])
    blocks = [int(b) for b in args.blocks.split(",")]
    backbones = probe_backbones(args.backbone, size, args.checkpoint, args.seed)
    results = {name: token_locality(b, images, blocks, args.alpha) for name, b in backbones.items()}
    print(f"\n{len(paths)} images at {size[0]}x{size[1]} (fit on the first half, R² on the second half); "
          f"ridge alpha {args.alpha}\n")
    print(block_table(results, blocks, "pixel / detail R²",
                      lambda r: f"{r['pixel_r2']:.2f} / {r['detail_r2']:.2f}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {**vars(args), "json": str(args.json)}
        args.json.write_text(json.dumps({"settings": settings, "images": len(paths), "results": results},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
