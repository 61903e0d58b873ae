"""Pedestrian attributes: PA-100K (``annotation.mat``) and PETA / PETAzs (docs/formats.md#pa-100k,
#peta-and-petazs).

Records are ``{path, labels}`` with labels over *all* stored attributes (uncertain ``2`` -> ``0``, as
Rethinking_of_PAR does); ``meta['eval_idx']`` says which columns are scored: PA-100K all 26, PETA the
35 of ``selected_attribute`` (indices 0-34; ``meta['group_order']`` is Rethinking's reporting order),
PETAzs all 35 stored. PETA partitions are 1-based in the ``.mat`` (field spelled ``partion_attribute``)
and converted to 0-based rows; the PETAzs pickle is read without easydict by a restricted unpickler.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from saip_bench.data.readers.base import DatasetReader, ReadContext, join_path, make_splits, require_file
from saip_bench.data.records import AttributeRecord, DatasetSplits
from saip_bench.data.vocab import PA100K_ATTRIBUTES, PETA_GROUP_ORDER
from saip_bench.errors import DataFormatError

# Rethinking_of_PAR's reporting order (does not change mA).
PA100K_GROUP_ORDER = (
    7,
    8,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    9,
    10,
    11,
    12,
    1,
    2,
    3,
    0,
    4,
    5,
    6,
)
PA100K_SPLITS = ("train", "val", "test")
PA100K_VARIABLES = (
    "attributes",
    *(f"{s}_{kind}" for s in PA100K_SPLITS for kind in ("images_name", "label")),
)

PETA_LABEL_START = 4  # data columns: image index, identity, sub-dataset, identity within it, 105 labels
PETA_PARTITION_FIELD = "partion_attribute"  # sic, as in the official file
PETA_ZS_PICKLE = "dataset_zs_run0.pkl"


def load_mat(path: Path) -> dict[str, Any]:
    """scipy ``loadmat`` with every failure turned into a DataFormatError naming the file."""
    import scipy.io

    require_file(path, "a MATLAB .mat file")
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # v7.3 = HDF5
        raise DataFormatError(
            path, "a MATLAB v5 .mat file", "a v7.3 (HDF5) file: re-save it with -v7"
        ) from exc
    except Exception as exc:  # scipy raises many types (MatReadError, ValueError, ...) on a corrupt file
        raise DataFormatError(path, "a readable MATLAB v5 .mat file", f"{type(exc).__name__}: {exc}") from exc


def _variable(mat: dict[str, Any], name: str, path: Path) -> Any:
    if name not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataFormatError(path, f"a variable {name!r}", f"variables {found}")
    return mat[name]


def cell_strings(value: Any, path: Path, what: str) -> list[str]:
    """An N x 1 cell of strings (accessed ``[i][0][0]`` in the reference code) as a list of str."""
    if not isinstance(value, np.ndarray) or value.ndim != 2 or 1 not in value.shape:
        raise DataFormatError(path, f"{what} as an N x 1 cell of strings", _describe(value))
    out = []
    for item in value.reshape(-1):
        inner = item
        while isinstance(inner, np.ndarray) and inner.size == 1 and inner.dtype == object:
            inner = inner.reshape(-1)[0]
        if isinstance(inner, np.ndarray) and inner.dtype.kind == "U" and inner.size == 1:
            inner = inner.reshape(-1)[0]
        if not isinstance(inner, str) or not inner:
            raise DataFormatError(path, f"{what} as a cell of non-empty strings", _describe(item))
        out.append(str(inner))
    return out


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def binary_labels(value: Any, path: Path, what: str, columns: int | None = None) -> np.ndarray:
    """An N x A label matrix of 0/1 (2 = uncertain -> 0, as Rethinking_of_PAR); anything else refused."""
    if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind not in "uifb":
        raise DataFormatError(path, f"{what} as a numeric N x A matrix", _describe(value))
    if columns is not None and value.shape[1] != columns:
        raise DataFormatError(path, f"{what} with {columns} attribute columns", f"{value.shape[1]}")
    labels = np.asarray(value)
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise DataFormatError(path, f"{what} with values 0/1 (2 = uncertain)", "NaN or infinite values")
    bad = np.setdiff1d(np.unique(labels), [0, 1, 2])
    if bad.size:
        raise DataFormatError(path, f"{what} with values 0/1 (2 = uncertain)", f"values {bad[:10].tolist()}")
    labels = labels.astype(np.int64)
    labels[labels == 2] = 0
    return labels


class PA100KReader(DatasetReader):
    name = "pa100k"
    wrapper_dirs = ("PA100k", "PA-100K", "pa100k")

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        path = root / "annotation.mat"
        mat = load_mat(path)
        names = cell_strings(_variable(mat, "attributes", path), path, "'attributes'")
        stray = sorted(k for k in mat if not k.startswith("__") and k not in PA100K_VARIABLES)
        if stray:
            context.warnings.append(f"{path}: stray variables {stray} ignored (hand-edited copy?)")
        image_dir = root / "data"
        splits: dict[str, list[AttributeRecord]] = {}
        for split in PA100K_SPLITS:
            files = cell_strings(_variable(mat, f"{split}_images_name", path), path, f"'{split}_images_name'")
            labels = binary_labels(
                _variable(mat, f"{split}_label", path), path, f"'{split}_label'", len(names)
            )
            if labels.shape[0] != len(files):
                raise DataFormatError(
                    path,
                    f"'{split}_label' with one row per image of '{split}_images_name' ({len(files)})",
                    f"{labels.shape[0]} rows",
                )
            splits[split] = [
                {"path": join_path(image_dir, name), "labels": row.tolist()}
                for name, row in zip(files, labels, strict=True)
            ]
        meta = {
            "attribute_names": names,
            "eval_idx": list(range(len(names))),
            "group_order": list(PA100K_GROUP_ORDER) if len(names) == len(PA100K_ATTRIBUTES) else None,
            "annotation_file": str(path),
        }
        if names != list(PA100K_ATTRIBUTES):
            context.warnings.append(f"{path}: attribute names differ from the official 26 (FORMATS §5)")
        return make_splits(self.name, version, root, splits, meta)

    def dataset_counts(self, data: DatasetSplits) -> dict[str, int]:
        return {"attributes": len(data.meta["attribute_names"])}


# --------------------------------------------------------------------------------------------- PETA


def _struct_field(struct: Any, name: str, path: Path, alternatives: tuple[str, ...] = ()) -> Any:
    dtype_names = getattr(getattr(struct, "dtype", None), "names", None) or ()
    for candidate in (name, *alternatives):
        if candidate in dtype_names:
            return struct[candidate]
    raise DataFormatError(path, f"a struct field {name!r}", f"fields {list(dtype_names)}")


def _partition_indices(value: Any, path: Path, what: str, rows: int) -> np.ndarray:
    """1-based row indices (MATLAB) -> 0-based, range-checked."""
    array = value
    while isinstance(array, np.ndarray) and array.dtype == object and array.size == 1:
        array = array.reshape(-1)[0]
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "uif" or array.size == 0:
        raise DataFormatError(path, f"{what} as a list of 1-based indices", _describe(array))
    indices = np.asarray(array).reshape(-1)
    if indices.dtype.kind == "f" and not np.all(indices == np.round(indices)):
        raise DataFormatError(path, f"{what} as integer indices", "fractional values")
    indices = indices.astype(np.int64)
    if indices.min() < 1 or indices.max() > rows:
        raise DataFormatError(
            path, f"{what} as 1-based indices in 1..{rows}", f"range {indices.min()}..{indices.max()}"
        )
    return indices - 1


def read_peta_mat(path: Path, partition: int = 0) -> dict[str, Any]:
    """The parsed PETA.mat: labels (N x 105), names, selected (0-based), identities, 0-based partitions."""
    mat = load_mat(path)
    peta = _variable(mat, "peta", path)
    if not isinstance(peta, np.ndarray) or peta.dtype.names is None or peta.size < 1:
        raise DataFormatError(path, "'peta' as a 1x1 struct", _describe(peta))
    struct = peta.reshape(-1)[0]
    data = _struct_field(struct, "data", path)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] <= PETA_LABEL_START:
        raise DataFormatError(path, "peta.data as an N x 109 matrix", _describe(data))
    if data.dtype.kind not in "uif":
        raise DataFormatError(path, "peta.data as a numeric matrix", _describe(data))
    names = cell_strings(_struct_field(struct, "attribute", path), path, "peta.attribute")
    rows = data.shape[0]
    if data.shape[1] - PETA_LABEL_START != len(names):
        raise DataFormatError(
            path,
            f"peta.data with {PETA_LABEL_START} id columns + one per attribute ({len(names)})",
            f"{data.shape[1]} columns",
        )
    labels = binary_labels(data[:, PETA_LABEL_START:], path, "peta.data[:, 4:]")
    image_index = data[:, 0].astype(np.int64)
    if not np.array_equal(image_index, np.arange(1, rows + 1)):
        raise DataFormatError(path, "peta.data column 0 = image index 1..N in row order", "another order")
    selected = np.asarray(_struct_field(struct, "selected_attribute", path)).reshape(-1)
    if selected.dtype.kind not in "uif" or not np.all(np.isfinite(selected)):
        raise DataFormatError(
            path, "peta.selected_attribute as numeric 1-based data columns", _describe(selected)
        )
    selected = selected.astype(np.int64)
    eval_idx = selected - (PETA_LABEL_START + 1)  # 1-based data columns 5..39 -> attributes 0..34
    if selected.size == 0 or eval_idx.min() < 0 or eval_idx.max() >= len(names):
        raise DataFormatError(path, "peta.selected_attribute as 1-based data columns 5..", str(selected[:5]))
    partitions = _struct_field(struct, PETA_PARTITION_FIELD, path, ("partition_attribute",))
    partitions = np.asarray(partitions).reshape(-1)
    if not 0 <= partition < partitions.size:
        raise DataFormatError(
            path, f"at least {partition + 1} partitions in peta.{PETA_PARTITION_FIELD}", str(partitions.size)
        )
    chosen = partitions[partition]
    while isinstance(chosen, np.ndarray) and chosen.dtype.names is None and chosen.size == 1:
        chosen = chosen.reshape(-1)[0]
    split_idx = {
        split: _partition_indices(
            _struct_field(chosen, split, path),
            path,
            f"peta.{PETA_PARTITION_FIELD}[{partition}].{split}",
            rows,
        )
        for split in ("train", "val", "test")
    }
    return {
        "labels": labels,
        "attribute_names": names,
        "eval_idx": eval_idx.tolist(),
        "identity": data[:, 1].astype(np.int64),
        "sub_dataset": data[:, 2].astype(np.int64),
        "image_index": image_index,
        "partition": split_idx,
        "num_partitions": int(partitions.size),
    }


class _AttrDict(dict):
    """Stands in for ``easydict.EasyDict`` while unpickling: keeps items, takes the attribute state."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("easydict", "EasyDict"): _AttrDict,
    ("collections", "OrderedDict"): dict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "str"): str,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


