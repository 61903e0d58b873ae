"""What the CIHP AP^r bootstrap interval costs at the official val split's size (issue 26).

Why: CIHP's AP^r interval re-ranks every predicted instance part once per resample (19 classes x 9 IoU
thresholds); its cost grows with the number of predicted parts, unlike the semantic interval (summed
confusion matrices). The hit/miss arrays are synthetic, the statistic is the one the metric offers.

    python benchmarks/bootstrap_cost_cihp.py                       # 5,000 images, ~100k predicted parts
    python benchmarks/bootstrap_cost_cihp.py --images 500 --parts-per-class 500

Prints predicted parts, resamples and seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from saip_bench.metrics import bootstrap
from saip_bench.metrics.cihp import IOU_THRESHOLDS, NUM_CLASSES


def part_classes(images: int, parts_per_class: int, seed: int = 0) -> list[bootstrap.PartClass]:
    """Per class: predictions spread over the images, hit at low IoU thresholds more than at high ones."""
    rng = np.random.default_rng(seed)
    thresholds = np.asarray(IOU_THRESHOLDS)
    out = []
    for _ in range(1, NUM_CLASSES):
        count = int(rng.integers(parts_per_class // 2, parts_per_class * 3 // 2))
        quality = rng.random((count, 1))
        out.append(bootstrap.PartClass(rng.integers(0, images, count),
                                       (quality > thresholds[None, :]).astype(np.float64),
                                       rng.integers(0, 3, images).astype(np.float64)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--parts-per-class", type=int, default=5300)
    parser.add_argument("--resamples", type=int, default=bootstrap.DEFAULT_RESAMPLES)
    args = parser.parse_args()
    classes = part_classes(args.images, args.parts_per_class)
    start = time.perf_counter()
    found = bootstrap.bootstrap(bootstrap.part_ap_statistic(classes, IOU_THRESHOLDS), args.images,
                                bootstrap.BootstrapConfig(args.resamples))
    seconds = time.perf_counter() - start
    parts = sum(len(c.image) for c in classes)
    print(f"{args.images} images, {parts} predicted parts, {args.resamples} resamples: {seconds:.1f} s "
          f"(APr_vol interval {found['APr_vol'][0]:.4f}..{found['APr_vol'][1]:.4f})")


if __name__ == "__main__":
    main()
