import pickle

import numpy as np
import pytest
import scipy.io

from saip_bench.data.readers import read_dataset, verify_dataset
from saip_bench.data.readers.par import PETA_GROUP_ORDER, RestrictedUnpickler, load_rethinking_pickle
from saip_bench.errors import DataFormatError
from tests.data.readers.builders import PA100K_NAMES, build_pa100k, build_peta, pa100k_variables


def test_real_peta_mat_values(peta_mat):
    data = read_dataset("peta", peta_mat.parent)
    raw = scipy.io.loadmat(str(peta_mat))["peta"][0][0]
    assert len(data.meta["attribute_names"]) == 105
    assert data.meta["attribute_names"][:2] == ["personalLess30", "personalLess45"]
    assert data.meta["eval_idx"] == list(range(35))
    assert data.meta["group_order"] == list(PETA_GROUP_ORDER)
    assert {k: len(v) for k, v in data.splits.items()} == {
        "train": 9500,
        "val": 1900,
        "test": 7600,
        "trainval": 11400,
    }
    # partition 0, 1-based in the file -> 0-based rows; labels = data[:, 4:]
    train_1based = raw[3][0][0][0][0][0][:, 0]
    assert train_1based[0] == 13183
    first = data.splits["train"][0]
    assert first["path"].endswith("images/13183.png")
    assert first["labels"] == raw[0][13182, 4:].astype(int).tolist()
    assert first["identity"] == int(raw[0][13182, 1])
    assert data.splits["trainval"][:9500] == data.splits["train"]


@pytest.fixture(scope="module")
def peta_root(tmp_path_factory, peta_mat):
    """The real PETA.mat with 19,000 tiny images (built once; zs tests overwrite the pickle)."""
    return build_peta(tmp_path_factory.mktemp("peta"), peta_mat).parent


def test_peta_verify_with_images_matches_the_card(peta_root):
    report = verify_dataset("peta", peta_root)
    assert report.usable, report.problems
    assert report.version == "peta" and not report.synthetic
    assert report.splits["train"] == {"images": 9500}
    assert report.files_checked == 24


def test_pa100k_reads_cells_and_labels(tmp_path):
    variables = pa100k_variables()
    variables["train_label"][0, :3] = [2, 1, 0]  # 2 = uncertain -> 0
    build_pa100k(tmp_path, variables)
    data = read_dataset("pa100k", tmp_path)
    assert data.meta["attribute_names"] == list(PA100K_NAMES)
    assert data.meta["eval_idx"] == list(range(26))
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 4, "val": 2, "test": 2}
    first = data.splits["train"][0]
    assert first["path"].endswith("data/000001.jpg") and first["labels"][:3] == [0, 1, 0]
    assert data.splits["test"][-1]["labels"] == variables["test_label"][-1].tolist()
    assert data.splits["val"][0]["path"].endswith("000005.jpg")


def test_pa100k_stray_variable_is_a_warning_and_wrong_variable_an_error(tmp_path):
    variables = pa100k_variables()
    variables["text_images_name"] = variables["test_images_name"]
    build_pa100k(tmp_path, variables)
    assert any("text_images_name" in w for w in read_dataset("pa100k", tmp_path).meta["warnings"])
    variables.pop("test_images_name")
    build_pa100k(tmp_path, variables)
    with pytest.raises(
        DataFormatError, match=r"annotation\.mat: expected a variable 'test_images_name'.*text_images"
    ):
        read_dataset("pa100k", tmp_path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train_label": np.full((4, 26), 3, dtype=np.uint8)}, "values 0/1"),
        ({"train_label": np.zeros((4, 25), dtype=np.uint8)}, "26 attribute columns"),
        ({"val_label": np.zeros((3, 26), dtype=np.uint8)}, "one row per image"),
        ({"attributes": np.zeros((26, 1))}, "cell of non-empty strings"),
    ],
)
def test_pa100k_bad_variables(tmp_path, change, expected):
    variables = pa100k_variables()
    variables.update(change)
    build_pa100k(tmp_path, variables)
    with pytest.raises(DataFormatError, match=expected):
        read_dataset("pa100k", tmp_path)


def test_not_a_mat_file(tmp_path):
    build_pa100k(tmp_path)
    (tmp_path / "annotation.mat").write_bytes(b"MATLAB 7.3 MAT-file, this is not really one" + bytes(100))
    with pytest.raises(DataFormatError, match=r"annotation\.mat"):
        read_dataset("pa100k", tmp_path)