def _numpy_global(module: str, name: str) -> Any:
    import copyreg

    if (module, name) == ("copyreg", "_reconstructor"):
        return copyreg._reconstructor
    if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles store bytes through it
        import codecs

        return codecs.encode
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        from numpy._core import multiarray

        return getattr(multiarray, name)
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        from numpy._core import numeric

        return numeric._frombuffer
    if module in ("numpy", "numpy.dtypes") and name.endswith("DType"):
        import numpy.dtypes

        return getattr(numpy.dtypes, name, None)
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles Rethinking_of_PAR's EasyDict pickles (dicts, lists, numpy arrays) and refuses any other
    global, so a pickle cannot run code; EasyDict becomes a plain dict without needing easydict."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        found = _numpy_global(module, name)
        if found is not None:
            return found
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_rethinking_pickle(path: Path) -> dict[str, Any]:
    require_file(path, "a Rethinking_of_PAR dataset pickle")
    try:
        data = RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as exc:
        raise DataFormatError(
            path, "a Rethinking_of_PAR EasyDict pickle of dicts, lists and arrays", str(exc)
        ) from exc
    except Exception as exc:  # a corrupt pickle can fail in many ways; none of them may escape as such
        raise DataFormatError(path, "a readable pickle", f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataFormatError(path, "a pickled EasyDict (a mapping)", type(data).__name__)
    return _plain(data)


def _zs_indices(value: Any, path: Path, split: str, rows: int, context: ReadContext) -> np.ndarray:
    if isinstance(value, list) and value and not np.isscalar(value[0]):
        context.warnings.append(f"{path}: partition.{split} is a list of runs; using run 0")
        value = value[0]
    try:
        indices = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataFormatError(path, f"partition.{split} as an index array", type(value).__name__) from exc
    if indices.dtype.kind not in "ui" or indices.ndim != 1 or indices.size == 0:
        raise DataFormatError(
            path, f"partition.{split} as a 1-D array of 0-based indices", _describe(indices)
        )
    if indices.min() < 0 or indices.max() >= rows:
        raise DataFormatError(
            path, f"partition.{split} indices in 0..{rows - 1}", f"range {indices.min()}..{indices.max()}"
        )
    return indices.astype(np.int64)


class PetaReader(DatasetReader):
    name = "peta"
    wrapper_dirs = ("PETA",)

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        image_dir = root / "images"
        mat_path = root / "PETA.mat"
        if version == "zs":
            return self._read_zs(root, image_dir, mat_path, context)
        peta = read_peta_mat(mat_path)
        labels, identity = peta["labels"], peta["identity"]
        records = [
            {
                "path": join_path(image_dir, f"{int(i):05d}.png"),
                "labels": row.tolist(),
                "identity": int(pid),
            }
            for i, row, pid in zip(peta["image_index"], labels, identity, strict=True)
        ]
        part = peta["partition"]
        splits = {split: [records[i] for i in part[split]] for split in ("train", "val", "test")}
        splits["trainval"] = splits["train"] + splits["val"]
        names = peta["attribute_names"]
        meta = {
            "attribute_names": names,
            "eval_idx": peta["eval_idx"],
            "eval_attribute_names": [names[i] for i in peta["eval_idx"]],
            "group_order": list(PETA_GROUP_ORDER) if len(peta["eval_idx"]) == len(PETA_GROUP_ORDER) else None,
            "color_idx": list(range(35, 79)) if len(names) == 105 else None,
            "extra_idx": list(range(79, 105)) if len(names) == 105 else None,
            "partition": 0,
            "num_partitions": peta["num_partitions"],
            "annotation_file": str(mat_path),
        }
        return make_splits(self.name, version, root, splits, meta)

    def _read_zs(self, root: Path, image_dir: Path, mat_path: Path, context: ReadContext) -> DatasetSplits:
        pkl_path = root / PETA_ZS_PICKLE
        data = load_rethinking_pickle(pkl_path)
        for key in ("image_name", "label", "attr_name", "partition"):
            if key not in data:
                raise DataFormatError(
                    pkl_path,
                    f"a key {key!r} (Rethinking_of_PAR dataset description)",
                    f"keys {sorted(map(str, data))}",
                )
        image_names = data["image_name"]
        if not isinstance(image_names, list) or not all(isinstance(n, str) for n in image_names):
            raise DataFormatError(pkl_path, "image_name as a list of file names", type(image_names).__name__)
        names = data["attr_name"]
        names = names.tolist() if isinstance(names, np.ndarray) else names
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise DataFormatError(pkl_path, "attr_name as a list of attribute names", repr(names)[:80])
        try:
            label_array = np.asarray(data["label"])
        except (ValueError, TypeError) as exc:
            raise DataFormatError(pkl_path, "label as an N x A matrix", str(exc)) from exc
        labels = binary_labels(label_array, pkl_path, "label", len(names))
        if labels.shape[0] != len(image_names):
            raise DataFormatError(
                pkl_path, f"one label row per image name ({len(image_names)})", str(labels.shape[0])
            )
        identities: dict[str, int] = {}
        if mat_path.exists():
            peta = read_peta_mat(mat_path)
            identities = {
                f"{int(i):05d}.png": int(p)
                for i, p in zip(peta["image_index"], peta["identity"], strict=True)
            }
        records = []
        for name, row in zip(image_names, labels, strict=True):
            record: AttributeRecord = {"path": join_path(image_dir, name), "labels": row.tolist()}
            if name in identities:
                record["identity"] = identities[name]
            records.append(record)
        partition = data["partition"]
        if not isinstance(partition, dict):
            raise DataFormatError(
                pkl_path, "partition as a mapping of split -> indices", type(partition).__name__
            )
        splits = {}
        for split in ("train", "val", "test"):
            if split not in partition:
                raise DataFormatError(pkl_path, f"partition.{split}", f"keys {sorted(partition)}")
            splits[split] = [
                records[i] for i in _zs_indices(partition[split], pkl_path, split, len(records), context)
            ]
        if "trainval" in partition:
            idx = _zs_indices(partition["trainval"], pkl_path, "trainval", len(records), context)
            splits["trainval"] = [records[i] for i in idx]
        else:
            splits["trainval"] = splits["train"] + splits["val"]
        label_idx = data.get("label_idx")
        if isinstance(label_idx, dict) and "eval" in label_idx:
            eval_array = np.asarray(label_idx["eval"]).reshape(-1)
            if eval_array.dtype.kind not in "ui" or not all(0 <= i < len(names) for i in eval_array):
                raise DataFormatError(
                    pkl_path, f"label_idx.eval as indices in 0..{len(names) - 1}", repr(eval_array[:10])
                )
            eval_idx = [int(i) for i in eval_array]
        else:  # the PETAzs pickle has no label_idx: every stored attribute is evaluated
            eval_idx = list(range(len(names)))
        meta = {
            "attribute_names": names,
            "eval_idx": eval_idx,
            "eval_attribute_names": [names[i] for i in eval_idx],
            "group_order": None,
            "annotation_file": str(pkl_path),
        }
        return make_splits(self.name, "zs", root, splits, meta)

    def file_checks(self, data: DatasetSplits):  # trainval repeats train + val
        from saip_bench.data.readers.base import FileCheck

        for split in ("train", "val", "test"):
            for record in data.splits[split]:
                yield FileCheck(record["path"], "image")

    def consistency_problems(self, data: DatasetSplits) -> list[str]:
        problems = []
        paths = {s: {r["path"] for r in data.splits[s]} for s in ("train", "val", "test")}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            if paths[a] & paths[b]:
                problems.append(f"splits {a} and {b} share {len(paths[a] & paths[b])} images")
        if data.version == "zs":
            ids = {
                s: {r["identity"] for r in data.splits[s] if "identity" in r} for s in ("trainval", "test")
            }
            shared = ids["trainval"] & ids["test"]
            if shared:
                problems.append(
                    f"PETAzs must be identity-disjoint, but trainval and test share {len(shared)} identities "
                    f"(e.g. {sorted(shared)[:5]}, PETA.mat column 1)"
                )
        return problems

    def dataset_counts(self, data: DatasetSplits) -> dict[str, int]:
        return {
            "attributes": len(data.meta["attribute_names"]),
            "eval_attributes": len(data.meta["eval_idx"]),
        }
