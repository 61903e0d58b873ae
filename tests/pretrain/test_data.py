import pytest
import torch

from saip_bench.errors import DataFormatError
from saip_bench.pretrain.data import (
    PretrainDataset,
    PretrainFolder,
    ResumableBatchSampler,
    collate,
    sample_seed,
)


def test_scan_and_items(pretrain_root):
    folder = PretrainFolder.scan(pretrain_root)
    assert len(folder.images) == 16 and len(folder.identities) == 4 and len(folder.backgrounds) == 3
    dataset = PretrainDataset(
        folder,
        (64, 32),
        0,
        with_backgrounds=True,
        background_size=(48, 48),
        with_labels=True,
        with_keypoints=True,
    )
    batch = collate([dataset[(i, 0)] for i in range(3)])
    assert batch["image"].shape == (3, 3, 64, 32) and batch["image"].dtype == torch.uint8
    assert batch["background"].shape == (3, 3, 48, 48)
    assert batch["label"].tolist() == [0, 0, 0]
    assert batch["keypoints"].shape == (3, 17, 3)
    assert (batch["keypoints"][:, :, 0] == 16).all()  # centre x rescaled to the 32-px-wide source
    assert batch["sample_seed"][0] == sample_seed(0, 0, 0)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataFormatError, match="images/"):
        PretrainFolder.scan(tmp_path / "nope")


def test_sampler_ranks_partition_the_single_process_batches():
    single = list(ResumableBatchSampler(20, 4, seed=1, total=12))
    rank0 = list(ResumableBatchSampler(20, 2, seed=1, rank=0, world_size=2, total=12))
    rank1 = list(ResumableBatchSampler(20, 2, seed=1, rank=1, world_size=2, total=12))
    for full, a, b in zip(single, rank0, rank1, strict=True):
        assert full == a + b
    epochs = {epoch for batch in single for _, epoch in batch}
    assert epochs == {0, 1, 2}  # 5 micro-batches per epoch


def test_sampler_resume_continues_the_same_stream():
    full = list(ResumableBatchSampler(20, 3, seed=5, total=15))
    resumed = list(ResumableBatchSampler(20, 3, seed=5, start=7, total=15))
    assert resumed == full[7:]
