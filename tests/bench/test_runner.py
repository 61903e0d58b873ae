import json

import pytest

from saip_bench.bench.presets import BenchPreset
from saip_bench.bench.runner import BenchConfig, BenchHooks, BenchRunner, run_bench
from saip_bench.bench.store import OverwritePolicy, load_records
from saip_bench.errors import UserError
from tests.bench.fakes import FAKE_SPECS, FakePretrainer, FakeTask, fake_loader, fake_read, fake_world

PRESET = BenchPreset.model_validate(
    {
        "name": "fake",
        "methods": ["saip", "mae"],
        "backbones": ["tiny"],
        "seeds": [0, 1],
        "synth_preset": "tiny",
    }
)


@pytest.fixture
def env(tmp_path):
    FakeTask.calls = []
    FakeTask.fail_on = set()
    pretrainer = FakePretrainer()
    hooks = BenchHooks(
        specs=FAKE_SPECS,
        get_task=lambda name: FakeTask(),
        read_dataset=fake_read,
        generate_world=fake_world,
        pretrainer=pretrainer,
        backbone_loader=fake_loader,
        method_unsupported=lambda m, b: None,
    )
    return hooks, pretrainer, tmp_path


def config(tmp_path, **kw) -> BenchConfig:
    return BenchConfig(
        preset=PRESET, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", show_progress=False, **kw
    )


def test_run_writes_one_valid_record_per_unit_with_provenance(env):
    hooks, pretrainer, tmp = env
    report = run_bench(config(tmp), hooks)
    assert report.ok and len(report.written) == 12
    records = load_records([tmp / "run"])
    assert len(records) == 12
    # checkpoints are shared: one pretraining per (method, backbone)
    assert sorted(pretrainer.calls) == [("mae", "tiny", 0), ("saip", "tiny", 0)]
    record = next(r for r in records if r.identity.dataset == "crowdhuman")
    assert record.direction == "min" and record.main_metric == "mr" and not record.limited
    prov = record.provenance
    for key in (
        "unit_key",
        "spec_hash",
        "code_revision",
        "packages",
        "world_size",
        "effective_batch",
        "seeds",
        "device",
        "track",
    ):
        assert key in prov, key
    assert prov["pretrain"]["sha256"] and prov["pretrain"]["key"]
    assert prov["data"]["fingerprint"] not in ("", "missing") and prov["data"]["source"] == "synthetic"
    assert prov["seeds"]["planned"] == [0, 1] and prov["effective_batch"] == 8 and prov["track"] == "fast"
    assert record.cost["wall_s"] >= 0 and record.cost["peak_rss_mib"] > 0 and record.cost["params_m"] > 0
    assert record.cost["gflops"] > 0 and record.cost["latency_ms"] > 0
    assert record.n_samples == {"test": {"original": 10, "effective": 10}}


def test_rerun_skips_exactly_the_finished_units(env):
    hooks, _, tmp = env
    run_bench(config(tmp), hooks)
    FakeTask.calls = []
    report = run_bench(config(tmp), hooks)
    assert FakeTask.calls == [] and report.written == []
    # remove two records: exactly those two units run again
    victims = sorted((tmp / "run" / "records").glob("*.json"))[:2]
    for path in victims:
        path.unlink()
    report = run_bench(config(tmp), hooks)
    assert sorted(report.written) == sorted(victims)
    assert len(FakeTask.calls) == 2


def test_changed_inputs_make_records_stale(env):
    hooks, _, tmp = env
    run_bench(config(tmp, tasks=["market1501"]), hooks)
    before = {p.name: json.loads(p.read_text())["main_score"] for p in (tmp / "run" / "records").iterdir()}
    # data change -> every market record is stale
    (tmp / "cache" / "world" / "tiny-seed0" / "market1501" / "ann.json").write_text('{"changed": 1}')
    FakeTask.calls = []
    runner = BenchRunner(config(tmp, tasks=["market1501"], overwrite=OverwritePolicy.NEVER), hooks)
    assert {p.status for p in runner.plan()} == {"stale-kept"}
    report = run_bench(config(tmp, tasks=["market1501"]), hooks)
    assert len(report.written) == 4 and len(FakeTask.calls) == 4
    assert set(before) == {p.name for p in report.written}


def test_overwrite_always_reruns_everything(env):
    hooks, _, tmp = env
    run_bench(config(tmp, tasks=["pa100k"]), hooks)
    FakeTask.calls = []
    run_bench(config(tmp, tasks=["pa100k"], overwrite=OverwritePolicy.ALWAYS), hooks)
    assert len(FakeTask.calls) == 4


def test_shards_cover_every_unit_once(env):
    hooks, _, tmp = env
    written = []
    for index in (1, 2, 3):
        written += run_bench(config(tmp, shard=(index, 3)), hooks).written
    assert len(written) == 12 == len(set(written))
    assert len(load_records([tmp / "run"])) == 12


