"""Host-side cost of SAIP's view builder: operator launches, tensor reads and host-to-device copies per
``make_saip_views`` call.

On a GPU each top-level operator is (about) one kernel launch, each read of a tensor value (``bool(t)``,
``.item()``) stalls the host until the device is idle, and each host-to-device copy of drawn parameters
(``devices.host_to_device``: pinned, queued) is one more transfer to set up, so these counts are a
CPU-measurable proxy for the fixed cost a SAIP micro-step pays before any model math. Small images keep
the CPU time down; the counts do not depend on the image size.

    python benchmarks/views_ops.py --batch 64
"""

from __future__ import annotations

import argparse
import collections

import torch
from torch.profiler import ProfilerActivity, profile

import saip_bench  # noqa: F401  (torchvision shim before timm)
from saip_bench.pretrain import views
from saip_bench.pretrain.views import SAIPViewConfig, make_saip_views

READS = ("aten::is_nonzero", "aten::item", "aten::_local_scalar_dense")
VIEWS_ONLY = {"aten::slice", "aten::select", "aten::view", "aten::reshape", "aten::unbind", "aten::expand",
              "aten::detach_", "aten::lift_fresh", "aten::alias", "aten::as_strided", "aten::unsqueeze"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    cfg = SAIPViewConfig(global_size=(64, 32), local_size=(32, 16), canvas_size=(64, 64))
    images, backgrounds = torch.rand(args.batch, 3, 64, 32), torch.rand(args.batch, 3, 64, 64)
    make_saip_views(images, torch.arange(args.batch), 7, cfg, backgrounds)  # warm-up
    copies = 0
    host_to_device = views.host_to_device

    def counted(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        nonlocal copies
        copies += 1
        return host_to_device(tensor, device)

    views.host_to_device = counted  # the module's own name: every copy make_saip_views asks for
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            make_saip_views(images, torch.arange(args.batch), 7, cfg, backgrounds)
    finally:
        views.host_to_device = host_to_device
    top = [e.name for e in prof.events() if e.name.startswith("aten::")
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    counts = collections.Counter(top)
    compute = sum(n for name, n in counts.items() if name not in VIEWS_ONLY)
    print(f"batch {args.batch}: {len(top)} top-level operators, {compute} of them not pure views "
          f"(kernel launches on a GPU, roughly), {sum(counts[r] for r in READS)} tensor reads, "
          f"{copies} host-to-device copies")
    print("most frequent:", ", ".join(f"{name} {n}" for name, n in counts.most_common(8)))


if __name__ == "__main__":
    main()
