import torch

from saip_bench.tasks.detection.training import mirrored_batches


def test_mirrored_batches_flip_image_and_target_together():
    records = [{"value": float(i)} for i in range(6)]

    def load(record):
        image = torch.zeros(3, 2, 4)
        image[..., 0] = record["value"]  # left column carries the id
        return image, {"x": 0}

    def flip(target, width):
        return {"x": width - 1 - target["x"]}

    batches = mirrored_batches(records, load, flip, 4, batch_size=2, steps_per_epoch=3,
                               generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    seen, flipped = [], 0
    for images, targets in batches(0):
        for image, target in zip(images, targets, strict=True):
            column = 3 if target["x"] == 3 else 0  # a mirrored target points at the right edge
            flipped += target["x"] == 3
            seen.append(float(image[0, 0, column]))
            assert float(image[0, 0, 3 - column]) == 0.0
    assert sorted(seen) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # one epoch = every record once
    assert 0 < flipped < 6
