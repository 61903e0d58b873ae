"""The CLIP text side: open_clip's BPE tokenisation and a text tower loaded from a local checkpoint file.

Towers here are small (width 32, one layer, 16 tokens) and randomly initialised: nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch

from saip_bench.errors import UserError
from saip_bench.tasks.text import build_text_side
from saip_bench.tasks.text.clip import CHECKPOINT_ENV, ClipTokenizer, build_text_tower

MODEL = "ViT-B-16-quickgelu"
SMALL = {"width": 32, "layers": 1, "heads": 2, "embed_dim": 32, "context_length": 16}
CAPTIONS = ["A woman wears a RED coat,  and black shoes.", "a diagram", "the man's bag is blue"]


def small_tower(seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_text_tower(MODEL, **{**SMALL, **changes})


def side_config(path, **changes):
    return {"type": "open_clip", "model": MODEL, "checkpoint": None if path is None else str(path), **SMALL,
            **changes}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random small tower and the file it was saved to (a plain state dict, as the tests' users save)."""
    tower = small_tower(seed=1)
    path = tmp_path_factory.mktemp("clip") / "text_tower.pt"
    torch.save(tower.state_dict(), path)
    return tower, path


def test_tokenisation_is_open_clips():
    import open_clip

    ours = ClipTokenizer(MODEL, 77)
    assert torch.equal(ours(CAPTIONS), open_clip.get_tokenizer("ViT-B-16")(CAPTIONS))
    assert torch.equal(ours(CAPTIONS), open_clip.tokenize(CAPTIONS))
    # CLIP's own README example: "a diagram" -> <sot> a diagram <eot>, zero padded
    assert ours(["a diagram"])[0, :5].tolist() == [49406, 320, 22697, 49407, 0]
    assert (ours.sot_id, ours.eot_id, ours.mask_id, ours.vocab_size) == (49406, 49407, 49405, 49408)
    short = ClipTokenizer(MODEL, 6)(["one two three four five six seven"])
    assert short.shape == (1, 6) and short[0, 0] == 49406 and short[0, -1] == 49407  # truncated, <eot> kept


def test_tower_loads_from_a_local_file(saved):
    tower, path = saved
    side = build_text_side(side_config(path), ["unused"])
    ids = side.tokenizer(CAPTIONS)
    tower.output_tokens = False
    with torch.no_grad():
        expected = tower(ids)
        pooled, tokens = side.encoder.forward_tokens(ids)
    assert torch.equal(side.encoder(ids), pooled) and torch.allclose(pooled, expected)
    assert tokens.shape == (3, 16, 32)
    eot = ids.argmax(1)  # the <eot> position's projected token is the pooled feature
    assert torch.allclose(tokens[torch.arange(3), eot], pooled, atol=1e-6)
    assert side.projected and side.width == 32 and side.mask_id == 49405
    assert side.description["checkpoint"] == str(path) and len(side.description["checkpoint_sha256"]) == 16


def test_whole_clip_checkpoints_load_their_text_keys(saved, tmp_path):
    tower, _ = saved
    state = tower.state_dict()
    whole = {**state, "visual.conv1.weight": torch.zeros(4, 3, 16, 16), "logit_scale": torch.tensor(4.6)}
    custom = {f"text.{k}": v for k, v in state.items()} | {"visual.trunk.weight": torch.zeros(2)}
    for name, content in (("openclip.pt", {"state_dict": {f"module.{k}": v for k, v in whole.items()}}),
                          ("custom.pt", custom)):
        torch.save(content, tmp_path / name)
        side = build_text_side(side_config(tmp_path / name), [])
        assert all(torch.equal(side.encoder.tower.state_dict()[k], v) for k, v in state.items()), name


@pytest.mark.filterwarnings("ignore:.*TorchScript archive:UserWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchscript_archives_load_like_openais(saved, tmp_path):
    """OpenAI's ViT-B-16.pt (IRRA's starting point) is a TorchScript archive; a traced tower stands in."""
    tower, _ = saved
    tower.output_tokens = False
    ids = ClipTokenizer(MODEL, 16)(CAPTIONS)
    torch.jit.save(torch.jit.trace(tower, ids), tmp_path / "ViT-B-16.pt")
    side = build_text_side(side_config(tmp_path / "ViT-B-16.pt"), [])
    with torch.no_grad():
        assert torch.allclose(side.encoder(ids), tower(ids), atol=1e-6)


def test_checkpoint_named_by_environment(saved, monkeypatch):
    _, path = saved
    monkeypatch.setenv(CHECKPOINT_ENV, str(path))
    assert build_text_side(side_config(None), []).description["checkpoint"] == str(path)
    monkeypatch.delenv(CHECKPOINT_ENV)
    with pytest.raises(UserError, match=f"{CHECKPOINT_ENV}=.*never downloads"):
        build_text_side(side_config(None), [])


def test_missing_or_mismatched_checkpoints_name_the_file_and_key(saved, tmp_path):
    tower, path = saved
    with pytest.raises(UserError, match="nowhere.pt: CLIP text checkpoint file not found"):
        build_text_side(side_config(tmp_path / "nowhere.pt"), [])
    with pytest.raises(UserError, match=r"text_tower.pt: key 'positional_embedding' has shape \[16, 32\].*"
                                        r"expects \[16, 64\]"):
        build_text_side(side_config(path, width=64, embed_dim=64), [])
    with pytest.raises(UserError, match=r"text_tower.pt: unexpected key 'transformer.resblocks.1"):
        torch.save(small_tower(layers=2).state_dict(), tmp_path / "two_layers.pt")
        tmp_path.joinpath("two_layers.pt").rename(tmp_path / "text_tower.pt")
        build_text_side(side_config(tmp_path / "text_tower.pt"), [])
    state = dict(tower.state_dict())
    del state["ln_final.weight"]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(UserError, match=r"cut.pt: missing key 'ln_final.weight'"):
        build_text_side(side_config(tmp_path / "cut.pt"), [])
    torch.save({"backbone.weight": torch.zeros(2)}, tmp_path / "vision.pt")
    with pytest.raises(UserError, match=r"vision.pt: no CLIP text-tower keys"):
        build_text_side(side_config(tmp_path / "vision.pt"), [])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"junk.pt: not a readable CLIP checkpoint"):
        build_text_side(side_config(tmp_path / "junk.pt"), [])
    with pytest.raises(UserError, match=r"unknown field\(s\) \['weights'\]"):
        build_text_side(side_config(path, weights="x"), [])