def test_peta_misspelled_partition_field_is_required(tmp_path, peta_mat):
    mat = scipy.io.loadmat(str(peta_mat))
    struct = mat["peta"][0][0]
    fields = {name: struct[name] for name in ("data", "attribute", "selected_attribute")}
    scipy.io.savemat(str(tmp_path / "PETA.mat"), {"peta": fields})
    (tmp_path / "images").mkdir()
    with pytest.raises(DataFormatError, match="partion_attribute"):
        read_dataset("peta", tmp_path)


def _zs_pickle(path, protocol=4, partition=None):
    """A PETAzs-like pickle that references easydict.EasyDict, written without easydict installed."""
    import sys
    import types

    module = types.ModuleType("easydict")

    class EasyDict(dict):
        def __init__(self, d=None):
            super().__init__()
            for k, v in (d or {}).items():
                self[k] = v
                setattr(self, k, v)

    EasyDict.__module__ = "easydict"
    EasyDict.__qualname__ = "EasyDict"
    module.EasyDict = EasyDict
    sys.modules["easydict"] = module
    try:
        labels = np.zeros((10, 35), dtype=np.int64)
        labels[:, 0] = 1
        labels[0, 1] = 2
        data = EasyDict(
            {
                "description": "peta",
                "root": "/x",
                "image_name": [f"{i:05d}.png" for i in range(1, 11)],
                "label": labels,
                "attr_name": [f"a{i}" for i in range(35)],
                "partition": EasyDict(
                    partition
                    or {
                        "train": np.arange(0, 5),
                        "val": np.arange(5, 7),
                        "trainval": np.arange(0, 7),
                        "test": np.arange(7, 10),
                    }
                ),
                "weight_train": np.full(35, 0.5),
            }
        )
        path.write_bytes(pickle.dumps(data, protocol=protocol))
    finally:
        del sys.modules["easydict"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_petazs_pickle_without_easydict(peta_root, peta_mat, protocol):
    tmp_path = peta_root
    _zs_pickle(tmp_path / "dataset_zs_run0.pkl", protocol=protocol)
    data = read_dataset("peta", tmp_path, version="zs")
    assert data.version == "zs"
    assert data.meta["eval_idx"] == list(range(35))  # no label_idx: all stored attributes
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 5, "val": 2, "trainval": 7, "test": 3}
    assert data.splits["train"][0]["labels"][:2] == [1, 0]  # 2 -> 0
    assert data.splits["test"][0]["path"].endswith("images/00008.png")
    assert data.splits["test"][0]["identity"] == int(scipy.io.loadmat(str(peta_mat))["peta"][0][0][0][7, 1])
    report = verify_dataset("peta", tmp_path)
    assert report.available_versions == ["peta", "zs"] and report.version == "peta"


def test_petazs_identity_overlap_is_a_problem(peta_root):
    tmp_path = peta_root
    _zs_pickle(tmp_path / "dataset_zs_run0.pkl")
    assert verify_dataset("peta", tmp_path, version="zs").usable  # rows 0-6 vs 7-9: identities 95-96 vs 97
    # rows 2 (identity 95) and 5 (identity 96) in test, their other images in trainval
    partition = {
        "train": np.array([0, 1]),
        "val": np.array([3, 4]),
        "trainval": np.array([0, 1, 3, 4]),
        "test": np.array([2, 5]),
    }
    _zs_pickle(tmp_path / "dataset_zs_run0.pkl", partition=partition)
    report = verify_dataset("peta", tmp_path, version="zs")
    assert [p for p in report.problems if "identity-disjoint" in p] == [
        "PETAzs must be identity-disjoint, but trainval and test share 2 identities (e.g. [95, 96], "
        "PETA.mat column 1)"
    ]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    path = tmp_path / "dataset_zs_run0.pkl"
    path.write_bytes(pickle.dumps({"image_name": _Evil()}))
    with pytest.raises(DataFormatError, match="builtins.print is not allowed"):
        load_rethinking_pickle(path)
    path.write_bytes(pickle.dumps({"a": np.arange(3)}, protocol=2))
    assert RestrictedUnpickler(path.open("rb")).load()["a"].tolist() == [0, 1, 2]
