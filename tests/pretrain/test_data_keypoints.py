import json

import numpy as np
from PIL import Image

from saip_bench.pretrain.data import PretrainDataset, PretrainFolder


def _world(tmp_path, key_style):
    image_dir = tmp_path / "images" / "00001"
    image_dir.mkdir(parents=True)
    Image.fromarray(np.zeros((128, 64, 3), np.uint8)).save(image_dir / "a.jpg")
    key = "images/00001/a.jpg" if key_style == "root" else "00001/a.jpg"
    points = [[32.0, 64.0, 2.0]] * 17
    (tmp_path / "keypoints.json").write_text(json.dumps({key: points}))
    return PretrainFolder.scan(tmp_path)


def test_keypoints_found_with_root_or_images_relative_keys(tmp_path):
    for style in ("root", "images"):
        folder = _world(tmp_path / style, style)
        dataset = PretrainDataset(folder, source_size=(256, 128), run_seed=0, with_keypoints=True)
        points = dataset._keypoints(folder.images[0])
        assert points.shape == (17, 3)
        assert float(points[0, 2]) == 2.0  # found, not the all-invisible fallback
        assert float(points[0, 0]) == 64.0 and float(points[0, 1]) == 128.0  # scaled to source size
