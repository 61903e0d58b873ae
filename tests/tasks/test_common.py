import pytest
import torch
from PIL import Image

from saip_bench.backbones import create_backbone
from saip_bench.errors import DataFormatError
from saip_bench.specs import Schedule
from saip_bench.tasks import common


def test_load_rgb_names_corrupt_file(tmp_path):
    good = tmp_path / "a.jpg"
    Image.new("RGB", (8, 4), (255, 0, 0)).save(good)
    assert common.load_rgb(good).size == (8, 4)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataFormatError, match="b.jpg"):
        common.load_rgb(bad)
    with pytest.raises(DataFormatError, match="missing.jpg"):
        common.load_rgb(tmp_path / "missing.jpg")


def test_lr_factor_warmup_then_cosine():
    schedule = Schedule(epochs=10, batch_size=1, lr=1.0, warmup_epochs=1, scheduler="cosine")
    assert common.lr_factor(0, 100, 10, schedule) == pytest.approx(0.1)
    assert common.lr_factor(9, 100, 10, schedule) == pytest.approx(1.0)
    assert common.lr_factor(55, 100, 10, schedule) == pytest.approx(0.5)
    assert common.lr_factor(100, 100, 10, schedule) == pytest.approx(0.0)
    step = Schedule(epochs=10, batch_size=1, lr=1.0, scheduler="step", milestones=[5, 8])
    assert common.lr_factor(60, 100, 0, step) == pytest.approx(0.1)
    assert common.lr_factor(90, 100, 0, step) == pytest.approx(0.01)


def test_param_groups_no_decay_and_layer_decay():
    backbone = create_backbone("vit_tiny")
    head = torch.nn.Linear(192, 3)
    groups = common.param_groups(backbone, head, weight_decay=0.05, layer_decay=0.5)
    by_key = {(g["weight_decay"], g["lr_scale"]): g for g in groups}
    assert any(wd == 0.0 for wd, _ in by_key)
    scales = sorted({scale for _, scale in by_key})
    assert scales[0] == pytest.approx(0.5**13) and scales[-1] == pytest.approx(1.0)
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in backbone.parameters()) + 192 * 3 + 3


def test_fit_loop_reduces_loss_and_respects_max_steps():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    schedule = Schedule(epochs=50, batch_size=16, lr=0.05, scheduler="constant", max_steps=120)
    optimizer = common.build_optimizer(common.param_groups(None, model, 0.0), schedule)

    def batches(epoch):
        for i in range(0, 64, 16):
            yield x[i : i + 16], y[i : i + 16]

    history = common.fit_loop(model, batches, lambda b: torch.nn.functional.mse_loss(model(b[0]), b[1]),
                              schedule, optimizer, steps_per_epoch=4, amp=False, show_progress=False)
    assert history["steps"] == 120
    assert history["losses"][-1] < 0.1 * history["losses"][0]


def test_cached_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    first = common.cached(tmp_path / "f.pt", compute)
    second = common.cached(tmp_path / "f.pt", compute)
    assert torch.equal(first["x"], second["x"]) and len(calls) == 1


def test_limit_is_seeded_subset():
    records = [{"i": i} for i in range(10)]
    a = common.limit(records, 4, seed=1)
    assert a == common.limit(records, 4, seed=1) and len(a) == 4
    assert [r["i"] for r in a] == sorted(r["i"] for r in a)
    assert common.limit(records, None, 0) == records


def test_fit_summary_reports_last_loss_or_none():
    assert common.fit_summary({"steps": 3, "losses": [3.0, 2.0, 1.5], "fit_seconds": 0.5}) == {
        "steps": 3, "final_loss": 1.5, "fit_seconds": 0.5}
    assert common.fit_summary({"steps": 0, "losses": [], "fit_seconds": 0.0})["final_loss"] is None


