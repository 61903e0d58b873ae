"""Cost of one Fashionpedia fine-tune step at the recipe's input size (docs/tasks_multi_person.md).

One optimiser step as the ``finetune`` protocol runs it: a ViT-T backbone, the spec's recipe head (Mask R-CNN
on P2-P6, the knowledge-aware attribute head over 294 attributes), one image (the recipe's 1 image per GPU)
whose long side is the recipe's training scale (896 by default; 448-1120 with the multi-scale ratio), padded
to /32, with ``--instances`` garments; forward, backward and AdamW step. Prints the median step time over
``--steps`` steps after one warm-up step, the padded input size and the parameter counts.

    python benchmarks/fashionpedia_step.py --threads 2
    python benchmarks/fashionpedia_step.py --scale 1120 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import saip_bench  # noqa: F401  (torchvision shim before timm)


def synthetic_targets(size: tuple[int, int], count: int, num_attributes: int, generator):
    """``count`` rectangular garments of attribute-carrying categories, a few attributes each."""
    import torch

    from saip_bench.metrics.fashionpedia import CATS_WITH_ATTRIBUTES

    height, width = size
    boxes, masks = [], torch.zeros(count, height, width, dtype=torch.uint8)
    for index in range(count):
        x1, y1 = (torch.rand(2, generator=generator) * torch.tensor([width * 0.6, height * 0.6])).tolist()
        w, h = (torch.rand(2, generator=generator) * torch.tensor([width * 0.3, height * 0.3]) + 16).tolist()
        boxes.append([x1, y1, x1 + w, y1 + h])
        masks[index, int(y1):int(y1 + h), int(x1):int(x1 + w)] = 1
    labels = torch.tensor([CATS_WITH_ATTRIBUTES[i % len(CATS_WITH_ATTRIBUTES)] + 1 for i in range(count)])
    attributes = (torch.rand(count, num_attributes, generator=generator) < 0.02).float()
    return {"boxes": torch.tensor(boxes), "labels": labels, "masks": masks, "attributes": attributes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=None, help="long side (default: the spec's train_scale)")
    parser.add_argument("--aspect", type=float, default=1.5, help="height / width of the image (portrait)")
    parser.add_argument("--instances", type=int, default=8, help="garments in the image")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from saip_bench.backbones import create_backbone
    from saip_bench.specs import get_task_spec
    from saip_bench.tasks.dense.features import level_channels, multi_level
    from saip_bench.tasks.detection.pyramid import pyramid_levels, pyramid_strides
    from saip_bench.tasks.detection.resize import long_side_size, normalize_padded, pad_images
    from saip_bench.tasks.fashionpedia import FashionModel, FashionpediaTask

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    device = torch.device(args.device)
    spec = get_task_spec("fashion", "fashionpedia")
    params, resize = FashionpediaTask._settings(spec, "finetune")
    assert resize is not None
    scale = args.scale or resize.train_scale
    size = long_side_size((round(1000 * args.aspect), 1000), scale)
    num_attributes, num_categories = 294, 46

    backbone = create_backbone("vit_tiny", size).to(device)
    backbone.dense_final_norm = True  # the finetune protocol's final_norm
    levels = pyramid_levels(backbone, 5)
    prior = (torch.rand(num_categories, num_attributes, generator=generator) < 0.1).float()
    head = FashionModel(level_channels(backbone, levels, (64, 64)), backbone.family == "vit", levels, size,
                        num_categories, num_attributes, params, pyramid_strides(backbone, 5), prior,
                        resize).to(device)
    backbone.train()
    head.train()
    schedule = spec.protocols["finetune"].schedule
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=schedule.lr,
                                  weight_decay=schedule.weight_decay)
    image = torch.rand(3, *size, generator=generator)
    images = pad_images([image], resize.size_divisor).to(device)
    target = synthetic_targets(size, args.instances, num_attributes, generator)

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def step() -> tuple[float, float, float]:
        """Seconds of the forward (backbone + heads + losses), the backward and the AdamW update."""
        start = now()
        optimizer.zero_grad(set_to_none=True)
        maps = multi_level(backbone, normalize_padded(images, [size]), levels)
        loss = head.losses(maps, [target], [size], tuple(images.shape[-2:]))
        forward = now()
        loss.backward()
        backward = now()
        optimizer.step()
        return forward - start, backward - forward, now() - backward

    warm = sum(step())
    phases = [step() for _ in range(args.steps)]
    times = [sum(p) for p in phases]
    result = {
        "device": (torch.cuda.get_device_name() if device.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "image": list(size), "padded": list(images.shape[-2:]), "instances": args.instances,
        "warmup_s": round(warm, 2), "step_s_median": round(statistics.median(times), 2),
        "step_s": [round(t, 2) for t in times],
        "forward_backward_update_s": [round(statistics.median(p[i] for p in phases), 2) for i in range(3)],
        "params_m": {"backbone": round(sum(p.numel() for p in backbone.parameters()) / 1e6, 2),
                     "head": round(sum(p.numel() for p in head.parameters()) / 1e6, 2),
                     "attribute_head": round(sum(p.numel() for p in head.attributes.parameters()) / 1e6, 2)},
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if device.type == "cuda":
        result["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
