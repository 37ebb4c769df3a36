"""A restricted unpickler for the feature pickles users download (MMSA, MulT).

Unpickling runs whatever callables a file names, so a pickle from the internet is a program. This
loader resolves only the globals needed to rebuild numpy arrays, dtypes and scalars and plain
builtin containers; anything else (a class instance, `os.system`, `builtins.eval`, a pandas
frame, a torch tensor) raises `DataError` naming the file and the refused global, before anything
it names is called.

Pickles written with numpy < 2 name `numpy.core.multiarray`; numpy >= 2 writes
`numpy._core.multiarray`. Both spellings resolve to whichever module the installed numpy has, so
old files load on numpy 2.x (without its deprecation warning) and new files on numpy 1.x.
"""
from __future__ import annotations

import builtins
import collections
import importlib
import pickle
from typing import Any, Callable

from data_pipelines.base import DataError

# Allowed numpy callables by (submodule under numpy.core / numpy._core, name).
_NUMPY_CORE = {
    ("multiarray", "_reconstruct"),   # ndarray.__reduce__
    ("multiarray", "scalar"),         # numpy scalar reduce
    ("numeric", "_frombuffer"),       # protocol-5 arrays
}
_NUMPY_TOP = {"ndarray", "dtype"}
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
             "float", "complex", "bool", "slice", "range"}
# Encodings `_codecs.encode` may apply: protocol-2 pickles store bytes as latin-1 text.
_SAFE_ENCODINGS = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "ascii", "utf-8", "utf8"}


def _numpy_core_module(submodule: str):
  """numpy._core.<sub> on numpy >= 2, numpy.core.<sub> on numpy 1.x."""
  for prefix in ("numpy._core", "numpy.core"):
    try:
      return importlib.import_module(f"{prefix}.{submodule}")
    except ImportError:
      continue
  raise ImportError(f"numpy has neither numpy._core.{submodule} nor numpy.core.{submodule}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
  import _codecs  # pylint: disable=import-outside-toplevel
  if encoding.lower() not in _SAFE_ENCODINGS:
    raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
  return _codecs.encode(text, encoding)


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only allow-listed globals; remembers the file name for error messages."""

  def __init__(self, file, path: str):
    super().__init__(file)
    self._path = path

  def find_class(self, module: str, name: str) -> Callable[..., Any]:
    for prefix in ("numpy._core.", "numpy.core."):
      if module.startswith(prefix) and (module[len(prefix):], name) in _NUMPY_CORE:
        return getattr(_numpy_core_module(module[len(prefix):]), name)
    if module == "numpy" and name in _NUMPY_TOP:
      return getattr(importlib.import_module("numpy"), name)
    if module in ("builtins", "__builtin__") and name in _BUILTINS:
      return getattr(builtins, name)
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module == "_codecs" and name == "encode":
      return _latin1_encode
    raise DataError(
        f"{self._path}: refused to unpickle global '{module}.{name}'; this loader only rebuilds "
        "numpy arrays, numpy dtypes/scalars and builtin containers (dict, list, str, bytes, int, "
        "float, ...). Pickles can run code: if you trust this file, convert it to .npz "
        "(numpy.savez) and use the 'features' reader.")

  def persistent_load(self, pid):
    raise DataError(f"{self._path}: refused a persistent id ({pid!r}); plain pickles only")


def load(path: str) -> Any:
  """Unpickles `path` with the allow-list above.

  Raises:
    DataError: the file is missing, is not a pickle, or names a global outside the allow-list.
  """
  try:
    with open(path, "rb") as f:
      return _RestrictedUnpickler(f, path).load()
  except DataError:
    raise
  except FileNotFoundError as e:
    raise DataError(f"{path}: file not found") from e
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
          ImportError, IndexError, KeyError) as e:
    raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
