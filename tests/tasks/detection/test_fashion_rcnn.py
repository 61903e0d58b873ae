"""The Fashionpedia recipe's parts: anchors per level, the aspect-preserving resize round trip, attribute
thresholds, the knowledge prior and positive sampling, the recipe model's step, and bad masks refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image
from torchvision.models.detection.image_list import ImageList

from saip_bench.devices import unit_float
from saip_bench.errors import DataFormatError, SpecError
from saip_bench.metrics import fashionpedia as fashion_metric
from saip_bench.specs import get_task_spec
from saip_bench.tasks.common import load_rgb, pil_to_tensor
from saip_bench.tasks.detection.fashion_rcnn import (
    FashionHeadParams,
    FixedStrideAnchorGenerator,
    chosen_attributes,
    knowledge_matrix,
    level_anchor_sizes,
    sample_positives,
    validated,
)
from saip_bench.tasks.detection.pyramid import scale_boxes
from saip_bench.tasks.detection.resize import LongSideResize, keep_ratio_batches, long_side_size, train_scale
from saip_bench.tasks.fashionpedia import (
    FashionModel,
    FashionpediaTask,
    check_annotations,
    decode_segmentation,
    load_sample,
    resize_mask,
)

SPEC = get_task_spec("fashion", "fashionpedia")
RECIPE_STRIDES = (4, 8, 16, 32, 64)


def recipe_settings() -> tuple[FashionHeadParams, LongSideResize]:
    params, resize = FashionpediaTask._settings(SPEC, "finetune")
    assert resize is not None
    return params, resize


# ---- spec data ------------------------------------------------------------------------------------------


def test_finetune_declares_the_recipe_numbers():
    params, resize = recipe_settings()
    assert (resize.train_scale, resize.ratio_range, resize.test_scale, resize.size_divisor) == \
        (896, (0.5, 1.25), 1024, 32)
    assert params.pyramid == "p2_p6" and params.box_head == "4conv1fc" and params.channels == 256
    assert (params.rpn_pre_nms_test, params.rpn_post_nms_test, params.rpn_nms) == (1000, 1000, 0.7)
    assert (params.score_thresh, params.box_nms, params.detections_per_img) == (0.05, 0.5, 100)
    assert params.attributes.type == "knowledge" and params.attributes.threshold == 0.3
    assert (params.attributes.loss_weight, params.attributes.max_positives) == (5.0, 32)
    schedule = SPEC.protocols["finetune"].schedule
    assert (schedule.optimizer, schedule.lr, schedule.weight_decay) == ("adamw", 1e-4, 0.05)
    assert schedule.grad_clip is None
    assert (schedule.warmup_steps, schedule.warmup_start, schedule.milestones) == (500, 0.001, [26, 30])
    assert schedule.groups.no_decay == []  # the recipe decays every parameter
    # the CPU protocol keeps its compact model
    frozen, frozen_resize = FashionpediaTask._settings(SPEC, "frozen")
    assert frozen_resize is None and frozen.pyramid == "simple3" and frozen.attributes.type == "mlp"


def test_a_misspelt_head_setting_names_the_spec_and_field():
    spec = SPEC.model_copy(deep=True)
    spec.protocols["finetune"].params["head"]["anchor_scael"] = 8
    with pytest.raises(SpecError, match=r"fashionpedia.yaml.*finetune.*anchor_scael"):
        FashionpediaTask._settings(spec, "finetune")
    with pytest.raises(SpecError, match="ratio_range"):
        validated(LongSideResize, {"train_scale": 8, "test_scale": 8, "ratio_range": "x"}, "here")


# ---- anchors --------------------------------------------------------------------------------------------


def test_anchor_sizes_per_level_are_eight_strides():
    params, _ = recipe_settings()
    assert level_anchor_sizes(params.anchor_scale, RECIPE_STRIDES) == ((32,), (64,), (128,), (256,), (512,))
    model = FashionModel([16], True, [0], (64, 64), 46, 5, params.model_copy(update={"channels": 8}),
                         RECIPE_STRIDES)
    generator = model.rcnn.rpn.anchor_generator
    assert generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    assert generator.num_anchors_per_location() == [3] * 5
    assert list(model.neck([torch.zeros(1, 16, 6, 6)]).keys()) == ["0", "1", "2", "3", "pool"]


def test_anchors_sit_on_the_true_strides_of_a_padded_canvas():
    """A 96-px canvas gives a 2-cell P6: torchvision's inferred stride would be 48, the true one is 64."""
    generator = FixedStrideAnchorGenerator(((32,), (512,)), ((1.0,),) * 2, (4, 64))
    images = ImageList(torch.zeros(1, 3, 96, 96), [(96, 90)])
    anchors = generator(images, [torch.zeros(1, 1, 24, 24), torch.zeros(1, 1, 2, 2)])[0]
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert len(anchors) == 24 * 24 + 4
    assert torch.allclose(centres[1], torch.tensor([4.0, 0.0]))
    assert sorted({float(c) for c in centres[-4:, 0]}) == [0.0, 64.0]
    assert torch.allclose(anchors[-1, 2:] - anchors[-1, :2], torch.tensor([512.0, 512.0]))


