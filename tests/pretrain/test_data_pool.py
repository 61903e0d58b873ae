"""Pretraining through the pool index: order, backgrounds without a folder, small workers, bad images."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from saip_bench.errors import DataFormatError
from saip_bench.pretrain.data import PretrainDataset, PretrainFolder, ResumableBatchSampler, collate
from saip_bench.pretrain.trainer import Trainer

from ._micro import micro_saip, micro_train_config
from .conftest import write_pretrain_folder


def raw_pool(root: Path, identities: int = 4, per_identity: int = 4) -> Path:
    """A pool as LUP1M comes: images only, no backgrounds/ and no keypoints."""
    write_pretrain_folder(root, identities=identities, per_identity=per_identity, backgrounds=0)
    shutil.rmtree(root / "backgrounds")
    (root / "keypoints.json").unlink()
    return root


def test_order_and_labels_are_those_of_the_old_listing(pretrain_root):
    folder = PretrainFolder.scan(pretrain_root, progress=False)
    image_dir = pretrain_root / "images"
    old = sorted(p for p in image_dir.rglob("*") if p.suffix == ".jpg")  # the listing before the index
    assert list(folder.images) == old
    names = sorted({p.parent.name for p in old})
    assert folder.labels.tolist() == [names.index(p.parent.name) for p in old]
    assert list(folder.backgrounds) == sorted((pretrain_root / "backgrounds").glob("*.jpg"))


def test_saip_trains_on_a_pool_without_backgrounds(tmp_path):
    root = raw_pool(tmp_path / "pool")
    trainer = Trainer(micro_saip(), micro_train_config(steps=1), root, tmp_path / "run", progress=False)
    assert trainer.dataset.background_source.startswith("pool:")
    result = trainer.fit()
    assert result.step == 1 and np.isfinite(result.last["loss"])
    saved = torch.load(result.checkpoint, weights_only=False)
    assert saved["data"]["backgrounds"].startswith("pool:")
    assert saved["data"]["pool_index"] == trainer.folder.index.listing_hash


def test_pool_backgrounds_are_other_images_and_deterministic(tmp_path):
    root = raw_pool(tmp_path / "pool")
    dataset = PretrainDataset(PretrainFolder.scan(root, progress=False), (32, 16), 0, with_backgrounds=True,
                              background_size=(24, 24))
    first, again = dataset[(3, 0)], dataset[(3, 0)]
    assert first["background"].shape == (3, 24, 24) and first["background"].dtype == torch.uint8
    assert torch.equal(first["background"], again["background"])
    assert not torch.equal(dataset[(3, 0)]["background"], dataset[(3, 1)]["background"])  # per epoch


def test_background_folder_default_and_options(pretrain_root, tmp_path):
    folder = PretrainFolder.scan(pretrain_root, progress=False)
    default = PretrainDataset(folder, (32, 16), 0, with_backgrounds=True)
    assert default.background_source.startswith("folder:") and "backgrounds" in default.background_source
    pool = PretrainDataset(folder, (32, 16), 0, with_backgrounds=True, backgrounds="pool")
    assert pool.background_source.startswith("pool:")
    other = tmp_path / "scenes"
    other.mkdir()
    for k in range(2):
        Image.fromarray(np.full((40, 50, 3), 40 * k, np.uint8)).save(other / f"s{k}.png")
    chosen = PretrainDataset(folder, (32, 16), 0, with_backgrounds=True, backgrounds=other,
                             background_size=(20, 20))
    assert chosen.background_source == f"folder:{other} (2 images)"
    assert chosen[(0, 0)]["background"].shape == (3, 20, 20)
    with pytest.raises(DataFormatError, match="nowhere"):
        PretrainDataset(folder, (32, 16), 0, with_backgrounds=True, backgrounds=tmp_path / "nowhere")


def test_dataset_pickles_small_whatever_the_pool_size(tmp_path):
    sizes = []
    for n_ids in (2, 40):
        root = raw_pool(tmp_path / f"pool{n_ids}", identities=n_ids, per_identity=5)
        dataset = PretrainDataset(PretrainFolder.scan(root, progress=False), (32, 16), 0,
                                  with_backgrounds=True, with_labels=True)
        blob = pickle.dumps(dataset)
        sizes.append(len(blob))
        clone = pickle.loads(blob)  # what a spawned worker gets: it re-maps the index file
        assert torch.equal(clone[(5, 0)]["image"], dataset[(5, 0)]["image"])
        assert clone[(5, 0)]["label"] == dataset[(5, 0)]["label"]
    assert sizes[1] < 8192 and abs(sizes[1] - sizes[0]) < 256  # no per-image payload


def test_two_workers_load_batches(tmp_path):
    root = raw_pool(tmp_path / "pool")
    dataset = PretrainDataset(PretrainFolder.scan(root, progress=False), (32, 16), 0, with_backgrounds=True,
                              background_size=(24, 24))
    sampler = ResumableBatchSampler(len(dataset), 4, seed=0, total=4)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=2)
    batches = list(loader)
    assert len(batches) == 4 and batches[0]["background"].shape == (4, 3, 24, 24)


def test_an_image_that_fails_to_decode_is_skipped_up_to_a_limit(tmp_path, capsys):
    root = raw_pool(tmp_path / "pool")
    folder = PretrainFolder.scan(root, progress=False)
    victim = folder.images[2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # the header parses, the pixels are cut off
    dataset = PretrainDataset(PretrainFolder.scan(root, progress=False), (32, 16), 0, max_bad_images=1)
    item = dataset[(2, 0)]
    assert torch.equal(item["image"], dataset[(3, 0)]["image"])  # the next image stands in
    assert dataset.bad_images == 1 and "skipping unreadable image" in capsys.readouterr().err
    with pytest.raises(DataFormatError, match=r"at most 1 unreadable images per loader process.*2"):
        dataset[(2, 0)]


def test_a_pool_of_mostly_unreadable_images_is_an_error(tmp_path):
    root = raw_pool(tmp_path / "pool", identities=2, per_identity=6)
    for k in range(11):
        (root / "images" / "0000" / f"bad{k}.jpg").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"unreadable images, found 11 of 23"):
        PretrainFolder.scan(root, progress=False)
