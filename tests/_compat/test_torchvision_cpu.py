import subprocess
import sys

import torch

from saip_bench._compat.torchvision_cpu import nms_cpu


def test_timm_and_torchvision_import_in_fresh_process():
    code = (
        "import saip_bench, timm, torchvision, torch\n"
        "from torchvision.ops import nms\n"
        "b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11]]); s = torch.tensor([.9, .8])\n"
        "print(nms(b, s, 0.5).tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[0]"


def test_nms_cpu_matches_hand_computed():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.95])
    # 3 (0.95) keeps; 1 (0.9) IoU with 3 = 72/(90+100-72)=0.61 > .5 -> dropped; 2 kept; 0 IoU .9 dropped
    assert nms_cpu(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms_cpu(boxes, scores, 0.95).tolist() == [3, 1, 2, 0]
    assert nms_cpu(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_batched_nms_uses_cpu_kernel():
    from torchvision.ops import batched_nms

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]])
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)
    assert sorted(keep.tolist()) == [0, 1]