# ---- aspect-preserving resize ---------------------------------------------------------------------------


def test_keep_ratio_sizes_and_multi_scale_draws():
    assert long_side_size((600, 400), 1024) == (1024, 683)
    assert long_side_size((400, 600), 1024) == (683, 1024)
    _, resize = recipe_settings()
    generator = torch.Generator().manual_seed(0)
    draws = [train_scale(resize, generator) for _ in range(200)]
    assert 448 <= min(draws) < 500 and 1070 < max(draws) <= 1120


def write_image(path, height: int, width: int) -> None:
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)


def test_boxes_and_masks_round_trip_through_the_keep_ratio_resize(tmp_path):
    height, width = 300, 200
    write_image(tmp_path / "a.png", height, width)
    polygon = [[20.0, 30.0, 150.0, 30.0, 150.0, 250.0, 20.0, 250.0]]
    record = {"image_id": 1, "path": str(tmp_path / "a.png"), "height": height, "width": width,
              "annotations": [{"id": 1, "category_id": 3, "bbox": [20.0, 30.0, 130.0, 220.0],
                               "segmentation": polygon, "attribute_indices": [2]}]}
    size = long_side_size((height, width), 1024)
    image, target = load_sample(record, lambda hw: long_side_size(hw, 1024), 5)
    assert tuple(image.shape[-2:]) == size == (1024, 683)
    assert abs(size[0] / size[1] - height / width) < 2 / size[1]  # aspect kept up to rounding
    back = scale_boxes(target["boxes"], size, (height, width))
    assert torch.allclose(back, torch.tensor([[20.0, 30.0, 150.0, 250.0]]), atol=1e-3)
    original = decode_segmentation(polygon, height, width)
    assert target["masks"].shape == (1, *size)
    restored = resize_mask(target["masks"][0].numpy(), (height, width))
    iou = np.logical_and(restored, original).sum() / np.logical_or(restored, original).sum()
    assert iou > 0.99
    assert target["attributes"][0].tolist() == [0, 0, 1, 0, 0] and target["labels"].tolist() == [4]


def test_keep_ratio_batches_are_deterministic_and_padded(tmp_path):
    records = []
    for index, (h, w) in enumerate([(60, 40), (40, 80), (50, 50)]):
        write_image(tmp_path / f"{index}.png", h, w)
        records.append({"image_id": index, "path": str(tmp_path / f"{index}.png"), "height": h, "width": w,
                        "annotations": []})
    resize = LongSideResize(train_scale=64, ratio_range=(0.5, 1.5), test_scale=64)

    def load(record, scale):
        return load_sample(record, lambda hw: long_side_size(hw, scale), 2)

    def draw():
        from saip_bench.tasks.fashionpedia import flip_target

        generator = torch.Generator().manual_seed(3)
        batches = keep_ratio_batches(records, load, flip_target, resize, 2, 1, generator, torch.device("cpu"))
        return next(iter(batches(0)))

    first, second = draw(), draw()
    assert torch.equal(first[0], second[0]) and first[2] == second[2]
    assert first[0].shape[-2] % 32 == 0 and first[0].shape[-1] % 32 == 0
    assert all(max(s) <= 96 for s in first[2])


# ---- attribute head -------------------------------------------------------------------------------------


def test_attribute_thresholds_pick_the_attributes_above_them():
    logits = torch.tensor([[-1.0, -0.8, 0.0, 2.0, -5.0]])  # sigmoid: 0.27, 0.31, 0.50, 0.88, 0.007
    probs = torch.sigmoid(logits)
    params, _ = recipe_settings()
    assert chosen_attributes(probs, params.attributes.threshold) == [[1, 2, 3]]  # the recipe's 0.3
    assert chosen_attributes(probs, 0.5) == [[3]]  # strictly above: 0.5 itself stays out
    assert chosen_attributes(torch.zeros(0, 5), 0.3) == []


