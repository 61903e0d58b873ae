import copy

import numpy as np
import pytest
import torch
from PIL import Image

from saip_bench.backbones import create_backbone
from saip_bench.data.readers import read_dataset
from saip_bench.data.records import DatasetSplits
from saip_bench.errors import UserError
from saip_bench.metrics.retrieval import evaluate_retrieval_file
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.tasks.retrieval import sdm_loss
from saip_bench.tasks.text import WordTokenizer, build_text_side
from saip_bench.tasks.text.tokenizer import EOS, PAD, SOS, UNK

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "black": (10, 10, 10),
    "white": (240, 240, 240),
}


@pytest.fixture(scope="module")
def pedes_like(tmp_path_factory):
    """Hand-made CUHK-PEDES-style splits: each identity wears one colour and its captions say so."""
    root = tmp_path_factory.mktemp("pedes_like")
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    splits = {"train": [], "test": []}
    for split, pids in (("train", range(12)), ("test", range(100, 106))):
        for pid in pids:
            colour = names[pid % len(names)]
            for k in range(2):
                array = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 15, (64, 32, 3)), 0, 255)
                path = root / f"{split}_{pid}_{k}.png"
                Image.fromarray(array.astype(np.uint8)).save(path)
                captions = [f"a person wearing a {colour} coat", f"the pedestrian is in {colour} clothes"]
                splits[split].append(
                    {"path": str(path), "pid": pid, "captions": captions, "file_path": path.name}
                )
    return DatasetSplits("cuhk_pedes", "default", root, splits, {})


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny", img_size=(64, 32))


def _context(tmp_path, data, protocol, backbone, dataset="cuhk_pedes", **overrides):
    spec = get_task_spec("t2i_retrieval", dataset)
    spec.protocols["finetune"].schedule.max_steps = 2
    spec.protocols["finetune"].schedule.batch_size = 8
    spec.protocols["finetune"].params = {
        "head": {"text_encoder": {"type": "scratch", "max_length": 16, "width": 32, "layers": 1, "heads": 2}}
    }
    spec.protocols["finetune"].params["input_size"] = [64, 32]
    spec.protocols["linear"].params["input_size"] = [64, 32]
    spec.protocols["linear"].params["head"] = {
        "embed_dim": 64,
        "text_encoder": {"type": "scratch", "max_length": 16, "width": 32, "layers": 1, "heads": 2},
    }
    spec.protocols["linear"].schedule.max_steps = 60
    return UnitContext(
        spec=spec,
        protocol=protocol,
        backbone=copy.deepcopy(backbone),
        data=data,
        out_dir=tmp_path / protocol,
        cache_dir=tmp_path / "cache",
        show_progress=False,
        **overrides,
    )


def test_tokenizer_is_deterministic_and_pads(tmp_path):
    tokenizer = WordTokenizer.from_captions(["b a a.", "c b a"], max_length=6)
    assert tokenizer.vocabulary[4:] == ["a", "b", ".", "c"]  # by count, then alphabetically
    ids = tokenizer(["A b zebra c d e f"])
    assert ids.tolist() == [[SOS, 4, 5, UNK, 7, EOS]]
    assert tokenizer(["a"]).tolist() == [[SOS, 4, EOS, PAD, PAD, PAD]]
    tokenizer.save(tmp_path / "tok.json")
    assert WordTokenizer.load(tmp_path / "tok.json").vocabulary == tokenizer.vocabulary


def test_text_encoder_ignores_padding_and_clip_needs_local_weights():
    side = build_text_side(
        {"type": "scratch", "max_length": 12, "width": 16, "layers": 1, "heads": 2},
        ["a red coat", "a blue coat"],
    )
    side.encoder.eval()
    short = side.tokenizer(["red coat"])
    assert side.encoder(short).shape == (1, 16)
    with pytest.raises(UserError, match="never downloads"):
        build_text_side({"type": "open_clip", "weights": "/nonexistent/clip.pt"}, ["a"])
    with pytest.raises(UserError, match="unknown text encoder"):
        build_text_side({"type": "bert"}, ["a"])


def test_sdm_loss_is_low_when_matching_identities_align():
    pids = torch.tensor([0, 0, 1, 2])
    aligned = torch.eye(4)[[0, 0, 1, 2]]
    shuffled = torch.eye(4)[[1, 2, 0, 0]]
    assert sdm_loss(aligned, aligned, pids, 50.0) < 0.05 < sdm_loss(aligned, shuffled, pids, 50.0)


@pytest.mark.parametrize(
    ("dataset", "protocol"),
    [
        ("cuhk_pedes", "linear"),
        ("cuhk_pedes", "finetune"),
        ("icfg_pedes", "linear"),
        ("icfg_pedes", "finetune"),
    ],
)
def test_runs_end_to_end_on_synthetic_world(tmp_path, synth_world, vit, dataset, protocol):
    spec = get_task_spec("t2i_retrieval", dataset)
    data = read_dataset(dataset, synth_world / dataset, spec.dataset_version)
    ctx = _context(tmp_path, data, protocol, vit, dataset=dataset, visualize=2)
    result = get_task("t2i_retrieval").run(ctx)
    assert set(result.scores) >= {"R1", "R5", "R10", "mAP", "mINP"}
    assert result.main_metric == "R1" and result.extra["protocol"] == protocol
    test = data.splits["test"]
    captions = sum(len(r["captions"]) for r in test)
    assert result.n_samples["test_captions"] == {"original": captions, "effective": captions}
    with np.load(result.predictions[0]) as preds:
        assert preds["similarity"].shape == (captions, len(test))
        assert preds["image_pids"].tolist() == [r["pid"] for r in test]
    assert evaluate_retrieval_file(result.predictions[0]) == result.scores
    assert (ctx.out_dir / "predictions" / "tokenizer.json").exists()
    assert len(list((ctx.out_dir / "vis").glob("*.png"))) == 2


def test_linear_protocol_learns_colour_words(tmp_path, pedes_like, vit):
    first = get_task("t2i_retrieval").run(_context(tmp_path, pedes_like, "linear", vit))
    second = get_task("t2i_retrieval").run(_context(tmp_path, pedes_like, "linear", vit))
    assert first.scores == second.scores
    # chance R@1 is ~1/6; captions name the only visual cue, so a trained text side must beat chance
    assert first.scores["R1"] > 40.0
