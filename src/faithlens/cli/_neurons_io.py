"""Files of ``faithlens neurons``: reading activation / concept matrices (.npy, .pt, .csv,
.parquet), unit selections, progress bars, and the report, table and plot each command writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..results import atomic_file, check_output_file, check_target
from ._common import console, print_frame, progress_bar, save_result


def load_array_file(path: Path, what: str) -> tuple[np.ndarray, list[str] | None]:
    """The numbers in ``path`` (.npy, .pt, .csv, .parquet): a non-empty, finite, numeric array.
    Anything else (an object array, a dict in a .pt, an empty file, text cells) is an
    :class:`InputError` naming the file and what is expected."""
    if not path.exists():
        raise InputError(f"{what} file {path} does not exist")
    if path.is_dir():
        raise InputError(f"{what} file {path} is a folder; give a .npy, .pt, .csv or .parquet file")
    suffix = path.suffix.lower()
    expected = f"{what} file {path}"
    names: list[str] | None = None
    try:
        if suffix == ".npy":
            with path.open("rb") as fh:
                if fh.read(6) != b"\x93NUMPY":
                    raise InputError(f"cannot read {expected}: not a NumPy .npy file")
            arr = _load_tensor_file(path, what)
        elif suffix in (".pt", ".pth"):
            arr = _load_tensor_file(path, what)
        elif suffix in (".csv", ".parquet", ".pq"):
            df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
            text = [str(c) for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
            if text and len(df):
                raise InputError(
                    f"{expected} has non-numeric columns {text[:5]}; every cell must be a number"
                )
            arr, names = df.to_numpy(dtype=np.float32), [str(c) for c in df.columns]
        else:
            raise InputError(
                f"cannot read {what} from {path.name}: use .npy, .pt, .csv or .parquet"
            )
    except InputError:
        raise
    except pd.errors.EmptyDataError as e:
        raise InputError(f"{expected} is empty; it must hold a table of numbers") from e
    except ValueError as e:
        if "Object arrays" in str(e) or "pickled" in str(e):
            raise InputError(
                f"{expected} holds Python objects (an object array), not numbers; save a "
                "numeric array with np.save(path, np.asarray(x, dtype=np.float32))"
            ) from e
        raise InputError(f"cannot read {expected}: {e}") from e
    except Exception as e:
        raise InputError(f"cannot read {expected}: {type(e).__name__}: {e}") from e
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise InputError(f"{expected} holds {arr.dtype} values, not numbers")
    if np.iscomplexobj(arr):
        raise InputError(f"{expected} holds complex numbers; give real numbers")
    if arr.ndim == 0 or arr.size == 0:
        raise InputError(f"{expected} is empty (shape {tuple(arr.shape)}); it must hold numbers")
    if not np.isfinite(arr.astype(np.float64, copy=False)).all():
        raise InputError(f"{expected} contains NaN or inf values")
    return arr, names


def read_matrix(path: Path, what: str) -> tuple[np.ndarray, list[str] | None]:
    """A 2-D array from .npy, .pt, .csv or .parquet (tables keep their column names)."""
    arr, names = load_array_file(path, what)
    if arr.ndim != 2:
        raise InputError(
            f"{what} file {path} holds an array of shape {tuple(arr.shape)}; expected a 2-D "
            "[n_samples, columns] array"
        )
    return arr, names


def _load_tensor_file(path: Path, what: str) -> np.ndarray:
    """One array from a .npy (``allow_pickle=False``) or a .pt holding one tensor
    (``weights_only=True``): a file that needs unpickling Python objects is refused, never run."""
    fix = f"save the {what} as a plain array (numpy.save) or one tensor (torch.save)"
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as e:
            if "pickle" in str(e).lower():
                raise InputError(
                    f"{what} file {path} holds pickled Python objects (an object array), which faithlens never "
                    f"loads (unpickling can run code); {fix}"
                ) from None
            raise InputError(f"{what} file {path} is not a readable .npy ({e}); {fix}") from None
        except Exception as e:
            raise InputError(
                f"{what} file {path} is not a readable .npy ({type(e).__name__}: {e}); {fix}"
            ) from None
    import torch

    from ..safe_load import torch_load

    obj = torch_load(path, what=f"{what} file", fix=fix, error=InputError)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    try:  # nested lists of numbers
        arr = np.asarray(obj)
    except Exception:
        arr = np.asarray(None)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what} file {path} holds a {type(obj).__name__}, not a tensor; {fix}")
    return arr


@contextmanager
def progress_printer(label: str) -> Iterator[Callable[[int, int], None]]:
    """Progress of a neurons command: a bar on a terminal, plain lines otherwise."""
    with progress_bar(label, stream=console) as advance:
        yield advance


def check_outputs(out: Path | None, plot: Path | None, overwrite: bool) -> None:
    """Refuse an unwritable or existing --out / --plot before any work."""
    if out is not None:
        check_target(out, overwrite=overwrite, name="--out")
    if plot is not None:
        check_output_file(plot, overwrite=overwrite, name="--plot")


def save_plot(res: Any, plot: Path, overwrite: bool, **options: Any) -> None:
    """``res.plot(**options)`` written atomically to ``--plot``."""
    with atomic_file(plot, overwrite=overwrite, name="--plot") as tmp:
        res.plot(**options).savefig(tmp, dpi=120)
    console.print(f"plot saved to {plot}")


def print_report(
    res: Any, out: Path | None, show: int, plot: Path | None, overwrite: bool = False
) -> None:
    console.print(res.summary(max_units=show), highlight=False, markup=False)
    cols = [
        c
        for c in [
            "metric",
            "unit",
            "status",
            "concept",
            "top_scoring",
            "score",
            "score_ci_low",
            "score_ci_high",
            "provable_size",
            "be_set",
            "be_size",
        ]
        if c in res.to_frame().columns
    ]
    print_frame(res.to_frame()[cols], "explanations", max_rows=show)
    if out is not None:
        save_result(res, out, overwrite=overwrite, message=f"saved to {out}")
    if plot is not None:
        save_plot(res, plot, overwrite)


def read_array(path: Path, what: str) -> np.ndarray:
    if path.suffix.lower() not in (".npy", ".pt", ".pth"):
        raise InputError(f"{what} must be .npy or .pt (got {path.name})")
    return load_array_file(path, what)[0]


def parse_units(spec: str, n: int) -> list[int]:
    """``a:b`` (Python slice, both ends within the units) or a comma list of unit indices;
    anything outside ``0..n-1``, an empty selection or a repeat is an error (never clamped)."""
    text = spec.strip()
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            lo = int(a) if a.strip() else 0
            hi = int(b) if b.strip() else n
            if not (0 <= lo <= n and 0 <= hi <= n):
                raise InputError(
                    f"--units={spec!r}: runs past the {n} units; use a range within 0:{n}"
                )
            idx = list(range(lo, hi))
        else:
            idx = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise InputError(f"--units={spec!r}: takes 'a:b' or a comma-separated list of ints") from e
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise InputError(
            f"--units={spec!r}: units {bad[:5]} do not exist; the activations have {n} units "
            f"(0..{n - 1})"
        )
    if not idx:
        raise InputError(f"--units={spec!r}: selects no unit; choose among the {n} units")
    if len(set(idx)) != len(idx):
        raise InputError(f"--units={spec!r}: repeats a unit; list each unit once")
    return idx
