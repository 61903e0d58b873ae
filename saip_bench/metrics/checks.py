"""Input checks shared by every metric: readable files, numeric dtypes, finite values, value ranges.

Why: a metric fed NaN keypoints, inf distances or logits instead of probabilities still returns a number,
and that number is wrong without a sign of it (NaN keypoints scored AP 1.0). Each check raises
``DataFormatError`` naming the file, the field and the first offending index, so ``saip-bench metric``
prints one line and exits 2, and the tasks that call the metrics on their own predictions get the same
error. The checks are vectorised (one ``np.isfinite`` per array); the index is only looked up on failure.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np

from saip_bench.errors import DataFormatError

NUMERIC_KINDS = "biuf"  # bool, signed/unsigned integer, float
MAX_EXACT_ID = 2**53  # float ids beyond this are not exact integers


def describe_index(index: tuple[int, ...] | int) -> str:
    """``5`` for a vector, ``(2, 5)`` for a matrix."""
    if isinstance(index, tuple):
        return str(index[0]) if len(index) == 1 else "(" + ", ".join(str(int(i)) for i in index) + ")"
    return str(int(index))


def show(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def first_false(mask: np.ndarray) -> tuple[int, ...]:
    """Index (row-major) of the first False in ``mask``; call only when one exists."""
    flat = int(np.argmin(np.asarray(mask).reshape(-1)))
    return tuple(int(i) for i in np.unravel_index(flat, np.shape(mask)))


def check_numeric(array: np.ndarray, source: str, field: str, kinds: str = NUMERIC_KINDS) -> np.ndarray:
    """``array`` as numbers (bool/int/float; no strings, objects or complex)."""
    array = np.asarray(array)
    if array.dtype.kind not in kinds:
        raise DataFormatError(source, f"{field} as a numeric array", f"dtype {array.dtype}")
    return array


def check_finite(array: np.ndarray, source: str, field: str) -> np.ndarray:
    """Raise on the first NaN or +-inf of a numeric array (integers and bools always pass)."""
    array = np.asarray(array)
    if array.dtype.kind in "biu":
        return array
    finite = np.isfinite(array)
    if not finite.all():
        index = first_false(finite)
        raise DataFormatError(
            source, f"{field} as finite numbers", f"{show(array[index])} at index {describe_index(index)}"
        )
    return array


def check_range(array: np.ndarray, low: float, high: float, source: str, field: str, hint: str = "") -> None:
    """Raise on the first value outside ``[low, high]`` (``array`` already finite)."""
    inside = (array >= low) & (array <= high)
    if not inside.all():
        index = first_false(inside)
        raise DataFormatError(
            source,
            f"{field} in [{low:g}, {high:g}]{hint}",
            f"{show(array[index])} at index {describe_index(index)}",
        )


def check_ids(array: np.ndarray, source: str, field: str) -> np.ndarray:
    """Integer ids as int64: integer dtypes, or floats that are exact integers (no NaN, no fraction)."""
    array = np.asarray(array)
    if array.dtype.kind in "iu":
        if array.dtype.kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
            raise DataFormatError(source, f"{field} as int64 ids", f"{int(array.max())}")
        return array.astype(np.int64)
    if array.dtype.kind != "f":
        raise DataFormatError(source, f"{field} as integers", f"dtype {array.dtype}")
    # compared in float64: the bound cast to float16 overflows (a RuntimeWarning; inf still bounds it)
    whole = np.isfinite(array) & (np.abs(array.astype(np.float64)) <= MAX_EXACT_ID)
    whole &= np.equal(np.mod(array, 1, where=whole, out=np.zeros_like(array)), 0)
    if not whole.all():
        index = first_false(whole)
        raise DataFormatError(
            source, f"{field} as integers", f"{show(array[index])} at index {describe_index(index)}"
        )
    return array.astype(np.int64)


# -- JSON records ------------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    """A JSON number (int or float), not a bool, string or None."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def finite_number(value: Any, source: str, field: str, where: str) -> float:
    """One finite number of a record (a score, a size); ``where`` says which record."""
    if not is_number(value):
        raise DataFormatError(
            source, f"{field} as a number in every {where.split(' ')[0]}", f"{show(value)} in {where}"
        )
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = -math.inf if value < 0 else math.inf
    if not math.isfinite(number):
        raise DataFormatError(
            source, f"a finite {field} in every {where.split(' ')[0]}", f"{show(number)} in {where}"
        )
    return number