def test_limit_marks_records_and_full_run_replaces_them(env):
    hooks, _, tmp = env
    run_bench(config(tmp, limit=3, tasks=["pa100k"]), hooks)
    records = load_records([tmp / "run"])
    assert records and all(r.limited for r in records)
    assert all(r.n_samples["test"]["effective"] == 3 for r in records)
    run_bench(config(tmp, tasks=["pa100k"]), hooks)
    assert not any(r.limited for r in load_records([tmp / "run"]))


def test_failing_unit_is_logged_and_others_continue(env):
    hooks, _, tmp = env
    FakeTask.fail_on = {"pa100k"}
    report = run_bench(config(tmp), hooks)
    assert len(report.failed) == 4 and len(report.written) == 8 and not report.ok
    failures = sorted((tmp / "run" / "failures").glob("*.txt"))
    assert len(failures) == 4 and "boom" in failures[0].read_text()


def test_unsupported_method_backbone_is_skipped(env):
    hooks, pretrainer, tmp = env
    hooks.method_unsupported = lambda m, b: "mae needs a ViT" if m == "mae" else None
    report = run_bench(config(tmp), hooks)
    assert sum(p.status == "unsupported" for p in report.planned) == 6
    assert {c[0] for c in pretrainer.calls} == {"saip"}


def test_same_seed_same_scores(env):
    hooks, _, tmp = env
    run_bench(config(tmp, tasks=["market1501"]), hooks)
    first = {r.identity.method: r.main_score for r in load_records([tmp / "run"]) if r.identity.seed == 0}
    run_bench(config(tmp, tasks=["market1501"], overwrite=OverwritePolicy.ALWAYS), hooks)
    again = {r.identity.method: r.main_score for r in load_records([tmp / "run"]) if r.identity.seed == 0}
    assert first == again


def test_empty_selection_is_a_user_error(env):
    hooks, _, tmp = env
    one = BenchPreset.model_validate(
        {**PRESET.model_dump(), "seeds": [0], "methods": ["saip"], "tasks": ["reid/market1501"]}
    )
    with pytest.raises(UserError, match="selects no unit"):
        run_bench(
            BenchConfig(
                preset=one, run_dir=tmp / "r", cache_dir=tmp / "c", shard=(2, 2), show_progress=False
            ),
            hooks,
        )


def test_pretrain_only_shards_checkpoints_not_units(env):
    hooks, pretrainer, tmp = env
    first = BenchRunner(config(tmp, shard=(1, 2)), hooks).pretrain_only()
    second = BenchRunner(config(tmp, shard=(2, 2)), hooks).pretrain_only()
    assert len(first) == len(second) == 1
    assert sorted(pretrainer.calls) == [("mae", "tiny", 0), ("saip", "tiny", 0)]
    report = run_bench(config(tmp), hooks)  # units reuse the cached checkpoints
    assert len(report.written) == 12 and len(pretrainer.calls) == 2


def test_real_data_missing_dataset_folder_fails_before_running(env):
    hooks, pretrainer, tmp = env
    real = PRESET.model_copy(update={"data": "real"})
    (tmp / "data" / "market1501").mkdir(parents=True)
    with pytest.raises(UserError, match="crowdhuman") as info:
        run_bench(
            BenchConfig(
                preset=real,
                run_dir=tmp / "run",
                cache_dir=tmp / "cache",
                data_root=tmp / "data",
                pretrain_data=tmp / "data",
                show_progress=False,
            ),
            hooks,
        )
    assert "market1501" not in str(info.value) and pretrainer.calls == []


def test_existing_world_is_used_as_is(env):
    hooks, _, tmp = env
    world = fake_world(tmp / "mine", "tiny", 0)
    (world / ".world.json").write_text("{}")
    hooks.generate_world = lambda *a: pytest.fail("must not regenerate a given world")
    report = run_bench(config(tmp, world=world, tasks=["pa100k"]), hooks)
    assert len(report.written) == 4
    with pytest.raises(UserError, match="not a synthetic world"):
        run_bench(config(tmp, world=tmp / "cache", tasks=["pa100k"]), hooks)


def test_load_size_rounds_vit_inputs_to_whole_patches():
    from saip_bench.bench.runner import load_size

    assert load_size("vit_tiny", (800, 1400)) == (800, 1408)
    assert load_size("vit_tiny", (256, 128)) == (256, 128)
    assert load_size("starnet_s3", (800, 1400)) == (800, 1400)


