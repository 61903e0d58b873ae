import numpy as np
import pytest
import torch

from saip_bench.pretrain.views import (
    SAIPViewConfig,
    anchor_grid_mask,
    augmented_crops,
    colour_augments,
    crop_params,
    crop_resize,
    gaussian_blur,
    make_saip_views,
    normalize,
    paste_two,
    random_resized_crop,
    rrc_params,
    sample_rngs,
    scaled_size,
    upsampled_mask_noise,
)


def test_crop_resize_identity_and_flip():
    images = torch.rand(2, 3, 16, 8)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 8.0]] * 2)
    out = crop_resize(images, boxes, (16, 8), mode="bilinear")
    torch.testing.assert_close(out, images, atol=1e-5, rtol=1e-5)
    flipped = crop_resize(images, boxes, (16, 8), flip=torch.tensor([True, False]), mode="bilinear")
    torch.testing.assert_close(flipped[0], images[0].flip(-1), atol=1e-5, rtol=1e-5)
    half = crop_resize(images, torch.tensor([[8.0, 0.0, 8.0, 8.0]] * 2), (8, 8), mode="bilinear")
    torch.testing.assert_close(half, images[:, :, 8:], atol=1e-5, rtol=1e-5)


def test_rrc_params_within_image_and_scale():
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left, h, w = rrc_params(rng, 256, 128, (0.8, 1.0), (0.4, 0.6))
        assert 0 <= top and top + h <= 256 and 0 <= left and left + w <= 128
        assert h * w >= 0.75 * 256 * 128


def test_scaled_size_rounding():
    assert scaled_size((128, 64), 0.875) == (112, 56)
    assert scaled_size((128, 64), 0.875, "round16") == (112, 64)
    assert scaled_size((128, 64), 1.25, "round16") == (160, 80)
    with pytest.raises(ValueError):
        scaled_size((128, 64), 1.0, "floor")


def test_blur_preserves_constant_and_mean():
    images = torch.full((2, 3, 20, 10), 0.3)
    torch.testing.assert_close(gaussian_blur(images, torch.tensor([0.5, 2.0])), images)


def test_anchor_grid_mask_and_upsampled_noise():
    rngs = [np.random.default_rng(i) for i in range(3)]
    keep = anchor_grid_mask(rngs, (16, 8), 0.25, "cpu")
    assert keep.shape == (3, 16, 8) and keep.sum((1, 2)).tolist() == [32.0] * 3
    noise = upsampled_mask_noise(keep, (20, 10), rngs)
    assert noise.shape == (3, 200)
    up = torch.nn.functional.interpolate(keep.unsqueeze(1), size=(20, 10), mode="nearest").flatten(1)
    assert bool(((noise < 0.5) == (up == 1)).all())  # visible cells sort first


def test_paste_two_masks_and_blend():
    canvas = torch.zeros(4, 3, 224, 224)
    roi = torch.ones(4, 3, 128, 64)
    inst = torch.ones(4, 3, 128, 64)
    out, roi_mask, inst_mask = paste_two(canvas, roi, inst, [np.random.default_rng(i) for i in range(4)])
    assert roi_mask.sum((1, 2, 3)).tolist() == [128 * 64.0] * 4
    assert (roi_mask * inst_mask).sum() == 0  # side by side, never overlapping
    torch.testing.assert_close(out[roi_mask.expand_as(out) > 0], torch.full((4 * 3 * 128 * 64,), 0.7))


def test_saip_views_paper_shapes():
    batch = 2
    cfg = SAIPViewConfig()
    views = make_saip_views(
        torch.rand(batch, 3, 256, 128),
        torch.arange(batch),
        7,
        cfg,
        backgrounds=torch.rand(batch, 3, 200, 200),
    )
    assert views["global"].shape == (2 * batch, 3, 256, 128)
    assert views["local"].shape == (6 * batch, 3, 128, 64)
    rh, rw = scaled_size((128, 64), views["roi_scale"])
    assert views["roi_scaled"].shape == (batch, 3, rh, rw)
    assert views["roi_scale"] in cfg.scales and views["anchor_scale"] in cfg.scales
    assert views["masked"].shape == (batch, 3, 320, 160)
    assert views["mask_noise"].shape == (batch, 200) and views["mask_keep"] == 50
    assert views["canvas"].shape == (batch, 3, 224, 224)
    assert views["roi_mask"].shape == (batch, 1, 224, 224)
    assert torch.isfinite(views["global"]).all()


