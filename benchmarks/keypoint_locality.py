"""Do a backbone's tokens carry sub-patch keypoint positions? Held-out ridge R², random init vs checkpoints.

Explains the pose pretrained-vs-random results (docs/tasks_dense.md). Un-augmented GT-box crops of a COCO
keypoints dataset go through the pose task's own mmpose pipeline (affine crop, UDP heatmaps); a ridge
regression from each block's tokens (alone, and with their 3x3 neighbourhood) to the heatmap values inside
each token's patch is fitted on the train split and scored on the val split. A convex fit cannot fail by
optimisation, so a low R² means the features lack the positions, not that a head trained badly.

    python benchmarks/keypoint_locality.py --coco /tmp/w/coco \
        --checkpoint saip=/tmp/pvr/pretrain/saip-nocolour-1200/backbone.safetensors --blocks 0,5,11
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import saip_bench  # noqa: F401  (installs the torchvision shim before timm)
from saip_bench.commands.profile import parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, required=True, help="COCO keypoints root (native layout)")
    parser.add_argument("--checkpoint", action="append", default=[], help="name=path/to/backbone.safetensors")
    parser.add_argument("--backbone", default="vit_tiny", help="architecture of the random-init row")
    parser.add_argument("--size", type=parse_size, default=(128, 96), help="crop HxW (frozen protocol)")
    parser.add_argument("--sigma", type=float, default=1.0, help="UDP heatmap sigma (the frozen protocol's)")
    parser.add_argument("--blocks", default="0,5,11")
    parser.add_argument("--alpha", type=float, default=100.0, help="ridge penalty")
    parser.add_argument("--seed", type=int, default=0, help="random-init seed")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    from saip_bench.data.readers import read_dataset
    from saip_bench.errors import UserError
    from saip_bench.tasks.common import load_rgb
    from saip_bench.tasks.dense.locality import block_table, keypoint_locality, probe_backbones
    from saip_bench.tasks.dense.topdown import TopDownPipeline, codec_config, gt_instances, pose_meta

    data = read_dataset("coco", args.coco)
    meta = pose_meta("coco")
    pipeline = TopDownPipeline(meta, args.size, codec_config("udp", args.size, args.sigma), train=True,
                               augment=False)

    def crops(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        instances = gt_instances(data.splits[split], meta.num_keypoints, train=True)
        if not instances:
            raise UserError(f"{args.coco}: no labelled person in split {split!r}")
        made = [pipeline(i, np.asarray(load_rgb(i["path"]))) for i in instances]
        return torch.stack([c["image"] for c in made]), torch.stack([c["heatmaps"] for c in made])

    train, test = crops("train"), crops("val")
    blocks = [int(b) for b in args.blocks.split(",")]
    backbones = probe_backbones(args.backbone, args.size, args.checkpoint, args.seed)
    results = {name: keypoint_locality(b, train, test, blocks, args.alpha) for name, b in backbones.items()}
    print(f"\n{len(train[0])} train / {len(test[0])} val crops at {args.size[0]}x{args.size[1]}, "
          f"ridge alpha {args.alpha}; R² token alone / with its 3x3 neighbourhood\n")
    print(block_table(results, blocks, "token / 3x3", lambda r: f"{r['r2']:.3f} / {r['r2_3x3']:.3f}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, "crops": [len(train[0]), len(test[0])],
                                         "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