def test_epoch_batches_keep_one_loader_and_the_key_order():
    """``epoch_batches``: epoch e yields exactly its keys' batches, in order, from one loader whose
    workers live across epochs (a worker pool per epoch starved the GPU on few-batch epochs)."""
    seen_epochs: list[int] = []

    def epoch_keys(epoch: int):
        seen_epochs.append(epoch)
        return ([(epoch, step, i) for i in range(3)] for step in range(2))

    def collect(num_workers: int) -> list[list[tuple[int, int, int]]]:
        seen_epochs.clear()
        batches = common.epoch_batches(lambda key: torch.tensor(key), epoch_keys, 2,
                                       lambda items: torch.stack(items), num_workers, "cpu")
        return [[tuple(row) for row in batch.tolist()] for epoch in range(3) for batch in batches(epoch)]

    expected = [[(e, s, i) for i in range(3)] for e in range(3) for s in range(2)]
    assert collect(0) == expected
    assert seen_epochs[:3] == [0, 1, 2]  # one chained sampler, drawn lazily
    assert collect(2) == expected


# --- recipe details (issue 22 item 3) ------------------------------------------------------------------

def _group_of(groups, parameter):
    return next(g for g in groups if any(p is parameter for p in g["params"]))


def test_param_groups_default_rules_exempt_bias_norm_and_tokens():
    backbone = create_backbone("vit_tiny")
    groups = common.param_groups(backbone, torch.nn.Linear(192, 3), weight_decay=0.05)
    body = backbone.body
    for exempt in (body.blocks[0].attn.qkv.bias, body.blocks[0].norm1.weight, body.pos_embed, body.cls_token):
        assert _group_of(groups, exempt)["weight_decay"] == 0.0
    assert _group_of(groups, body.blocks[0].attn.qkv.weight)["weight_decay"] == 0.05


def test_param_groups_recipe_rules_reach_the_groups():
    from saip_bench.specs import ParamGroups

    backbone = create_backbone("vit_tiny")
    head = torch.nn.ModuleDict({"proj": torch.nn.Linear(192, 8), "classifier": torch.nn.Linear(8, 3)})
    # TransReID: decay on every parameter, bias LR x2
    groups = common.param_groups(backbone, head, 1e-4, rules=ParamGroups(no_decay=[], bias_lr=2.0))
    assert all(g["weight_decay"] == 1e-4 for g in groups)
    assert _group_of(groups, backbone.body.blocks[3].mlp.fc1.bias)["lr_scale"] == 2.0
    assert _group_of(groups, backbone.body.blocks[3].mlp.fc1.weight)["lr_scale"] == 1.0
    # IRRA: bias x2 with no decay, classifier x5 (its bias too, not x10)
    rules = ParamGroups(no_decay=["bias"], bias_lr=2.0, lr_mult={"head.classifier.*": 5.0})
    groups = common.param_groups(backbone, head, 4e-5, rules=rules)
    assert _group_of(groups, head["classifier"].weight)["lr_scale"] == 5.0
    assert _group_of(groups, head["classifier"].bias)["lr_scale"] == 5.0
    assert _group_of(groups, head["proj"].bias)["lr_scale"] == 2.0
    assert _group_of(groups, head["proj"].bias)["weight_decay"] == 0.0
    assert _group_of(groups, backbone.body.norm.weight)["weight_decay"] == 4e-5  # norms decayed in IRRA


def test_build_optimizer_takes_eps_and_plain_sgd_momentum():
    model = torch.nn.Linear(4, 2)
    adam = Schedule(epochs=1, batch_size=1, lr=1e-4, optimizer="adam", eps=1e-3)
    optimizer = common.build_optimizer(common.param_groups(None, model, 0.0), adam)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["eps"] == 1e-3
    sgd = Schedule(epochs=1, batch_size=1, lr=1e-2, optimizer="sgd")
    optimizer = common.build_optimizer(common.param_groups(None, model, 0.0), sgd)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    assert not optimizer.defaults["nesterov"]


