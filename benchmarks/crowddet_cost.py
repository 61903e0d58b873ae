"""CrowdHuman detectors on CPU: one CrowdDet training step at the recipe's input size, and short frozen units.

    python benchmarks/crowddet_cost.py step                       # one fine-tune step, 2 images ~800x1400
    python benchmarks/crowddet_cost.py frozen --world /tmp/w      # frozen units on a world's crowdhuman/

``step``: ViT-T (random init) + CrowdDet with the ``finetune`` protocol's head, two synthetic images resized
as the recipe does (short side 800, long side <= 1400, padded to /64), ~20 persons each; AdamW step
included; prints the median seconds of the timed steps after one warm-up step (and the same for the
RetinaNet head at 800x1400, for comparison).
``frozen``: the ``frozen`` protocol's unit on the world's CrowdHuman for each detector, trained for
``--steps`` steps and untrained (0 steps), printing AP / MR / JI and the unit's wall time; this is how the
frozen protocol's detector was chosen (docs/tasks_multi_person.md#crowdhuman).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import saip_bench  # noqa: E402, F401  (torchvision shim before timm)


def synthetic_targets(generator, size: tuple[int, int], persons: int = 20):
    import torch

    h, w = size
    heights = torch.rand(persons, generator=generator) * 0.5 * h + 0.1 * h
    widths = heights * 0.4
    x1 = torch.rand(persons, generator=generator) * (w - widths)
    y1 = torch.rand(persons, generator=generator) * (h - heights)
    boxes = torch.stack([x1, y1, x1 + widths, y1 + heights], 1)
    return {"boxes": boxes, "labels": torch.ones(persons, dtype=torch.int64), "ignore": torch.zeros(0, 4),
            "image_size": torch.tensor(size)}


def step_cost(steps: int, detectors: list[str]) -> dict[str, float]:
    import torch

    from saip_bench.backbones import create_backbone
    from saip_bench.specs import get_task_spec
    from saip_bench.tasks.base import get_task
    from saip_bench.tasks.crowdhuman import CrowdDetector, keep_ratio_resize
    from saip_bench.tasks.dense.features import multi_level
    from saip_bench.tasks.detection.resize import pad_to_canvas

    spec = get_task_spec("detection", "crowdhuman")
    resize = keep_ratio_resize(spec, "finetune")
    generator = torch.Generator().manual_seed(0)
    originals = [(1080, 1920), (1200, 1600)]  # typical CrowdHuman photo sizes
    sizes = [resize.resized_hw(hw) for hw in originals]
    padded = resize.padded_hw(sizes)
    results = {}
    for detector in detectors:
        torch.manual_seed(0)
        backbone = create_backbone("vit_tiny", padded)
        task = get_task("detection")
        spec_copy = spec.model_copy(deep=True)
        protocol = "finetune"
        if detector == "retinanet":  # the previous head at its whole-image 800x1400 input, for comparison
            spec_copy.protocols[protocol].params["head"] = {"detector": "retinanet",
                                                            "detections_per_img": 300}
        task._protocol = protocol
        head = task.build_head(backbone, spec_copy, None)  # type: ignore[arg-type]
        model = torch.nn.ModuleDict({"backbone": backbone, "head": head}).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=1e-4)
        if isinstance(head, CrowdDetector):
            images = torch.rand(2, 3, *head.size, generator=generator)
            targets = [synthetic_targets(generator, head.size) for _ in range(2)]
        else:
            images = pad_to_canvas([torch.rand(3, *s, generator=generator) for s in sizes], padded)
            targets = [dict(synthetic_targets(generator, s), seed=torch.tensor(i))
                       for i, s in enumerate(sizes)]
        times = []
        for _ in range(steps + 1):
            start = time.perf_counter()
            maps = multi_level(backbone, images, head.levels)
            if isinstance(head, CrowdDetector):
                loss = head.losses(maps, targets)
            else:
                loss = head.losses(maps, targets, sizes, padded)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        shape = list(images.shape[-2:])
        results[detector] = round(statistics.median(times[1:]), 2)
        print(f"{detector}: one training step, batch 2 at {shape}: {results[detector]:.2f} s "
              f"(median of {steps}, after 1 warm-up; loss {loss.item():.3f})", flush=True)
    return results


def frozen_units(world: Path, steps: int, detectors: list[str], seed: int) -> list[dict]:
    import torch

    from saip_bench.backbones import create_backbone
    from saip_bench.data.readers import read_dataset
    from saip_bench.specs import get_task_spec
    from saip_bench.tasks.base import UnitContext, get_task

    data = read_dataset("crowdhuman", world / "crowdhuman")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for detector in detectors:
            for max_steps in (steps, 0):
                spec = get_task_spec("detection", "crowdhuman").model_copy(deep=True)
                protocol = spec.protocols["frozen"]
                protocol.params["head"]["detector"] = detector
                protocol.schedule.max_steps = max_steps if max_steps else 1
                if not max_steps:  # untrained: one step at learning rate 0
                    protocol.schedule.lr = 0.0
                size = tuple(protocol.params["input_size"])
                torch.manual_seed(seed)
                ctx = UnitContext(spec=spec, protocol="frozen", backbone=create_backbone("vit_tiny", size),
                                  data=data, out_dir=Path(scratch) / f"{detector}-{max_steps}",
                                  cache_dir=Path(scratch) / "cache", show_progress=False, amp=False,
                                  seed=seed)
                start = time.perf_counter()
                result = get_task("detection").run(ctx)
                wall = time.perf_counter() - start
                row = {"detector": detector, "steps": max_steps, "wall_s": round(wall, 1),
                       **{k: round(result.scores[k], 4) for k in ("AP", "MR", "JI")}}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["step", "frozen"])
    parser.add_argument("--steps", type=int, default=2, help="timed steps (step) / head steps (frozen: 40)")
    parser.add_argument("--detectors", default="crowddet,retinanet")
    parser.add_argument("--world", type=Path, help="a synthetic world (frozen)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    detectors = args.detectors.split(",")
    if args.what == "step":
        step_cost(args.steps, detectors)
    else:
        if args.world is None:
            parser.error("frozen needs --world")
        frozen_units(args.world, args.steps, detectors, args.seed)


if __name__ == "__main__":
    main()
