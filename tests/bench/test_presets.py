from pathlib import Path

import pytest

from saip_bench.bench.presets import available_presets, load_bench_preset
from saip_bench.errors import SpecError


def test_packaged_presets_validate():
    assert {"default", "paper", "smoke"} <= set(available_presets())
    default = load_bench_preset("default")
    assert default.data == "synthetic" and default.protocol == "fast"
    assert "saip" in default.methods and len(set(default.methods) - {"saip", "random"}) >= 3
    assert default.pretrain.preset == "quick"
    paper = load_bench_preset("paper")
    assert paper.data == "real" and paper.protocol == "paper" and len(paper.seeds) == 3


def test_unknown_preset_lists_known():
    with pytest.raises(SpecError, match="known: .*default"):
        load_bench_preset("nope")


def test_invalid_preset_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nmethods: [saip, saip]\nbackbones: [vit_tiny]\nprotokol: fast\n")
    with pytest.raises(SpecError) as info:
        load_bench_preset(path)
    message = str(info.value)
    assert str(path) in message and "methods" in message and "protokol" in message


def test_preset_hash_changes_with_content():
    a = load_bench_preset("default")
    b = a.model_copy(update={"seeds": [0, 1]})
    assert a.hash != b.hash


def test_external_checkpoints_are_methods_and_the_paper_supervised_is_one():
    """Issue 24: the paper's "Supervised" is an ImageNet checkpoint named by the user, per backbone."""
    paper = load_bench_preset("paper")
    assert "supervised" not in paper.methods
    assert paper.external_checkpoints() == {("supervised", b): None for b in paper.backbones}


def test_external_entries_are_validated(tmp_path):
    path = tmp_path / "ext.yaml"
    head = "name: ext\nmethods: [saip]\nbackbones: [vit_tiny]\nexternal:\n"
    path.write_text(head + "  - {name: saip, backbone: vit_tiny, checkpoint: a.pth}\n")
    with pytest.raises(SpecError, match="both as a method and as an external checkpoint"):
        load_bench_preset(path)
    path.write_text(head + "  - {name: 'a__b', backbone: vit_tiny}\n")
    with pytest.raises(SpecError, match="external.0.name"):
        load_bench_preset(path)
    path.write_text("name: ext\nbackbones: [vit_tiny]\nexternal: [{name: deit, backbone: vit_tiny, "
                    "checkpoint: deit.pth}]\n")
    only = load_bench_preset(path)
    assert only.methods == [] and only.external_checkpoints() == {("deit", "vit_tiny"): Path("deit.pth")}


def test_the_folder_label_method_never_shares_a_name_with_the_papers_supervised_checkpoint():
    """Issue 24, item 4: the paper's "Supervised" is an ImageNet checkpoint (external entry ``supervised``);
    the folder-label method is the clearly named variant ``supervised_ids``, so no board column mixes them."""
    from saip_bench.bench.presets import available_presets
    from saip_bench.discovery import import_submodules
    from saip_bench.pretrain.base import METHODS

    import_submodules("saip_bench.pretrain.methods")
    assert "supervised" not in METHODS and "supervised_ids" in METHODS
    for name in available_presets():
        preset = load_bench_preset(name)
        assert not set(preset.methods) & {entry.name for entry in preset.external}, name
    assert "supervised_ids" in load_bench_preset("default").methods
