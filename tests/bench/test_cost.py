"""Backbone cost figures: one parameter count per backbone (position table left out), the rest at the
task's input size."""

import saip_bench  # noqa: F401  (registers the torchvision ops the CPU wheel lacks)
from saip_bench.backbones import count_parameters, create_backbone
from saip_bench.bench.cost import backbone_cost, size_free_parameters


def test_size_free_params_are_one_number_per_backbone_and_input_size_is_recorded():
    small = backbone_cost(create_backbone("vit_tiny", (64, 32)), (64, 32), repeats=1)
    large = backbone_cost(create_backbone("vit_tiny", (96, 96)), (96, 96), repeats=1)
    assert small["params_m"] < large["params_m"]  # the position table grows with the patch count
    assert small["params_m_size_free"] == large["params_m_size_free"]
    table = create_backbone("vit_tiny", (64, 32)).body.pos_embed.numel()  # (4 x 2 patches + cls) x 192
    assert table == 9 * 192
    assert round(small["params_m"] - small["params_m_size_free"], 4) == round(table / 1e6, 4)
    assert small["gflops"] < large["gflops"]
    assert (small["input_h"], small["input_w"]) == (64.0, 32.0)


def test_a_convnet_has_no_size_dependent_parameters():
    backbone = create_backbone("starnet_s3", (64, 32))
    assert size_free_parameters(backbone) == count_parameters(backbone)
