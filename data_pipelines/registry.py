"""Registry of dataset readers by name.

Readers register themselves with `@register("name")`. Every module under
`data_pipelines/readers/` is imported on first lookup, so adding a reader is adding a file: there
is no import table to keep in sync.
"""
from __future__ import annotations

import importlib
import pkgutil

_READERS: dict[str, type] = {}
_DISCOVERED = False


def register(name: str):
  """Class decorator: makes a `DatasetReader` subclass available as `config.data.name = name`."""
  def wrap(cls):
    if name in _READERS and _READERS[name] is not cls:
      raise ValueError(f"two readers registered as {name!r}: {_READERS[name]} and {cls}")
    _READERS[name] = cls
    cls.registered_name = name
    return cls
  return wrap


def _discover() -> None:
  global _DISCOVERED
  if _DISCOVERED:
    return
  from data_pipelines import readers  # pylint: disable=import-outside-toplevel
  for info in pkgutil.iter_modules(readers.__path__):
    importlib.import_module(f"{readers.__name__}.{info.name}")
  _DISCOVERED = True


def names() -> list[str]:
  _discover()
  return sorted(_READERS)


def get_reader(data_config):
  """Builds the reader named by `data_config.name` from the whole `config.data` block."""
  _discover()
  name = data_config.name
  if name not in _READERS:
    raise ValueError(f"config.data.name={name!r} is not a registered dataset; "
                     f"registered: {', '.join(sorted(_READERS))}")
  return _READERS[name](data_config)