def test_lr_factor_warmup_start_min_lr_and_prefix():
    schedule = Schedule(epochs=10, batch_size=1, lr=1.0, warmup_start=0.01, min_lr=0.002, warmup_prefix=False)
    assert common.lr_factor(0, 100, 20, schedule) == pytest.approx(0.01)
    assert common.lr_factor(10, 100, 20, schedule) == pytest.approx(0.01 + 0.99 * 0.5)
    # cosine measured from step 0 (timm warmup_prefix=False): at step 50 it is half-way already
    assert common.lr_factor(50, 100, 20, schedule) == pytest.approx(0.002 + 0.998 * 0.5)
    assert common.lr_factor(100, 100, 20, schedule) == pytest.approx(0.002)
    mmcv = Schedule(epochs=10, batch_size=1, lr=1.0, warmup_steps=500, warmup_start=0.001, scheduler="step")
    assert common.warmup_steps(mmcv, steps_per_epoch=7) == 500
    assert common.lr_factor(0, 10_000, 500, mmcv) == pytest.approx(0.001)


def test_apply_drop_path_sets_timm_rates_and_keeps_weights():
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny", img_size=(64, 32))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    assert common.apply_drop_path(backbone, 0.1)
    blocks = backbone.body.blocks
    assert isinstance(blocks[0].drop_path1, torch.nn.Identity)  # timm: rate 0 at the first block
    assert blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert blocks[6].drop_path2.drop_prob == pytest.approx(0.1 * 6 / 11)
    assert backbone.timm_kwargs["drop_path_rate"] == 0.1
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not common.apply_drop_path(backbone, 0.1)  # already set: no rebuild


def test_resize_rule_bicubic_reaches_the_loader(tmp_path):
    rng = torch.Generator().manual_seed(0)
    pixels = (torch.rand(40, 20, 3, generator=rng) * 255).to(torch.uint8).numpy()
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    size = (16, 8)
    expected = common.pil_to_uint8(Image.open(path).convert("RGB").resize((8, 16), Image.BICUBIC))
    bilinear = common.ImageDataset([str(path)], size)[0][0]
    bicubic = common.ImageDataset([str(path)], size, interpolation="bicubic")[0][0]
    assert bicubic.dtype == torch.uint8 and bicubic.shape == (3, 16, 8)
    assert torch.equal(bicubic, expected) and not torch.equal(bilinear, expected)
    loader = common.image_loader([str(path)], size, 1, interpolation="bicubic")
    batch = next(iter(loader))[0]
    assert batch.dtype == torch.uint8 and torch.equal(batch[0], expected)
    # made float in the step: the same numbers as the [0, 1] floats the loader used to carry
    assert torch.equal(common.unit_images(batch, "cpu")[0], common.pil_to_tensor(
        Image.open(path).convert("RGB"), size, "bicubic"))


