import copy
import math

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
from saip_bench.tasks import common
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.tasks.retrieval import RetrievalHead, id_loss, sdm_loss
from saip_bench.tasks.text import WordTokenizer, build_text_side
from saip_bench.tasks.text.clip import build_text_tower
from saip_bench.tasks.text.mlm import mask_tokens
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


# A small CLIP text config (the recipe's is ViT-B/16's: width 512, 12 layers, 77 tokens)
SMALL_CLIP = {"model": "ViT-B-16-quickgelu", "width": 32, "layers": 1, "heads": 2, "embed_dim": 32,
              "context_length": 16}


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    """A randomly initialised small CLIP text tower saved as a plain state dict (nothing downloaded)."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("clip") / "small_text_tower.pt"
    tower = build_text_tower(SMALL_CLIP["model"], **{k: v for k, v in SMALL_CLIP.items() if k != "model"})
    torch.save(tower.state_dict(), path)
    return path


def _context(tmp_path, data, protocol, backbone, dataset="cuhk_pedes", clip=None, **overrides):
    """The spec's protocols at test size: the finetune protocol keeps the IRRA recipe (CLIP text side, MLM,
    CLIP normalisation) with the small tower saved at ``clip``; the linear one is the CPU protocol."""
    spec = get_task_spec("t2i_retrieval", dataset)
    spec.protocols["finetune"].schedule.max_steps = 2
    spec.protocols["finetune"].schedule.batch_size = 8
    head = spec.protocols["finetune"].params["head"]
    head["embed_dim"] = 32
    head["text_encoder"] = {**head["text_encoder"], **SMALL_CLIP, "checkpoint": str(clip) if clip else None}
    head["mlm"] = {**head["mlm"], "depth": 1, "heads": 2}
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
        build_text_side({"type": "open_clip", "checkpoint": "/nonexistent/clip.pt"}, ["a"])
    with pytest.raises(UserError, match="unknown text encoder"):
        build_text_side({"type": "bert"}, ["a"])


def test_sdm_loss_is_low_when_matching_identities_align():
    pids = torch.tensor([0, 0, 1, 2])
    aligned = torch.eye(4)[[0, 0, 1, 2]]
    shuffled = torch.eye(4)[[1, 2, 0, 0]]
    assert sdm_loss(aligned, aligned, pids, 50.0) < 0.05 < sdm_loss(aligned, shuffled, pids, 50.0)


def test_sdm_loss_on_a_hand_computed_case():
    # two pairs, orthogonal: scaled cosine s on the diagonal, 0 off it; the target is the identity, so each
    # row's KL is p log p + (1 - p)(log(1 - p) - log 1e-8) with p = e^s / (e^s + 1), twice (both directions)
    pids = torch.tensor([7, 9])
    for scale in (1.0, 3.0):
        p = math.exp(scale) / (math.exp(scale) + 1)
        row = p * (math.log(p) - math.log(1 + 1e-8)) + (1 - p) * (math.log(1 - p) - math.log(1e-8))
        loss = sdm_loss(torch.eye(2), torch.eye(2) * 5, pids, scale)
        assert loss.item() == pytest.approx(2 * row, rel=1e-5)
    # same identity twice: the target row is (1/2, 1/2), matched exactly by equal similarities -> 0
    assert sdm_loss(torch.ones(2, 3), torch.ones(2, 3), torch.tensor([1, 1]), 50.0).item() == pytest.approx(
        0.0, abs=1e-5)


def test_id_loss_is_the_mean_of_image_and_text_cross_entropy():
    head = torch.nn.Module()
    head.classifier = torch.nn.Linear(2, 3, bias=False)
    torch.nn.init.zeros_(head.classifier.weight)  # uniform logits: log 3 on each side
    assert id_loss(head, torch.randn(4, 2), torch.randn(4, 2), torch.tensor([0, 1, 2, 0])).item() == \
        pytest.approx(math.log(3))
    head.classifier.weight.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    image, text = torch.tensor([[math.log(2.0), 0.0]]), torch.zeros(1, 2)  # softmax 2/4; 1/3
    assert id_loss(head, image, text, torch.tensor([0])).item() == pytest.approx(
        (-math.log(2 / 4) - math.log(1 / 3)) / 2)


def test_recipe_groups_give_irras_lr_factors_and_decay(clip_checkpoint):
    spec = get_task_spec("t2i_retrieval", "cuhk_pedes")
    schedule = spec.protocols["finetune"].schedule
    side = build_text_side({"type": "open_clip", **SMALL_CLIP, "checkpoint": str(clip_checkpoint)}, [])
    head = RetrievalHead(16, side, 32, 5, 0.02, mlm={"depth": 1, "heads": 2})
    groups = common.schedule_param_groups(None, head, schedule)
    setting = {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = {f"head.{name}": setting[id(p)] for name, p in head.named_parameters()}
    expected = {  # IRRA: 'cross' x5, bias x2 without decay, classifier and mlm_head x5 (their biases too)
        "head.mlm.cross_attn.in_proj_weight": (5.0, 4e-5),
        "head.mlm.cross_attn.in_proj_bias": (2.0, 0.0),
        "head.mlm.cross_modal_transformer.resblocks.0.mlp.c_fc.weight": (5.0, 4e-5),
        "head.mlm.cross_modal_transformer.resblocks.0.ln_1.bias": (2.0, 0.0),
        "head.mlm.ln_pre_t.weight": (1.0, 4e-5),
        "head.mlm.ln_post.bias": (2.0, 0.0),
        "head.mlm.mlm_head.fc.weight": (5.0, 4e-5),
        "head.mlm.mlm_head.fc.bias": (5.0, 0.0),
        "head.classifier.weight": (5.0, 4e-5),
        "head.classifier.bias": (5.0, 0.0),
        "head.image_proj.weight": (1.0, 4e-5),
        "head.image_proj.bias": (2.0, 0.0),
        "head.text_encoder.tower.token_embedding.weight": (1.0, 4e-5),
        "head.text_encoder.tower.transformer.resblocks.0.attn.in_proj_bias": (2.0, 0.0),
    }
    assert {name: named[name] for name in expected} == expected
    assert schedule.optimizer == "adam" and schedule.eps == 1e-3 and schedule.warmup_start == 0.1
    assert (schedule.epochs, schedule.warmup_epochs, schedule.batch_size, schedule.lr) == (60, 5, 128, 1e-4)


def test_mlm_needs_a_bpe_text_side_and_a_trained_backbone(tmp_path, pedes_like, vit, clip_checkpoint):
    scratch = build_text_side({"type": "scratch", "max_length": 8, "width": 16, "layers": 1, "heads": 2},
                              ["a"])
    with pytest.raises(UserError, match="mlm: masked language modelling needs a BPE text side"):
        RetrievalHead(16, scratch, 16, 3, 0.02, mlm={"weight": 1.0})
    clip = build_text_side({"type": "open_clip", **SMALL_CLIP, "checkpoint": str(clip_checkpoint)}, [])
    with pytest.raises(UserError, match=r"embed_dim=64.*set embed_dim: 32"):
        RetrievalHead(16, clip, 64, 3, 0.02)
    with pytest.raises(UserError, match=r"mlm: unknown field\(s\) \['layers'\]"):
        RetrievalHead(16, clip, 32, 3, 0.02, mlm={"layers": 2})
    ctx = _context(tmp_path, pedes_like, "linear", vit, clip=clip_checkpoint)
    ctx.spec.protocols["linear"].params["head"] = {"embed_dim": 32, "text_encoder": {
        "type": "open_clip", **SMALL_CLIP, "checkpoint": str(clip_checkpoint)}, "mlm": {"weight": 1.0}}
    with pytest.raises(UserError, match="mlm needs the image tokens"):
        get_task("t2i_retrieval").run(ctx)


def test_finetune_without_a_checkpoint_says_how_to_name_one(tmp_path, pedes_like, vit, monkeypatch):
    monkeypatch.delenv("SAIP_CLIP_TEXT_CHECKPOINT", raising=False)
    with pytest.raises(UserError, match="SAIP_CLIP_TEXT_CHECKPOINT=.*--cfg-options"):
        get_task("t2i_retrieval").run(_context(tmp_path, pedes_like, "finetune", vit))


@pytest.mark.parametrize(
    ("dataset", "protocol"),
    [
        ("cuhk_pedes", "linear"),
        ("cuhk_pedes", "finetune"),
        ("icfg_pedes", "linear"),
        ("icfg_pedes", "finetune"),
    ],
)
def test_runs_end_to_end_on_synthetic_world(tmp_path, synth_world, vit, clip_checkpoint, dataset, protocol):
    spec = get_task_spec("t2i_retrieval", dataset)
    data = read_dataset(dataset, synth_world / dataset, spec.dataset_version)
    ctx = _context(tmp_path, data, protocol, vit, dataset=dataset, clip=clip_checkpoint, visualize=2)
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
    assert len(list((ctx.out_dir / "vis").glob("*.png"))) == 2
    # the two protocols say what they ran: the paper's IRRA recipe or the labelled CPU protocol
    encoder, losses = result.extra["text_encoder"], result.extra["losses"]
    if protocol == "finetune":
        assert encoder["type"] == "open_clip" and encoder["checkpoint"] == str(clip_checkpoint)
        assert losses == {"sdm": 1.0, "id": 1.0, "mlm": 1.0} and result.extra["normalization"] == "clip"
        assert result.extra["steps"] == 2 and math.isfinite(result.extra["final_loss"])
    else:
        assert encoder["type"] == "scratch" and losses["mlm"] is None
        assert (ctx.out_dir / "predictions" / "tokenizer.json").exists()
        assert "CPU protocol" in ctx.spec.protocols["linear"].description


def test_finetune_is_deterministic(tmp_path, pedes_like, vit, clip_checkpoint):
    runs = [get_task("t2i_retrieval").run(_context(tmp_path / str(i), pedes_like, "finetune", vit,
                                                   clip=clip_checkpoint)) for i in range(2)]
    assert runs[0].extra["final_loss"] == runs[1].extra["final_loss"] and runs[0].scores == runs[1].scores


def test_mlm_term_starts_near_uniform_and_reaches_the_image(clip_checkpoint):
    torch.manual_seed(0)
    side = build_text_side({"type": "open_clip", **SMALL_CLIP, "checkpoint": str(clip_checkpoint)}, [])
    head = RetrievalHead(16, side, 32, 3, 0.02, mlm={"depth": 1, "heads": 2})
    ids = side.tokenizer(["a woman in a long green dress", "a man with a black backpack"])
    masked, labels = mask_tokens(ids, head.mask_id, head.masking, torch.Generator().manual_seed(0))
    image = torch.randn(2, 9, 32, requires_grad=True)
    loss = head.mlm_term(masked, labels, image)
    # IRRA's small-std head init: close to uniform over CLIP's 49408 ids at the start (random logits of
    # variance v add about v / 2 nats to log 49408; v is about 1 at this small width)
    assert math.log(49408) - 0.5 < loss.item() < math.log(49408) + 2
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0  # the prediction reads the image tokens