def test_loader_workers_reach_every_unit_and_its_record(env):
    hooks, _, tmp = env
    seen: list[int] = []
    real_run = FakeTask.run

    def spy(self, ctx):
        seen.append(ctx.num_workers)
        return real_run(self, ctx)

    FakeTask.run = spy
    try:
        run_bench(config(tmp, loader_workers=3), hooks)
    finally:
        FakeTask.run = real_run
    assert seen and set(seen) == {3}
    records = load_records([tmp / "run"])
    assert {r.provenance["loader_workers"] for r in records} == {3}
    assert all(r.provenance["speed"] == {"tf32": False, "fused_adamw": False, "channels_last_convnets": False,
                                                  "compile": False}
               for r in records)  # CPU: no GPU switch is on


def test_records_name_the_spec_folders(env):
    hooks, _, tmp = env
    run_bench(config(tmp), hooks)
    sources = load_records([tmp / "run"])[0].provenance["specs"]
    assert sources["origin"] in ("checkout", "package") and sources["user"] is None


# ------------------------------------------------------------------ issue 24 item 5: external checkpoints
def _published_vit_tiny(path):
    """A timm-style ViT-Tiny training checkpoint (``state_dict`` + ``module.``), as released files are."""
    import timm
    import torch

    torch.manual_seed(3)
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 300}, path)
    return path


class WeightsTask(FakeTask):
    """FakeTask scored from any backbone's first parameter (the fake one reads a ``conv``)."""

    def run(self, ctx):
        import torch

        total = float(next(ctx.backbone.parameters()).detach().sum())
        ctx.backbone.body.conv = torch.nn.Conv2d(1, 1, 1)  # FakeTask's scoring hook
        torch.nn.init.constant_(ctx.backbone.body.conv.weight, total)
        return super().run(ctx)


def test_preset_external_checkpoint_is_a_method_on_the_board(env):
    from saip_bench.bench.checkpoints import default_loader
    from saip_bench.leaderboard.tables import build_boards

    hooks, pretrainer, tmp = env
    published = _published_vit_tiny(tmp / "deit_tiny.pth")
    preset = BenchPreset.model_validate({
        "name": "ext", "methods": ["saip"], "backbones": ["tiny"], "seeds": [0], "synth_preset": "tiny",
        "tasks": ["reid/market1501"],
        "external": [{"name": "deit", "backbone": "vit_tiny", "checkpoint": str(published)}],
    })
    hooks.get_task = lambda name: WeightsTask()
    hooks.backbone_loader = lambda path, size: (
        default_loader(path, size) if path.suffix == ".safetensors" else fake_loader(path, size))
    report = run_bench(BenchConfig(preset=preset, run_dir=tmp / "run", cache_dir=tmp / "cache",
                                   show_progress=False), hooks)
    assert report.ok and len(report.written) == 2 and pretrainer.calls == [("saip", "tiny", 0)]
    records = {r.identity.method: r for r in load_records([tmp / "run"])}
    external = records["deit"].provenance["pretrain"]
    assert external["source"] == "external" and external["external"]["path"] == str(published.resolve())
    assert external["external"]["mapping"]["prefixes"] == ["module."] and external["weights_hash"]
    boards, _ = build_boards(list(records.values()))
    assert {"deit", "saip"} <= set(boards[0].summary["method"])


def test_external_entry_without_a_file_waits_for_checkpoint_in_the_plan(env, tmp_path):
    hooks, _, tmp = env
    preset = BenchPreset.model_validate({
        "name": "ext", "methods": ["saip"], "backbones": ["tiny"], "seeds": [0], "tasks": ["reid/market1501"],
        "external": [{"name": "supervised", "backbone": "vit_tiny", "checkpoint": None}],
    })
    waiting = BenchRunner(BenchConfig(preset=preset, run_dir=tmp / "run"), hooks).plan(resolve_inputs=False)
    status = {p.unit.method: (p.status, p.reason) for p in waiting}
    assert status["supervised"][0] == "unsupported"
    assert "--checkpoint supervised/vit_tiny=FILE" in status["supervised"][1]
    given = BenchConfig(preset=preset, run_dir=tmp / "run",
                        checkpoints={("supervised", "vit_tiny"): tmp_path / "deit.pth"})
    planned = BenchRunner(given, hooks).plan(resolve_inputs=False)
    assert {p.unit.method: p.status for p in planned}["supervised"] == "run"