@pytest.mark.parametrize("fill", [list(common.IMAGENET_MEAN), [0.0], "irra"])
def test_erasing_box_painted_in_the_step_equals_torchvision_erasing_the_floats(fill):
    """What reid/retrieval used to do in the worker (v2.RandomErasing on the [0, 1] image) against the
    deferred form (the worker draws the box, the step paints it on the uint8 batch made float): the same
    pixels for every seed, the same random draws consumed, erased and untouched images both seen."""
    from torchvision.transforms import v2

    from saip_bench.tasks.retrieval import retrieval_augmentation

    if fill == "irra":
        erasing = retrieval_augmentation((32, 16)).erasing
    else:
        erasing = v2.RandomErasing(p=0.5, value=fill)
    image = (torch.rand(3, 32, 16, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    erased = 0
    for seed in range(120):
        torch.manual_seed(seed)
        expected = erasing(image.float() / 255)
        after_torchvision = torch.rand(1)
        torch.manual_seed(seed)
        box = common.erasing_box(erasing, image)
        assert torch.equal(torch.rand(1), after_torchvision), seed
        got = common.unit_images(image[None], "cpu", torch.tensor([box]), erasing.value)[0]
        assert torch.equal(got, expected), (seed, box)
        erased += box[2] > 0
    assert 30 < erased < 90


def test_erasing_box_refuses_a_random_fill():
    from torchvision.transforms import v2

    with pytest.raises(ValueError, match="random fill"):
        common.erasing_box(v2.RandomErasing(p=1.0, value="random"), torch.zeros(3, 8, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="need their fill"):
        common.unit_images(torch.zeros(1, 3, 8, 4, dtype=torch.uint8), "cpu",
                           torch.zeros(1, 4, dtype=torch.int64))


def test_fit_loop_epoch_hook_and_best_epoch_restores_best_weights():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    schedule = Schedule(epochs=4, batch_size=1, lr=0.25, optimizer="sgd", scheduler="constant", max_steps=7)
    optimizer = common.build_optimizer(common.param_groups(None, model, 0.0), schedule)

    def weight() -> float:
        return float(model.weight.detach())

    selector = common.BestEpoch([model], lambda: -(weight() - 1.5) ** 2, "max")  # best weight: nearest 1.5
    seen: list[tuple[int, float]] = []

    def hook(epoch):
        seen.append((epoch, weight()))
        selector(epoch)

    common.fit_loop(model, lambda epoch: iter([None, None]), lambda _: -model.weight.sum(), schedule,
                    optimizer, steps_per_epoch=2, amp=False, show_progress=False, on_epoch_end=hook)
    assert [epoch for epoch, _ in seen] == [0, 1, 2, 3]  # the last, partial epoch (step cap 7) too
    best_epoch, best_weight = min(seen, key=lambda item: abs(item[1] - 1.5))
    assert weight() != best_weight  # training walked past the best epoch
    info = selector.restore()
    assert weight() == best_weight and info["selected_epoch"] == best_epoch + 1
    assert info["epochs_evaluated"] == 4


def test_plateau_scale_follows_torch_reduce_lr_on_plateau_and_round_trips():
    plateau = common.PlateauScale(factor=0.1, patience=1)
    for value in (1.0, 0.9, 0.95, 0.97, 0.96, 0.5, 0.6, 0.7):
        plateau.step(value)
    # bad epochs: 0.95 (1), 0.97 (2 > patience: x0.1), 0.96 (1), 0.5 best, 0.6 (1), 0.7 (2: x0.1)
    assert [f for _, f in plateau.history] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01])
    again = common.PlateauScale(factor=0.1, patience=1)
    again.load_state_dict(plateau.state_dict())
    plateau.step(0.8)
    again.step(0.8)
    assert again.scale == plateau.scale and again.history == plateau.history
    with pytest.raises(FloatingPointError):
        plateau.step(float("nan"))


def test_fit_loop_scales_the_lr_by_the_plateau_and_refuses_it_without_a_monitor():
    from saip_bench.errors import SpecError

    model = torch.nn.Linear(1, 1, bias=False)
    schedule = Schedule(epochs=3, batch_size=1, lr=0.5, optimizer="sgd", scheduler="plateau",
                        plateau_patience=0)
    optimizer = common.build_optimizer(common.param_groups(None, model, 0.0), schedule)
    plateau = common.PlateauScale(schedule.plateau_factor, schedule.plateau_patience)
    lrs: list[float] = []

    def loss(_):
        lrs.append(optimizer.param_groups[0]["lr"])
        return model.weight.sum() * 0

    common.fit_loop(model, lambda epoch: iter([None, None]), loss, schedule, optimizer, steps_per_epoch=2,
                    amp=False, show_progress=False, on_epoch_end=lambda epoch: plateau.step(1.0),
                    plateau=plateau)
    assert lrs == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.05, 0.05])  # epoch 1 sets the best, 2 is bad: x0.1
    with pytest.raises(SpecError, match="scheduler 'plateau' needs a value measured after every epoch"):
        common.fit_loop(model, lambda epoch: iter([None]), loss, schedule, optimizer, steps_per_epoch=1,
                        amp=False, show_progress=False)