def integer_id(value: Any, source: str, field: str, where: str) -> int:
    """A JSON id: an int (or a float that is an exact integer), not a bool, string, list or None."""
    if is_number(value) and (
        abs(value) <= MAX_EXACT_ID if isinstance(value, numbers.Integral) else
        math.isfinite(value) and float(value) == int(value) and abs(value) <= MAX_EXACT_ID
    ):
        return int(value)
    raise DataFormatError(
        source, f"{field} as an integer in every {where.split(' ')[0]}", f"{show(value)} in {where}"
    )


def number_list(values: Any, length: int | None, source: str, field: str, where: str) -> np.ndarray:
    """A JSON list of ``length`` finite numbers as float64; names the first bad element."""
    if not isinstance(values, list) or (length is not None and len(values) != length):
        found = (
            "missing"
            if values is None
            else (f"{len(values)} numbers" if isinstance(values, list) else show(values))
        )
        count = f"{length} numbers" if length is not None else "a list of numbers"
        raise DataFormatError(
            source, f"{field} as {count} in every {where.split(' ')[0]}", f"{found} in {where}"
        )
    if not set(map(type, values)) <= {int, float}:
        for index, value in enumerate(values):
            if not is_number(value):
                raise DataFormatError(
                    source, f"{field} as numbers", f"{show(value)} at index {index} of {where}"
                )
    array = np.asarray(values, dtype=np.float64)
    try:
        return check_finite(array, source, field)
    except DataFormatError as exc:
        raise DataFormatError(source, f"{field} as finite numbers", f"{exc.found} of {where}") from None


def parse_json_int(text: str) -> int | float:
    """``json.loads``' ``parse_int``: an integer literal beyond the float range reads as +-inf (a
    non-finite number the checks reject) instead of an int that overflows, or, past 4,300 digits, a
    ``ValueError`` from ``int`` itself."""
    if len(text) > 300:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def load_json(path: str | Path, expected: str) -> Any:
    """Parsed JSON; a missing, empty, binary, truncated or over-nested file is one ``DataFormatError``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataFormatError(path, expected, "nothing at that path") from exc
    except IsADirectoryError as exc:
        raise DataFormatError(path, expected, "a directory") from exc
    except OSError as exc:
        raise DataFormatError(path, expected, f"an unreadable file ({exc.strerror or exc})") from exc
    if not raw.strip():
        raise DataFormatError(path, expected, "an empty file" if not raw else "only whitespace")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, expected, f"bytes that are not UTF-8 text at offset {exc.start}") from exc
    try:
        return json.loads(text, parse_int=parse_json_int)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            path, expected, f"invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"
        ) from exc
    except RecursionError as exc:
        raise DataFormatError(path, expected, "JSON nested too deeply") from exc


def read_text_lines(path: str | Path, expected: str) -> list[str]:
    """A UTF-8 text file's lines; missing, directory or binary files name the file."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DataFormatError(path, expected, "nothing at that path") from exc
    except IsADirectoryError as exc:
        raise DataFormatError(path, expected, "a directory") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, expected, f"bytes that are not UTF-8 text at offset {exc.start}") from exc
    except OSError as exc:
        raise DataFormatError(path, expected, f"an unreadable file ({exc.strerror or exc})") from exc


def entry(index: int, item: Any, id_key: str = "image_id") -> str:
    """``entry 3 (image_id 17)`` for error messages."""
    if isinstance(item, dict) and id_key in item:
        return f"entry {index} ({id_key} {show(item[id_key])})"
    return f"entry {index}"