def test_saip_views_are_per_sample_deterministic():
    cfg = SAIPViewConfig(global_size=(64, 32), local_size=(32, 16), n_local=1, canvas_size=(64, 64))
    images = torch.rand(4, 3, 64, 32)
    backgrounds = torch.rand(4, 3, 64, 64)
    full = make_saip_views(images, torch.arange(4), 3, cfg, backgrounds)
    half = make_saip_views(images[2:], torch.arange(2, 4), 3, cfg, backgrounds[2:])
    torch.testing.assert_close(full["global"][2:4], half["global"][0:2])
    torch.testing.assert_close(full["canvas"][2:], half["canvas"])
    torch.testing.assert_close(full["mask_noise"][2:], half["mask_noise"])


def test_colour_overrides_turn_the_photometric_ops_off_in_every_view():
    """With jitter, grayscale, blur and solarisation off, the global views are the plain crops."""
    geometry = dict(global_size=(64, 32), local_size=(32, 16), n_local=1, canvas_size=(64, 64))
    off = colour_augments({"jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0})
    assert all(a.jitter_p == 0.0 and a.blur_p == 0.0 for a in off.values())
    assert colour_augments({})["global1_aug"].blur_p == 1.0  # each view keeps its own blur otherwise
    images, backgrounds = torch.rand(2, 3, 64, 32), torch.rand(2, 3, 64, 64)
    plain = make_saip_views(images, torch.arange(2), 3, SAIPViewConfig(**geometry, **off), backgrounds)
    default = make_saip_views(images, torch.arange(2), 3, SAIPViewConfig(**geometry), backgrounds)
    rngs = sample_rngs(torch.arange(2))
    x_a, _ = random_resized_crop(images, rngs, (64, 32), SAIPViewConfig.global_scale, SAIPViewConfig.ratio)
    torch.testing.assert_close(plain["global"][:2], normalize(x_a))
    assert not torch.allclose(plain["global"], default["global"])
    with pytest.raises(ValueError, match="unknown colour field"):
        colour_augments({"hue_p": 0.1})


def test_batched_paste_matches_a_per_sample_paste():
    """The batched paste gathers each canvas pixel from the paste covering it: bit-identical to pasting
    one sample at a time (the loop it replaced)."""
    from saip_bench.pretrain.views import paste_positions

    generator = torch.Generator().manual_seed(0)
    canvas = torch.rand(5, 3, 40, 48, generator=generator)
    roi, inst = torch.rand(5, 3, 12, 8, generator=generator), torch.rand(5, 3, 12, 8, generator=generator)
    out, roi_mask, inst_mask = paste_two(canvas, roi, inst, [np.random.default_rng(i) for i in range(5)])
    expected = canvas.clone()
    expected_roi, expected_inst = torch.zeros(5, 1, 40, 48), torch.zeros(5, 1, 40, 48)
    for i in range(5):
        (rt, rl), (it, il) = paste_positions(np.random.default_rng(i), (40, 48), (12, 8))
        region = expected[i, :, rt:rt + 12, rl:rl + 8]
        expected[i, :, rt:rt + 12, rl:rl + 8] = 0.7 * roi[i] + 0.3 * region
        expected_roi[i, :, rt:rt + 12, rl:rl + 8] = 1.0
        region = expected[i, :, it:it + 12, il:il + 8]
        expected[i, :, it:it + 12, il:il + 8] = 0.7 * inst[i] + 0.3 * region
        expected_inst[i, :, it:it + 12, il:il + 8] = 1.0
    assert torch.equal(out, expected) and torch.equal(roi_mask, expected_roi)
    assert torch.equal(inst_mask, expected_inst)


def test_saip_views_never_read_a_tensor_value_back_to_the_host():
    """Every random draw is made on the host: no ``bool(tensor)``/``.item()`` inside make_saip_views (on a
    GPU each one stalls the host until the device catches up)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = SAIPViewConfig(global_size=(64, 32), local_size=(32, 16), canvas_size=(64, 64))
    images, backgrounds = torch.rand(8, 3, 64, 32), torch.rand(8, 3, 64, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        make_saip_views(images, torch.arange(8), 7, cfg, backgrounds)
    reads = [e.name for e in prof.events() if e.name in ("aten::is_nonzero", "aten::item",
                                                            "aten::_local_scalar_dense")]
    assert reads == []


def test_several_crops_per_image_equal_one_crop_resize_call_per_crop():
    """crop_resize with N boxes per image samples all N crops in one grid: bit-identical to N calls."""
    images = torch.rand(3, 3, 40, 24, generator=torch.Generator().manual_seed(0))
    rngs = sample_rngs(torch.arange(3))
    per_view = [crop_params(rngs, 40, 24, (0.05, 0.8), (0.4, 0.6)) for _ in range(4)]
    boxes = torch.cat([b for b, _ in per_view])
    flips = torch.cat([f for _, f in per_view])
    assert flips.any() and not flips.all()  # both directions are exercised
    together = crop_resize(images, boxes, (16, 8), flips)
    one_by_one = torch.cat([crop_resize(images, b, (16, 8), f) for b, f in per_view])
    assert torch.equal(together, one_by_one)
    with pytest.raises(ValueError, match="not a multiple of the 3 images"):
        crop_resize(images, boxes[:5], (16, 8))


def test_augmented_crops_draw_and_render_as_one_call_per_view():
    """augmented_crops gives the pixels and leaves each generator where crop + colour calls per view in
    order would, also when pipelines alternate (equal neighbours render together)."""
    images = torch.rand(4, 3, 48, 24, generator=torch.Generator().manual_seed(1))
    augs = colour_augments({})
    augments = (augs["global1_aug"], augs["local_aug"], augs["local_aug"], augs["global2_aug"])
    rngs = sample_rngs(torch.arange(4))
    views = augmented_crops(images, rngs, augments, (16, 8), (0.3, 1.0), (0.4, 0.6))
    reference_rngs = sample_rngs(torch.arange(4))
    expected = []
    for augment in augments:
        crop, _ = random_resized_crop(images, reference_rngs, (16, 8), (0.3, 1.0), (0.4, 0.6))
        expected.append(augment.apply(crop, reference_rngs))
    assert len(views) == len(expected)
    assert all(torch.equal(v, e) for v, e in zip(views, expected, strict=True))
    assert [r.random() for r in rngs] == [r.random() for r in reference_rngs]
    assert augmented_crops(images, rngs, (), (16, 8), (0.3, 1.0), (0.4, 0.6)) == []


def test_saip_view_launches_do_not_grow_with_the_number_of_local_crops():
    """All local crops are one crop and one colour pass: 1 or 6 plain local crops ask the device for the
    same number of operators (on a GPU each is a launch the host pays; a loop per crop cost ~100 each)."""
    from torch.profiler import ProfilerActivity, profile

    # every colour op on for every sample of every view, so no count depends on what was drawn
    every_op = colour_augments({"jitter_p": 1.0, "grayscale_p": 1.0, "blur_p": 1.0, "solarize_p": 1.0})

    def operators(n_local: int) -> int:
        cfg = SAIPViewConfig(global_size=(64, 32), local_size=(32, 16), canvas_size=(64, 64), n_local=n_local,
                             **every_op)
        images, backgrounds = torch.rand(8, 3, 64, 32), torch.rand(8, 3, 64, 64)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            make_saip_views(images, torch.arange(8), 7, cfg, backgrounds)
        return sum(1 for e in prof.events() if e.name.startswith("aten::")
                   and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))

    assert operators(1) == operators(6)
