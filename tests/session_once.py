"""Expensive test fixtures built once per test session, also under pytest-xdist.

xdist runs each worker's session fixtures separately; `run_once` builds into a directory shared
by the workers of one session (the pattern of the pytest-xdist docs, with an fcntl lock instead
of the filelock package). A build that failed in one worker fails the others at once instead of
being retried.
"""
from __future__ import annotations

import fcntl
import pathlib
import traceback
from typing import Callable

import pytest


def run_once(tmp_path_factory, worker_id: str, name: str,
             build: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """Calls build(directory) the first time any worker asks for `name`; returns the directory."""
  base = tmp_path_factory.getbasetemp()
  root = base if worker_id == "master" else base.parent
  directory = root / name
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      failed, done = root / f"{name}.failed", root / f"{name}.done"
      if failed.exists():
        pytest.fail(f"building {name} failed in another worker:\n{failed.read_text()}")
      if not done.exists():
        directory.mkdir(exist_ok=True)
        try:
          build(directory)
        except BaseException:
          failed.write_text(traceback.format_exc())
          raise
        done.write_text("ok")
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return directory