def test_knowledge_matrix_is_the_share_of_a_category_carrying_each_attribute():
    records = [{"annotations": [{"category_id": 0, "attribute_indices": [1]},
                                {"category_id": 0, "attribute_indices": [1, 2]},
                                {"category_id": 2, "attribute_indices": []}]}]
    prior = knowledge_matrix(records, 3, 3)
    assert prior.tolist() == [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_positive_sampling_caps_per_image_and_follows_the_matched_box():
    torch.manual_seed(0)
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 80.0, 90.0]])
    proposals = [torch.cat([gt + 0.5, gt + 1.0, torch.tensor([[200.0, 200.0, 210.0, 210.0]])])]
    target = {"boxes": gt, "labels": torch.tensor([3, 7]), "attributes": torch.eye(2)}
    boxes, labels, wanted = sample_positives(proposals, [target], 0.5, 32)
    assert len(boxes[0]) == 6  # 4 near proposals + the 2 GT boxes, not the far one
    for box, label, hot in zip(boxes[0], labels, wanted, strict=True):
        index = 0 if box[0] < 30 else 1
        assert int(label) == [3, 7][index] and hot.tolist() == torch.eye(2)[index].tolist()
    capped, _, _ = sample_positives(proposals, [target], 0.5, 3)
    assert len(capped[0]) == 3


def test_the_recipe_model_trains_and_detects_with_padded_sizes():
    torch.manual_seed(0)
    params, _ = recipe_settings()
    small = params.model_copy(update={
        "channels": 16, "rpn_post_nms_train": 64, "rpn_pre_nms_test": 100, "rpn_post_nms_test": 50,
        "box_batch_per_image": 32, "score_thresh": 0.0, "detections_per_img": 5,
        "attributes": params.attributes.model_copy(update={"dim": 16, "heads": 2})})
    prior = torch.zeros(46, 7)
    prior[3, [1, 4]] = 0.5
    model = FashionModel([16], True, [0], (64, 64), 46, 7, small, RECIPE_STRIDES, prior)
    masks = torch.zeros(1, 64, 96, dtype=torch.uint8)
    masks[0, 10:40, 10:30] = 1
    target = {"boxes": torch.tensor([[10.0, 10, 30, 40]]), "labels": torch.tensor([4]), "masks": masks,
              "attributes": torch.tensor([[0.0, 1, 0, 0, 1, 0, 0]])}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 64, 64, dtype=torch.uint8), "attributes": torch.zeros(0, 7)}
    model.train()
    maps = [torch.randn(2, 16, 4, 6)]  # a 64 x 96 canvas at stride 16; the second image is 64 x 64
    loss = model.losses(maps, [target, empty], [(64, 96), (64, 64)], (64, 96))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.attributes.weight.grad is not None and model.attributes.weight.grad.abs().sum() > 0
    assert "knowledge" in dict(model.attributes.named_buffers())  # the prior is data, not trained
    model.eval()
    found = model.detect([torch.randn(2, 16, 4, 6)], [(64, 96), (64, 64)], (64, 96))
    for detection, (h, w) in zip(found, [(64, 96), (64, 64)], strict=True):
        assert detection["attributes"].shape == (len(detection["boxes"]), 7)
        assert (detection["boxes"][:, 2] <= w).all() and (detection["boxes"][:, 3] <= h).all()


# ---- bad masks ------------------------------------------------------------------------------------------


