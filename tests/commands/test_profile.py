import json

from saip_bench.cli import main


def test_profile_json_and_record(tmp_path, capsys):
    code = main(["profile", "--backbone", "starnet_s3", "--img-size", "64x32", "--batch", "1",
                 "--engines", "eager", "--warmup", "0", "--repeats", "2", "--no-memory", "--json",
                 "--record-dir", str(tmp_path)])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "starnet_s3" and data["img_size"] == [64, 32]
    assert "1" in data["latency"]["eager"]
    record = json.loads((tmp_path / "profile__starnet_s3__64x32.json").read_text())
    assert record["identity"]["task"] == "profile"


def test_profile_unknown_backbone_is_one_line_error(capsys):
    assert main(["profile", "--backbone", "resnet9000"]) == 2
    assert "unknown backbone 'resnet9000'" in capsys.readouterr().err


def test_export_onnx_writes_checked_file(tmp_path, capsys):
    out = tmp_path / "vit.onnx"
    assert main(["export", "--backbone", "vit_tiny", "--img-size", "64x32", "--onnx", "--out", str(out)]) == 0
    assert out.stat().st_size > 1_000_000
    assert "max |diff|" in capsys.readouterr().out
