"""Every ``saip-bench metric`` command checks its input before scoring (issue #27, item 1).

Each case: a malformed input ends in exit 2 with one line naming the file, the field and the first
offending index, never a traceback and never a score. The array/record-level functions the tasks call
(the bench path) raise the same ``DataFormatError``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saip_bench.cli import main
from saip_bench.errors import DataFormatError
from saip_bench.metrics.checks import check_ids
from tests.metrics import metric_inputs as mi


def run_metric(capsys, *argv: str) -> tuple[int, str, str]:
    """``saip-bench metric ...`` in-process; an exception other than the project's own propagates."""
    code = main(["metric", *argv, "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saip-bench: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def finite_scores(out: str) -> dict[str, float]:
    scores = json.loads(out)
    assert all(math.isfinite(v) for v in scores.values()), scores
    return scores


# -- COCO keypoints / whole-body ---------------------------------------------------------------------


def test_gt_keypoints_score_one_but_nan_keypoints_are_rejected(synth_world, tmp_path, capsys):
    gt = str(synth_world / mi.COCO_GT)
    results = mi.keypoint_results(synth_world)
    good = mi.write_json(tmp_path / "good.json", results)
    code, out, _ = run_metric(capsys, "coco-keypoints", "--gt", gt, "--pred", str(good))
    assert code == 0 and finite_scores(out)["AP"] == pytest.approx(1.0)

    nan = [{**r, "keypoints": [float("nan")] * 51} for r in results]
    bad = mi.write_json(tmp_path / "nan.json", nan)  # json writes NaN, which json.loads reads back
    code, out, err = run_metric(capsys, "coco-keypoints", "--gt", gt, "--pred", str(bad))
    assert out == ""
    assert_one_line_error(
        code, err, "nan.json", "keypoints", "entry 0", f"image_id {results[0]['image_id']}", "nan at index 0"
    )


def test_one_inf_keypoint_names_entry_and_index(synth_world, tmp_path, capsys):
    results = mi.keypoint_results(synth_world)
    results[3]["keypoints"][7] = float("inf")
    bad = mi.write_json(tmp_path / "inf.json", results)
    code, _, err = run_metric(
        capsys, "coco-keypoints", "--gt", str(synth_world / mi.COCO_GT), "--pred", str(bad)
    )
    assert_one_line_error(code, err, "inf.json", "keypoints", "entry 3", "inf at index 7")


def test_keypoint_values_that_are_not_numbers_are_rejected(synth_world, tmp_path, capsys):
    results = mi.keypoint_results(synth_world)
    results[2]["keypoints"][4] = "12"
    bad = mi.write_json(tmp_path / "str.json", results)
    code, _, err = run_metric(
        capsys, "coco-keypoints", "--gt", str(synth_world / mi.COCO_GT), "--pred", str(bad)
    )
    assert_one_line_error(code, err, "str.json", "keypoints", "entry 2", "index 4")


def test_nan_score_is_rejected(synth_world, tmp_path, capsys):
    results = mi.keypoint_results(synth_world)
    results[1]["score"] = float("nan")
    bad = mi.write_json(tmp_path / "score.json", results)
    code, _, err = run_metric(
        capsys, "coco-keypoints", "--gt", str(synth_world / mi.COCO_GT), "--pred", str(bad)
    )
    assert_one_line_error(code, err, "score.json", "score", "entry 1")


@pytest.mark.parametrize("field", ["score", "image_id"])
def test_integers_beyond_the_float_range_are_rejected(synth_world, tmp_path, capsys, field):
    results = mi.keypoint_results(synth_world)
    results[2][field] = -(10**4000)  # as a Python int it overflows floats; json.loads reads it as -inf
    bad = mi.write_json(tmp_path / "huge.json", results)
    code, _, err = run_metric(
        capsys, "coco-keypoints", "--gt", str(synth_world / mi.COCO_GT), "--pred", str(bad)
    )
    assert_one_line_error(code, err, "huge.json", field, "entry 2", "-inf")


def test_unknown_image_id_is_one_line_not_a_pycocotools_assertion(synth_world, tmp_path, capsys):
    results = mi.keypoint_results(synth_world)
    results[4]["image_id"] = 999999
    bad = mi.write_json(tmp_path / "ids.json", results)
    code, _, err = run_metric(
        capsys, "coco-keypoints", "--gt", str(synth_world / mi.COCO_GT), "--pred", str(bad)
    )
    assert_one_line_error(code, err, "ids.json", "image_id", "entry 4", "999999")


def test_unknown_category_id_is_rejected(synth_world, tmp_path, capsys):
    results = mi.keypoint_results(synth_world)
    results[0]["category_id"] = 7
    bad = mi.write_json(tmp_path / "cat.json", results)
    code, _, err = run_metric(
        capsys, "coco-keypoints", "--gt", str(synth_world / mi.COCO_GT), "--pred", str(bad)
    )
    assert_one_line_error(code, err, "cat.json", "category_id", "entry 0")


def test_bench_path_keypoint_function_rejects_nan(synth_world):
    from saip_bench.metrics.keypoints import coco_keypoint_ap

    results = mi.keypoint_results(synth_world)
    results[0]["keypoints"][2] = float("nan")
    with pytest.raises(DataFormatError, match="nan at index 2"):
        coco_keypoint_ap(synth_world / mi.COCO_GT, results)


def test_wholebody_nan_in_a_part_names_the_part(synth_world, tmp_path, capsys):
    results = mi.keypoint_results(synth_world, wholebody=True)
    results[1]["face_kpts"][10] = float("nan")
    bad = mi.write_json(tmp_path / "wb.json", results)
    code, _, err = run_metric(
        capsys, "wholebody", "--gt", str(synth_world / mi.WHOLEBODY_GT), "--pred", str(bad)
    )
    assert_one_line_error(code, err, "wb.json", "face_kpts", "entry 1", "nan at index 10")


@pytest.mark.parametrize("content", [b"", b'[{"image_id": 1, ', b"\xff\xfe\x00binary", b"[" * 100000])
def test_unreadable_keypoint_results_are_one_line(synth_world, tmp_path, capsys, content):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    code, _, err = run_metric(
        capsys, "coco-keypoints", "--gt", str(synth_world / mi.COCO_GT), "--pred", str(bad)
    )
    assert_one_line_error(code, err, "bad.json")


def test_keypoint_gt_with_nan_keypoints_is_rejected(synth_world, tmp_path, capsys):
    gt = json.loads((synth_world / mi.COCO_GT).read_text())
    gt["annotations"][2]["keypoints"][5] = float("nan")
    bad_gt = mi.write_json(tmp_path / "gt.json", gt)
    pred = mi.write_json(tmp_path / "pred.json", mi.keypoint_results(synth_world))
    code, _, err = run_metric(capsys, "coco-keypoints", "--gt", str(bad_gt), "--pred", str(pred))
    assert_one_line_error(code, err, "gt.json", "keypoints", "annotation 2", "nan at index 5")


# -- .npz inputs: file level -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["reid", "retrieval", "attributes"])
def test_zero_byte_npz_is_one_line_not_eoferror(tmp_path, capsys, command):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    code, _, err = run_metric(capsys, command, "--input", str(empty))
    assert_one_line_error(code, err, "empty.npz", "empty file")


@pytest.mark.parametrize("command", ["reid", "retrieval", "attributes"])
def test_text_file_as_npz_says_not_an_archive_not_allow_pickle(tmp_path, capsys, command):
    text = tmp_path / "text.npz"
    text.write_text("probs,labels\n0.1,1\n")
    code, _, err = run_metric(capsys, command, "--input", str(text))
    assert_one_line_error(code, err, "text.npz", "not a zip")
    assert "pickle" not in err


def test_single_npy_array_instead_of_npz(tmp_path, capsys):
    path = tmp_path / "one.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros((2, 2)))
    code, _, err = run_metric(capsys, "reid", "--input", str(path))
    assert_one_line_error(code, err, "one.npz", ".npy")


def test_truncated_npz_is_one_line(tmp_path, capsys):
    path = tmp_path / "cut.npz"
    np.savez_compressed(path, **mi.attribute_arrays())
    path.write_bytes(path.read_bytes()[:-40])
    code, _, err = run_metric(capsys, "attributes", "--input", str(path))
    assert_one_line_error(code, err, "cut.npz")


def test_object_array_in_npz_names_the_key(tmp_path, capsys):
    arrays = mi.attribute_arrays()
    arrays["probs"] = np.array([[0.1, None]] * 8, dtype=object)
    path = tmp_path / "obj.npz"
    np.savez(path, **arrays)
    code, _, err = run_metric(capsys, "attributes", "--input", str(path))
    assert_one_line_error(code, err, "obj.npz", "probs")
    assert "allow_pickle" not in err


# -- ReID / retrieval ----------------------------------------------------------------------------


def test_all_inf_distance_matrix_is_rejected(tmp_path, capsys):
    arrays = mi.reid_arrays()
    arrays["distmat"] = np.full_like(arrays["distmat"], np.inf)
    path = tmp_path / "inf.npz"
    np.savez(path, **arrays)
    code, out, err = run_metric(capsys, "reid", "--input", str(path))
    assert out == ""
    assert_one_line_error(code, err, "inf.npz", "distmat", "inf at index (0, 0)")


def test_one_inf_distance_names_its_row_and_column(tmp_path, capsys):
    arrays = mi.reid_arrays()
    arrays["distmat"][2, 5] = -np.inf
    path = tmp_path / "one_inf.npz"
    np.savez(path, **arrays)
    code, _, err = run_metric(capsys, "reid", "--input", str(path))
    assert_one_line_error(code, err, "one_inf.npz", "distmat", "-inf at index (2, 5)")


def test_bench_path_reid_features_reject_inf():
    from saip_bench.metrics.reid import evaluate_reid_features

    arrays = mi.reid_feature_arrays()
    arrays["g_feats"][3, 1] = np.inf
    with pytest.raises(DataFormatError, match=r"g_feats.*inf at index \(3, 1\)"):
        evaluate_reid_features(**arrays)


def test_inf_similarity_is_rejected(tmp_path, capsys):
    arrays = mi.retrieval_arrays()
    arrays["similarity"][1, 2] = np.inf
    path = tmp_path / "sim.npz"
    np.savez(path, **arrays)
    code, _, err = run_metric(capsys, "retrieval", "--input", str(path))
    assert_one_line_error(code, err, "sim.npz", "similarity", "inf at index (1, 2)")


def test_fractional_or_huge_float_ids_are_rejected(tmp_path, capsys):
    arrays = mi.reid_arrays()
    arrays["g_pids"] = arrays["g_pids"].astype(float)
    arrays["g_pids"][4] = 1e30
    path = tmp_path / "ids.npz"
    np.savez(path, **arrays)
    code, _, err = run_metric(capsys, "reid", "--input", str(path))
    assert_one_line_error(code, err, "ids.npz", "g_pids", "index 4")



def test_half_precision_whole_ids_are_accepted_without_a_warning():
    """float16 ids (an npz saved from a half-precision pipeline): the bound check once cast 2**53 to
    float16 and numpy warned about the overflow on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids = check_ids(np.array([0.0, 3.0, 2047.0], dtype=np.float16), "ids.npz", "g_pids")
    assert ids.dtype == np.int64 and ids.tolist() == [0, 3, 2047]
    with pytest.raises(DataFormatError, match="index 1"):
        check_ids(np.array([0.0, 1.5], dtype=np.float16), "ids.npz", "g_pids")

# -- attributes ----------------------------------------------------------------------------------


def test_logits_outside_unit_interval_are_rejected_with_a_hint(tmp_path, capsys):
    arrays = mi.attribute_arrays()
    arrays["probs"] = np.array([[3.0, -2.0, 0.5, 0.5, 0.5]] + [[0.7, 0.2, 0.5, 0.5, 0.5]] * 7)
    path = tmp_path / "logits.npz"
    np.savez(path, **arrays)
    code, out, err = run_metric(capsys, "attributes", "--input", str(path))
    assert out == ""
    assert_one_line_error(code, err, "logits.npz", "probs", "[0, 1]", "3.0 at index (0, 0)", "--logits")


def test_logits_flag_applies_a_sigmoid(tmp_path, capsys):
    from saip_bench.metrics.attributes import evaluate_attributes

    arrays = mi.attribute_arrays()
    logits = np.random.default_rng(1).normal(0, 3, arrays["probs"].shape)
    path = tmp_path / "logits.npz"
    np.savez(path, **{**arrays, "probs": logits})
    code, out, _ = run_metric(capsys, "attributes", "--input", str(path), "--logits")
    assert code == 0
    expected = evaluate_attributes(1 / (1 + np.exp(-logits)), arrays["labels"], arrays["eval_idx"])
    assert finite_scores(out) == pytest.approx(expected)


def test_nan_probability_names_its_index(tmp_path, capsys):
    arrays = mi.attribute_arrays()
    arrays["probs"][5, 3] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, **arrays)
    code, _, err = run_metric(capsys, "attributes", "--input", str(path), "--logits")
    assert_one_line_error(code, err, "nan.npz", "probs", "nan at index (5, 3)")


def test_string_probabilities_are_rejected(tmp_path, capsys):
    arrays = mi.attribute_arrays()
    arrays["probs"] = arrays["probs"].astype(str)
    path = tmp_path / "str.npz"
    np.savez(path, **arrays)
    code, _, err = run_metric(capsys, "attributes", "--input", str(path))
    assert_one_line_error(code, err, "str.npz", "probs", "dtype")


# -- CrowdHuman ------------------------------------------------------------------------------------


def test_crowdhuman_nan_box_is_rejected(synth_world, tmp_path, capsys):
    results = mi.crowdhuman_results(synth_world)
    results[1]["dtboxes"][2]["box"][3] = float("nan")
    pred = mi.write_odgt(tmp_path / "nan.odgt", results)
    code, out, err = run_metric(
        capsys, "crowdhuman", "--gt", str(synth_world / mi.CROWDHUMAN_GT), "--pred", str(pred)
    )
    assert out == ""
    assert_one_line_error(code, err, "nan.odgt:2", "box", "dtboxes[2]", "nan at index 3")


def test_crowdhuman_nan_score_is_rejected(synth_world, tmp_path, capsys):
    results = mi.crowdhuman_results(synth_world)
    results[0]["dtboxes"][1]["score"] = float("nan")
    pred = mi.write_odgt(tmp_path / "score.odgt", results)
    code, _, err = run_metric(
        capsys, "crowdhuman", "--gt", str(synth_world / mi.CROWDHUMAN_GT), "--pred", str(pred)
    )
    assert_one_line_error(code, err, "score.odgt:1", "score", "dtboxes[1]")


@pytest.mark.parametrize(
    "field,value", [("height", float("inf")), ("width", "wide"), ("dtboxes", 5), ("height", -3)]
)
def test_crowdhuman_bad_record_fields(synth_world, tmp_path, capsys, field, value):
    results = mi.crowdhuman_results(synth_world)
    results[2][field] = value
    pred = mi.write_odgt(tmp_path / "rec.odgt", results)
    code, _, err = run_metric(
        capsys, "crowdhuman", "--gt", str(synth_world / mi.CROWDHUMAN_GT), "--pred", str(pred)
    )
    assert_one_line_error(code, err, "rec.odgt:3", field)


def test_crowdhuman_binary_file_is_one_line(synth_world, tmp_path, capsys):
    pred = tmp_path / "bin.odgt"
    pred.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    code, _, err = run_metric(
        capsys, "crowdhuman", "--gt", str(synth_world / mi.CROWDHUMAN_GT), "--pred", str(pred)
    )
    assert_one_line_error(code, err, "bin.odgt")


def test_crowdhuman_gt_box_not_a_dict(synth_world, tmp_path, capsys):
    lines = (synth_world / mi.CROWDHUMAN_GT).read_text().splitlines()
    record = json.loads(lines[0])
    record["gtboxes"][0] = [1, 2, 3, 4]
    lines[0] = json.dumps(record)
    gt = tmp_path / "gt.odgt"
    gt.write_text("\n".join(lines) + "\n")
    pred = mi.write_odgt(tmp_path / "pred.odgt", mi.crowdhuman_results(synth_world))
    code, _, err = run_metric(capsys, "crowdhuman", "--gt", str(gt), "--pred", str(pred))
    assert_one_line_error(code, err, "gt.odgt:1", "gtboxes[0]")


def test_bench_path_crowdhuman_evaluate_rejects_nan(synth_world):
    from saip_bench.metrics.crowdhuman import evaluate, read_odgt

    results = mi.crowdhuman_results(synth_world)
    results[0]["dtboxes"][0]["box"][0] = float("nan")
    with pytest.raises(DataFormatError, match="nan at index 0"):
        evaluate(read_odgt(synth_world / mi.CROWDHUMAN_GT), results)


# -- parsing / CIHP --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "100000"])
def test_parsing_num_classes_out_of_range(synth_world, capsys, value):
    gt = str(synth_world / mi.LIP_GT)
    code, _, err = run_metric(capsys, "parsing", "--gt-dir", gt, "--pred-dir", gt, "--num-classes", value)
    assert_one_line_error(code, err, "--num-classes")


def test_parsing_truncated_png_is_one_line(synth_world, tmp_path, capsys):
    pred = mi.copy_dir(synth_world / mi.LIP_GT, tmp_path / "pred")
    victim = sorted(pred.glob("*.png"))[1]
    victim.write_bytes(victim.read_bytes()[:60])
    code, _, err = run_metric(
        capsys,
        "parsing",
        "--gt-dir",
        str(synth_world / mi.LIP_GT),
        "--pred-dir",
        str(pred),
        "--num-classes",
        "20",
    )
    assert_one_line_error(code, err, victim.name)


def test_parsing_out_of_range_class_names_the_pixel(synth_world, tmp_path, capsys):
    pred = mi.copy_dir(synth_world / mi.LIP_GT, tmp_path / "pred")
    victim = sorted(pred.glob("*.png"))[0]
    labels = np.array(Image.open(victim))
    labels[3, 4] = 42
    Image.fromarray(labels).save(victim)
    code, _, err = run_metric(
        capsys,
        "parsing",
        "--gt-dir",
        str(synth_world / mi.LIP_GT),
        "--pred-dir",
        str(pred),
        "--num-classes",
        "20",
    )
    assert_one_line_error(code, err, victim.name, "42", "(3, 4)")


def cihp_args(world: Path, pred_instances: Path) -> list[str]:
    return [
        "--gt-instances",
        str(world / mi.CIHP_INSTANCES),
        "--gt-categories",
        str(world / mi.CIHP_CATEGORIES),
        "--pred-instances",
        str(pred_instances),
    ]


def test_cihp_nan_instance_score_is_rejected(synth_world, tmp_path, capsys):
    pred = mi.cihp_instance_predictions(synth_world, tmp_path / "inst")
    txt = sorted(pred.glob("*.txt"))[0]
    lines = txt.read_text().splitlines()
    lines[1] = lines[1].split()[0] + " nan"
    txt.write_text("\n".join(lines) + "\n")
    code, out, err = run_metric(capsys, "cihp", *cihp_args(synth_world, pred))
    assert out == ""
    assert_one_line_error(code, err, f"{txt.name}:2", "score", "nan")


def test_cihp_unknown_class_is_rejected(synth_world, tmp_path, capsys):
    pred = mi.cihp_instance_predictions(synth_world, tmp_path / "inst")
    txt = sorted(pred.glob("*.txt"))[0]
    lines = txt.read_text().splitlines()
    lines[0] = "57 " + lines[0].split()[1]
    txt.write_text("\n".join(lines) + "\n")
    code, _, err = run_metric(capsys, "cihp", *cihp_args(synth_world, pred))
    assert_one_line_error(code, err, f"{txt.name}:1", "class", "57")


def test_cihp_binary_txt_is_one_line(synth_world, tmp_path, capsys):
    pred = mi.cihp_instance_predictions(synth_world, tmp_path / "inst")
    txt = sorted(pred.glob("*.txt"))[0]
    txt.write_bytes(b"\xff\xfe\x00\x01")
    code, _, err = run_metric(capsys, "cihp", *cihp_args(synth_world, pred))
    assert_one_line_error(code, err, txt.name)


# -- Fashionpedia ---------------------------------------------------------------------------------


def fashion_run(capsys, world: Path, results, tmp_path: Path, iou_type: str = "bbox"):
    pred = mi.write_json(tmp_path / "fp.json", results)
    return run_metric(
        capsys,
        "fashionpedia",
        "--gt",
        str(world / mi.FASHIONPEDIA_GT),
        "--pred",
        str(pred),
        "--iou-type",
        iou_type,
    )


def test_fashionpedia_nan_box_and_score(synth_world, tmp_path, capsys):
    results = mi.fashionpedia_results(synth_world)
    results[3]["bbox"][2] = float("nan")
    code, out, err = fashion_run(capsys, synth_world, results, tmp_path)
    assert out == ""
    assert_one_line_error(code, err, "fp.json", "bbox", "entry 3", "nan at index 2")
    results = mi.fashionpedia_results(synth_world)
    results[5]["score"] = float("inf")
    code, _, err = fashion_run(capsys, synth_world, results, tmp_path)
    assert_one_line_error(code, err, "fp.json", "score", "entry 5")


def test_fashionpedia_unknown_category_and_unhashable_image_id(synth_world, tmp_path, capsys):
    results = mi.fashionpedia_results(synth_world)
    results[2]["category_id"] = 1000
    code, _, err = fashion_run(capsys, synth_world, results, tmp_path)
    assert_one_line_error(code, err, "fp.json", "category_id", "entry 2")
    results = mi.fashionpedia_results(synth_world)
    results[1]["image_id"] = [1]
    code, _, err = fashion_run(capsys, synth_world, results, tmp_path)
    assert_one_line_error(code, err, "fp.json", "image_id", "entry 1")


@pytest.mark.parametrize("counts", ["", "zzzz", "0", "\u00e9\u00e9", "PPPPPPPPPPPPP"])
def test_fashionpedia_malformed_rle_is_rejected_before_pycocotools(synth_world, tmp_path, capsys, counts):
    """pycocotools' C decoder reads past the string or writes past the mask on such counts."""
    results = mi.fashionpedia_results(synth_world)
    results[4]["segmentation"]["counts"] = counts
    del results[4]["bbox"]
    for item in results:
        item.pop("bbox", None)
    code, _, err = fashion_run(capsys, synth_world, results, tmp_path, "segm")
    assert_one_line_error(code, err, "fp.json", "segmentation", "entry 4")


def test_fashionpedia_rle_of_the_wrong_size_is_rejected(synth_world, tmp_path, capsys):
    results = mi.fashionpedia_results(synth_world)
    for item in results:
        item.pop("bbox")
    results[0]["segmentation"]["size"] = [10, 10]
    code, _, err = fashion_run(capsys, synth_world, results, tmp_path, "segm")
    assert_one_line_error(code, err, "fp.json", "segmentation", "entry 0", "size")


def test_fashionpedia_unknown_attribute_names_the_entry(synth_world, tmp_path, capsys):
    results = mi.fashionpedia_results(synth_world)
    results[6]["attribute_ids"] = [99999]
    code, _, err = fashion_run(capsys, synth_world, results, tmp_path)
    assert_one_line_error(code, err, "fp.json", "attribute_ids", "entry 6", "99999")


def test_real_process_prints_one_line_and_no_traceback(tmp_path):
    """The same through ``python -m saip_bench.cli``: what a user sees on a 0-byte file."""
    import subprocess
    import sys

    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "saip_bench.cli", "metric", "reid", "--input", str(empty)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"saip-bench: error: {empty}: expected an .npz archive with arrays "
        "['q_pids', 'g_pids', 'q_camids', 'g_camids'], found an empty file (0 bytes)"
    ]