def bad_records() -> list[tuple[str, dict]]:
    rle = mask_utils.encode(np.asfortranarray(np.ones((20, 30), np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return [("polygons of at least 3", [[1.0, 1.0, 5.0, 5.0]]),  # 2 points (pycocotools would read a box)
            ("RLE size", rle)]  # a 20 x 30 mask on a 40 x 50 image


@pytest.mark.parametrize(("expected", "segmentation"), bad_records())
def test_bad_training_masks_are_refused_with_the_image_id(expected, segmentation):
    records = [{"image_id": 17, "height": 40, "width": 50,
                "annotations": [{"id": 5, "category_id": 0, "segmentation": segmentation}]}]
    with pytest.raises(DataFormatError, match=rf"train.json: expected {expected}.*image_id 17"):
        check_annotations(records, "train.json")


@pytest.mark.parametrize(("expected", "segmentation"), bad_records())
def test_bad_ground_truth_masks_are_refused_by_the_metric_with_the_image_id(expected, segmentation, tmp_path):
    gt = {"images": [{"id": 17, "height": 40, "width": 50, "file_name": "a.jpg"}],
          "categories": [{"id": 0, "name": "shirt"}], "attributes": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 5, "image_id": 17, "category_id": 0, "segmentation": segmentation,
                           "area": 10.0, "iscrowd": 0, "attribute_ids": [], "bbox": [1, 1, 4, 4]}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(DataFormatError, match=rf"expected {expected}.*image_id 17"):
        fashion_metric.check_ground_truth(json.loads(path.read_text()), str(path))


def test_a_frozen_protocol_cannot_take_the_keep_ratio_resize():
    spec = SPEC.model_copy(deep=True)
    spec.protocols["frozen"].params["keep_ratio"] = {"train_scale": 64, "test_scale": 64}
    task = FashionpediaTask()
    task._protocol = "frozen"
    with pytest.raises(SpecError, match="keep_ratio"):
        task.build_head(None, spec, None)  # refused before the backbone or data are read


# ---- JPEG draft decoding (params.jpeg_draft) ------------------------------------------------------------


def test_the_finetune_protocol_drafts_jpegs_and_the_frozen_one_does_not():
    assert FashionpediaTask._jpeg_draft(SPEC, "finetune") is True
    assert FashionpediaTask._jpeg_draft(SPEC, "frozen") is False  # the tuned CPU protocol stays as it was
    assert "jpeg_draft" not in SPEC.protocols["frozen"].params


def test_a_bad_jpeg_draft_value_or_place_names_the_spec_and_field():
    spec = SPEC.model_copy(deep=True)
    spec.protocols["finetune"].params["jpeg_draft"] = "yes"
    task = FashionpediaTask()
    task._protocol = "finetune"
    with pytest.raises(SpecError, match=r"fashionpedia.yaml.*finetune.*jpeg_draft.*true or false.*'yes'"):
        task.build_head(None, spec, None)  # refused before the backbone or data are read
    spec.protocols["frozen"].params["jpeg_draft"] = True  # the frozen cache reads one fixed size
    with pytest.raises(SpecError, match=r"frozen.*jpeg_draft.*keep-ratio loader only"):
        FashionpediaTask._jpeg_draft(spec, "frozen")


def garment_photo(path: Path, height: int = 900, width: int = 600) -> dict:
    """A JPEG photo with one garment (a polygon) and its record, as the reader gives it."""
    pixels = np.full((height, width, 3), 60, np.uint8)
    pixels[150:750, 100:450] = (210, 40, 90)
    pixels[150:750, 100:450, 2] += (np.arange(350) // 2).astype(np.uint8)[None, :]
    Image.fromarray(pixels).save(path, quality=90)
    polygon = [[100.0, 150.0, 450.0, 150.0, 450.0, 750.0, 100.0, 750.0]]
    return {"image_id": 1, "path": str(path), "height": height, "width": width,
            "annotations": [{"id": 1, "category_id": 3, "bbox": [100.0, 150.0, 350.0, 600.0],
                             "segmentation": polygon, "attribute_indices": [1]}]}


def test_a_drafted_photo_has_the_target_size_and_the_full_decodes_targets(tmp_path):
    """Boxes and masks come from the annotation's size in both decodes: equal exactly (tolerance 0). The
    pixels: mean absolute difference under 2 / 255 (measured 0.1 / 255 on this photo)."""
    record = garment_photo(tmp_path / "a.jpg")
    for scale in (448, 300):  # reductions 2 and 2 of a 600x900 photo; 4 needs a long side <= 225
        size = long_side_size((900, 600), scale)
        full, full_target = load_sample(record, lambda hw, s=scale: long_side_size(hw, s), 5)
        drafted, target = load_sample(record, lambda hw, s=scale: long_side_size(hw, s), 5, jpeg_draft=True)
        assert tuple(drafted.shape[-2:]) == tuple(full.shape[-2:]) == size
        assert drafted.dtype == full.dtype == torch.uint8  # made float on the device
        assert not torch.equal(drafted, full) and (drafted.float() - full.float()).abs().mean() < 2
        assert torch.equal(target["boxes"], full_target["boxes"])
        assert torch.equal(target["masks"], full_target["masks"]) and target["masks"].shape == (1, *size)
        back = scale_boxes(target["boxes"], size, (900, 600))
        assert torch.allclose(back, torch.tensor([[100.0, 150.0, 450.0, 750.0]]), atol=1e-3)


def test_without_the_draft_or_for_a_png_the_sample_is_the_full_decode(tmp_path):
    record = garment_photo(tmp_path / "a.jpg")
    png = dict(record, path=str(tmp_path / "a.png"))
    Image.open(record["path"]).save(png["path"])
    before = pil_to_tensor(load_rgb(record["path"]), long_side_size((900, 600), 448))  # the float loader
    off, _ = load_sample(record, lambda hw: long_side_size(hw, 448), 5)
    assert off.dtype == torch.uint8 and torch.equal(unit_float(off), before)  # what the step makes of it
    png_on, _ = load_sample(png, lambda hw: long_side_size(hw, 448), 5, jpeg_draft=True)
    assert torch.equal(unit_float(png_on),
                       pil_to_tensor(load_rgb(png["path"]), long_side_size((900, 600), 448)))


def test_a_drafted_photo_whose_size_is_not_the_annotations_is_refused(tmp_path):
    record = dict(garment_photo(tmp_path / "a.jpg"), width=700)
    with pytest.raises(DataFormatError, match=r"a\.jpg.*700x900.*annotation.*600x900"):
        load_sample(record, lambda hw: long_side_size(hw, 300), 5, jpeg_draft=True)


# ---- determinism and data parallelism -------------------------------------------------------------------


def tiny_recipe_model(num_attributes: int = 7) -> FashionModel:
    params, _ = recipe_settings()
    small = params.model_copy(update={
        "channels": 16, "rpn_post_nms_train": 64, "box_batch_per_image": 32,
        "attributes": params.attributes.model_copy(update={"dim": 16, "heads": 2})})
    prior = torch.zeros(46, num_attributes)
    prior[3, [1, 4]] = 0.5
    return FashionModel([16], True, [0], (64, 64), 46, num_attributes, small, RECIPE_STRIDES, prior)


def one_garment(width: int = 64) -> dict[str, torch.Tensor]:
    masks = torch.zeros(1, 64, width, dtype=torch.uint8)
    masks[0, 10:40, 10:30] = 1
    return {"boxes": torch.tensor([[10.0, 10, 30, 40]]), "labels": torch.tensor([4]), "masks": masks,
            "attributes": torch.tensor([[0.0, 1, 0, 0, 1, 0, 0]])}


def seeded_loss(seed: int) -> float:
    torch.manual_seed(seed)
    model = tiny_recipe_model().train()
    maps = [torch.randn(1, 16, 4, 4)]
    return float(model.losses(maps, [one_garment()], [(64, 64)], (64, 64)).detach())


def test_the_same_seed_gives_the_same_loss_on_cpu():
    assert seeded_loss(0) == seeded_loss(0)
    assert seeded_loss(0) != seeded_loss(1)


def _ddp_rank(rank: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    from saip_bench.tasks import parallel

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = tiny_recipe_model().train()
    torch.manual_seed(10 + rank)  # each rank its own maps and sampling draws
    maps = [torch.randn(1, 16, 4, 4)]
    # rank 1's image has no garment: its attribute head and mask head take no part in its loss
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 64, 64, dtype=torch.uint8), "attributes": torch.zeros(0, 7)}
    target = one_garment() if rank == 0 else empty

    def loss_fn(batch):
        return model.losses(batch, [target], [(64, 64)], (64, 64))

    # the task's own flag (FashionpediaTask.skips_branches -> find_unused_parameters), as Task.run sets it
    plan = parallel.plan(2, world=2, rank=rank, unused_parameters=True)
    wrapped = parallel.wrap(model, loss_fn, "cpu", plan)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        loss = wrapped(maps)
        loss.backward()
        optimizer.step()
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "loss": float(loss.detach()), "weights_sum": float(weights.double().sum()),
        "attribute_grad": float(model.attributes.weight.grad.abs().sum())}))
    from tests.ranks import leave_group

    leave_group()


def test_the_recipe_model_trains_under_ddp_with_a_rank_that_has_no_garment(tmp_path):
    """Two gloo ranks, one with no instance: DDP's reducer must not stall on the skipped branches, the
    attribute head's gradient (from rank 0 only) reaches rank 1, and both ranks end with equal weights."""
    from tests.ranks import free_port, run_ranks

    run_ranks(_ddp_rank, args=(free_port(), str(tmp_path)), timeout_s=120)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(np.isfinite(r["loss"]) for r in ranks)
    assert ranks[0]["weights_sum"] == pytest.approx(ranks[1]["weights_sum"], rel=1e-6, abs=1e-6)
    assert ranks[1]["attribute_grad"] > 0 and ranks[1]["attribute_grad"] == pytest.approx(
        ranks[0]["attribute_grad"], rel=1e-5)