def test_hap_waits_for_keypoints_in_the_plan_with_the_command(env, tmp_path, capsys):
    """Issue 24, item 3: a real pool without keypoints.json: HAP's units wait (not fail at pretraining),
    the plan names the command that makes them; with the file, or with a given HAP checkpoint, they run."""
    from saip_bench.cli import main

    hooks, _, tmp = env
    pool = tmp / "pool"
    (pool / "images" / "0001").mkdir(parents=True)
    preset = BenchPreset.model_validate({
        "name": "kp", "methods": ["saip", "hap"], "backbones": ["tiny"], "seeds": [0],
        "tasks": ["reid/market1501"], "data": "real"})
    plan = BenchRunner(BenchConfig(preset=preset, run_dir=tmp / "run", pretrain_data=pool),
                       hooks).plan(resolve_inputs=False)
    status = {p.unit.method: (p.status, p.reason) for p in plan}
    assert status["saip"] == ("run", "missing")
    assert status["hap"][0] == "unsupported" and status["hap"][1].startswith("waiting for keypoints")
    assert f"`saip-bench data keypoints {pool} --checkpoint POSE_MODEL`" in status["hap"][1]
    given = BenchConfig(preset=preset, run_dir=tmp / "run", pretrain_data=pool,
                        checkpoints={("hap", "tiny"): tmp / "hap.safetensors"})
    planned = BenchRunner(given, hooks).plan(resolve_inputs=False)
    assert {p.unit.method: p.status for p in planned}["hap"] == "run"
    (pool / "keypoints.json").write_text("{}")
    plan = BenchRunner(BenchConfig(preset=preset, run_dir=tmp / "run", pretrain_data=pool),
                       hooks).plan(resolve_inputs=False)
    assert {p.unit.method: p.status for p in plan}["hap"] == "run"
    # the paper preset's dry run, as a user sees it
    (pool / "keypoints.json").unlink()
    argv = ["bench", "--preset", "paper", "--dry-run", "--json", "--pretrain-data", str(pool),
            "--data-root", str(tmp / "data"), "--run-dir", str(tmp / "run2"), "--methods", "hap",
            "--backbones", "vit_tiny", "--tasks", "pose/coco"]
    assert main(argv) == 0
    (unit, *_) = json.loads(capsys.readouterr().out)
    assert unit["method"] == "hap" and unit["status"] == "unsupported"
    assert "saip-bench data keypoints" in unit["reason"]


def test_making_keypoints_leaves_every_other_methods_checkpoint_key_alone(env):
    """keypoints.json is HAP's input only: writing it (after SAIP and the rest were pretrained on the pool)
    changes HAP's checkpoint key and nobody else's; a changed keypoints file changes HAP's again."""
    hooks, _, tmp = env
    pool = tmp / "pool"
    (pool / "images" / "0001").mkdir(parents=True)
    (pool / "images" / "0001" / "a.jpg").write_bytes(b"x" * 10)
    preset = BenchPreset.model_validate({
        "name": "kp", "methods": ["saip", "mae", "hap"], "backbones": ["tiny"], "seeds": [0],
        "tasks": ["reid/market1501"], "data": "real"})

    def keys() -> dict[str, str]:
        runner = BenchRunner(BenchConfig(preset=preset, run_dir=tmp / "run", pretrain_data=pool), hooks)
        units = {p.unit.method: p.unit for p in runner.plan(resolve_inputs=False)}
        return {method: runner.checkpoint_key(unit) for method, unit in units.items()}

    before = keys()
    (pool / "keypoints.json").write_text('{"images/0001/a.jpg": []}')
    after = keys()
    assert after["saip"] == before["saip"] and after["mae"] == before["mae"]
    assert after["hap"] != before["hap"]
    (pool / "keypoints.json").write_text('{"images/0001/a.jpg": [ ]}')
    assert keys()["hap"] != after["hap"]


def test_quiet_hides_the_runners_messages_but_not_its_failures(env, capsys):
    """The runner's messages go through logging (issue 25): -q hides the plan and the summaries, never a
    failure."""
    from saip_bench import logs

    hooks, _, tmp = env
    run_bench(config(tmp), hooks)
    capsys.readouterr()
    run_bench(config(tmp), hooks)
    loud = capsys.readouterr()
    assert "nothing to run" in loud.out + loud.err and "saip" in loud.out + loud.err  # the plan table
    try:
        logs.set_verbosity(quiet=1)
        run_bench(config(tmp), hooks)
        quiet = capsys.readouterr()
        assert quiet.out + quiet.err == ""
        FakeTask.fail_on = {"crowdhuman"}
        run_bench(config(tmp, overwrite=OverwritePolicy.ALWAYS), hooks)
        failed = capsys.readouterr()
        assert "failed" in failed.err and "record(s) written" not in failed.out + failed.err
    finally:
        logs.set_verbosity()


def test_compile_reaches_the_units_and_their_records(env, monkeypatch):
    hooks, _, tmp = env
    seen = []
    real_run = FakeTask.run
    monkeypatch.setattr(FakeTask, "run", lambda self, ctx: seen.append(ctx.compile) or real_run(self, ctx))
    run_bench(config(tmp, compile=True), hooks)
    records = load_records([tmp / "run"])
    assert seen and all(seen) and all(r.provenance["speed"]["compile"] for r in records)
