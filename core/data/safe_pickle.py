"""Load pickles that hold only plain data, refusing anything that would import or call code.

A pickle can name any importable global (``os.system``, a class with a ``__reduce__``) and
the stock unpickler imports and calls it while loading. ``load_plain_pickle`` uses an
unpickler whose ``find_class`` always refuses, so only values that need no global load:
dicts, lists, tuples, ints, floats, strs, bytes (protocol 3+), bools, None, and sets
(protocol 4+). Anything else stops the load before any code runs.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from core.errors import DataError, read_user_file


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global reference (classes, functions, modules)."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        raise pickle.UnpicklingError(
            f"refused global {module}.{name}: only plain containers, numbers and strings may be loaded"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"refused persistent id {pid!r}")


def loads_plain(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`PlainUnpickler`; raises ``pickle.UnpicklingError`` etc."""
    return PlainUnpickler(io.BytesIO(data)).load()


def load_plain_pickle(path: str | Path) -> Any:
    """Load a plain-data pickle from ``path``; any failure is a ``DataError`` naming the file."""
    path = Path(path)
    data = read_user_file(path, DataError, "pickle file")
    if not data:
        raise DataError(f"{path}: file is empty")
    try:
        return loads_plain(data)
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: not loaded as a plain pickle ({exc})") from None
    except RecursionError:
        raise DataError(f"{path}: pickle nests too deeply to load") from None
    except MemoryError:
        raise DataError(f"{path}: pickle is too large to load") from None
    except Exception as exc:  # truncated/corrupt streams raise EOFError, ValueError, KeyError, ...
        raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
