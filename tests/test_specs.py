import pytest

from saip_bench.errors import SpecError
from saip_bench.specs import (
    ResultRecord,
    dataset_card_paths,
    load_dataset_card,
    load_task_spec,
    stable_hash,
    task_spec_paths,
)


@pytest.mark.parametrize("path", task_spec_paths(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_task_spec_validates(path):
    spec = load_task_spec(path)
    assert spec.default_protocol in spec.protocols


@pytest.mark.parametrize("path", dataset_card_paths(), ids=lambda p: p.stem)
def test_every_dataset_card_validates(path):
    card = load_dataset_card(path)
    assert card.default_version in card.versions


CPU_FINETUNE_SPECS = [p for p in task_spec_paths() if "finetune_cpu" in load_task_spec(p).protocols]
# The only schedule fields a CPU fine-tune may change beyond its budget, with the phrase its description
# must carry: at the paper's lr 1e-4 a ~165-step attribute fine-tune leaves the classifier at chance.
CPU_FINETUNE_DEVIATIONS = {
    **{f"attributes/{name}": {"lr": "lr 1e-3 (10x)", "epochs": "a step cap instead of its",
                              "scheduler": "constant LR after warm-up it was tuned with"}
       for name in ("peta", "pa100k")},
    # LIP's CPU fine-tune predates the paper protocol's SCHP/CE2P recipe (issue 22 item 2), numbers kept
    "parsing/lip": {"scheduler": "a plain cosine, not SGDR"},
}
# Task params a CPU fine-tune may leave at their default, with the phrase its description must carry.
CPU_FINETUNE_PARAM_DEVIATIONS = {
    **{f"attributes/{name}": {"pool": "average-pooled head input"} for name in ("peta", "pa100k")},
    "parsing/lip": {"head": "the light multi-level head, not CE2P",
                    "affine": "anisotropic resize, not the affine",
                    "augment": "flip only, no scale or rotation",
                    "loss": "cross-entropy only, no Lovasz",
                    "test_scales": "a flip-only test, not 5 scales"},
    # the fast protocol moved to sigma 2 for signal at 32x24 (issue 26); the CPU fine-tune keeps sigma 1
    "pose/coco": {"sigma": "sigma 1"},
}


def deviation_holds(field: str, cpu: float, paper: float) -> bool:
    """What each allowed deviation may be: 10x the paper's LR; more epochs, so that max_steps binds."""
    if field == "scheduler":
        return (cpu, paper) in (("cosine", "sgdr"), ("constant", "plateau"))
    return {"lr": cpu == 10 * paper, "epochs": cpu > paper}[field]


def test_cpu_finetune_protocols_exist_where_documented():
    names = {f"{p.parent.name}/{p.stem}" for p in CPU_FINETUNE_SPECS}
    assert {"reid/market1501", "reid/msmt17", "attributes/pa100k", "attributes/peta", "parsing/lip",
            "pose/coco"} <= names


@pytest.mark.parametrize("path", CPU_FINETUNE_SPECS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_cpu_finetune_keeps_the_paper_optimiser_and_only_cuts_the_budget(path):
    """finetune_cpu = the paper's fine-tune (optimiser, LR, decay, schedule shape, task params) at the fast
    protocol's input size, with a step cap, a warm-up and layer decay; drift from the paper protocol fails
    unless it is listed in CPU_FINETUNE_DEVIATIONS and explained in the protocol's description.
    (For ReID, benchmarks/pretrained_vs_random.py's --finetune-* flags build the same protocol; the attribute
    CPU fine-tunes are run as the units attributes:<dataset>:finetune_cpu.)"""
    spec = load_task_spec(path)
    paper, cpu = spec.protocols["finetune"], spec.protocols["finetune_cpu"]
    fast = next(p for name, p in spec.protocols.items() if p.kind in ("linear", "frozen"))
    assert cpu.kind == "finetune" and cpu.schedule.max_steps == 300
    allowed = CPU_FINETUNE_DEVIATIONS.get(f"{path.parent.name}/{path.stem}", {})
    for field in ("optimizer", "lr", "weight_decay", "scheduler", "milestones", "epochs"):
        if field in allowed:  # a documented deviation: the description must say what and why
            assert allowed[field] in " ".join(cpu.description.split()), (field, allowed[field])
            assert deviation_holds(field, getattr(cpu.schedule, field), getattr(paper.schedule, field)), field
            continue
        assert getattr(cpu.schedule, field) == getattr(paper.schedule, field), field
    assert cpu.schedule.layer_decay == 0.75 and cpu.schedule.warmup_epochs == 5
    assert cpu.schedule.grad_clip == paper.schedule.grad_clip
    assert cpu.params["input_size"] == fast.params["input_size"]
    allowed_params = CPU_FINETUNE_PARAM_DEVIATIONS.get(f"{path.parent.name}/{path.stem}", {})
    for key, value in paper.params.items():  # or the fast protocol's size-tied value (heatmap sigma)
        if key in allowed_params:
            assert allowed_params[key] in " ".join(cpu.description.split()), key
            continue
        assert cpu.params.get(key) in (value, fast.params.get(key, value)), key


MINIMAL_SPEC = """
task: reid
dataset: market1501
splits: {train: train, query: query, gallery: gallery}
input_size: [256, 128]
head: {type: bnneck}
metric: {main: rank1, report: [rank1, mAP]}
protocols:
  linear: {kind: linear, schedule: {epochs: 1, batch_size: 8, lr: 0.1}}
default_protocol: linear
"""


def test_unknown_field_and_closed_vocabulary_rejected(tmp_path):
    folder = tmp_path / "reid"
    folder.mkdir()
    good = folder / "market1501.yaml"
    good.write_text(MINIMAL_SPEC)
    assert load_task_spec(good).metric.main == "rank1"
    bad = folder / "market1501.yaml"
    bad.write_text(MINIMAL_SPEC + "colour: blue\n")
    with pytest.raises(SpecError, match="colour"):
        load_task_spec(bad)
    bad.write_text(MINIMAL_SPEC.replace("kind: linear", "kind: zero_shot"))
    with pytest.raises(SpecError, match="kind"):
        load_task_spec(bad)
    bad.write_text(MINIMAL_SPEC.replace("default_protocol: linear", "default_protocol: finetune"))
    with pytest.raises(SpecError, match="default_protocol"):
        load_task_spec(bad)


def test_spec_must_live_at_its_path(tmp_path):
    path = tmp_path / "wrong.yaml"
    path.write_text(MINIMAL_SPEC)
    with pytest.raises(SpecError, match="must live at tasks/reid/market1501.yaml"):
        load_task_spec(path)


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_record_requires_main_metric_in_scores():
    identity = {"method": "saip", "backbone": "vit_tiny", "task": "reid", "dataset": "market1501",
                "protocol": "linear", "seed": 0}
    ResultRecord(identity=identity, scores={"rank1": 1.0}, main_metric="rank1", main_score=1.0,
                 direction="max", provenance={})
    with pytest.raises(ValueError):
        ResultRecord(identity=identity, scores={"mAP": 1.0}, main_metric="rank1", main_score=1.0,
                     direction="max", provenance={})


# --- recipe details, selection policies, recipe blocks (issue 22 items 3-5) ----------------------------


def _spec_file(tmp_path, text):
    folder = tmp_path / "reid"
    folder.mkdir(exist_ok=True)
    path = folder / "market1501.yaml"
    path.write_text(text)
    return path


def test_unknown_selection_policy_names_file_and_key(tmp_path):
    path = _spec_file(tmp_path, MINIMAL_SPEC.replace("kind: linear,", "kind: linear, selection: best_epoch,"))
    with pytest.raises(SpecError) as error:
        load_task_spec(path)
    message = str(error.value)
    assert str(path) in message and "protocols.linear.selection" in message
    assert "final" in message and "best_test" in message  # the allowed values are listed


def test_selection_policy_a_task_lacks_is_rejected_at_validation(tmp_path):
    path = _spec_file(tmp_path, MINIMAL_SPEC.replace("kind: linear,", "kind: linear, selection: best_val,"))
    with pytest.raises(SpecError, match=r"protocols.linear.selection: 'best_val' is not supported for task"):
        load_task_spec(path)
    path.write_text(MINIMAL_SPEC.replace("kind: linear,", "kind: linear, selection: best_test,"))
    assert load_task_spec(path).protocols["linear"].selection == "best_test"


def test_resize_rule_only_where_a_task_honours_it(tmp_path):
    bicubic = MINIMAL_SPEC.replace("kind: linear,", "kind: linear, resize: {train: bicubic},")
    path = _spec_file(tmp_path, bicubic)
    assert load_task_spec(path).protocols["linear"].resize.train == "bicubic"
    dense = MINIMAL_SPEC.replace("task: reid", "task: pose").replace("dataset: market1501", "dataset: coco")
    folder = tmp_path / "pose"
    folder.mkdir()
    dense = dense.replace("kind: linear,", "kind: linear, resize: {test: bicubic},")
    (folder / "coco.yaml").write_text(dense)
    with pytest.raises(SpecError, match="protocols.linear.resize"):
        load_task_spec(folder / "coco.yaml")


def test_selection_table_matches_the_tasks():
    from saip_bench.specs import SELECTION_SUPPORT, TASK_NAMES
    from saip_bench.tasks.base import get_task

    for task in TASK_NAMES:
        assert tuple(get_task(task).selections) == SELECTION_SUPPORT[task], task


@pytest.mark.parametrize("path", task_spec_paths(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_finetune_protocol_declares_its_recipe(path):
    spec = load_task_spec(path)
    recipe = spec.protocols["finetune"].recipe
    assert recipe is not None
    for field in ("source", "head", "input", "augmentation", "losses", "test"):
        assert getattr(recipe, field).strip(), field
    for deviation in recipe.deviations:
        assert deviation.reason.strip() and deviation.recipe.strip() and deviation.ours.strip()
    for name, protocol in spec.protocols.items():  # CPU protocols keep the old behaviour
        if name != "finetune":
            assert protocol.drop_path == 0 and protocol.selection == "final" and not protocol.final_norm, name
            assert protocol.schedule.groups.model_dump() == {"no_decay": ["bias", "norm", "pos_embed",
                                                                          "cls_token"],
                                                             "bias_lr": 1.0, "lr_mult": {}}, name


def test_record_selection_is_optional_and_lifted_from_task_details():
    identity = {"method": "saip", "backbone": "vit_tiny", "task": "reid", "dataset": "market1501",
                "protocol": "finetune", "seed": 0}
    base = {"identity": identity, "scores": {"rank1": 1.0}, "main_metric": "rank1", "main_score": 1.0,
            "direction": "max"}
    old = ResultRecord(**base, provenance={})  # records written before policies existed still load
    assert old.selection is None
    lifted = ResultRecord(**base, provenance={"task_details": {"selection": "best_test"}})
    assert lifted.selection == "best_test"
    assert ResultRecord.model_validate(lifted.model_dump()).selection == "best_test"
    with pytest.raises(ValueError, match="selection"):
        ResultRecord(**base, provenance={}, selection="best_epoch")
