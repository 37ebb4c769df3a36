"""metric_writers: what is written reads back (TensorBoard through tensorboard's own reader,
metrics.jsonl as JSON), and the progress line's counts, rate and ETA."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clcr_jax import metric_writers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scalars(logdir):
  from tensorboard.backend.event_processing import event_accumulator  # independent reader
  acc = event_accumulator.EventAccumulator(str(logdir))
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_read_back_as_written(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path))
  writer.write(1, "train", {"loss": 0.5, "acc": np.float32(0.25), "count": np.int64(3),
                            "vector": np.array([1.0, 2.0]), "nan": float("nan"), "name": "x"})
  writer.write(2**40, "valid", {"loss": 1.0 / 3.0})
  writer.close()
  scalars = _scalars(tmp_path / "tensorboard")
  # Only finite scalars go to TensorBoard (vectors, strings and NaN only to metrics.jsonl), as
  # float32 simple values.
  assert scalars == {"train/loss": [(1, 0.5)], "train/acc": [(1, 0.25)],
                     "train/count": [(1, 3.0)],
                     "valid/loss": [(2**40, float(np.float32(1.0 / 3.0)))]}
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert records == [
      {"step": 1, "split": "train", "loss": 0.5, "acc": 0.25, "count": 3, "vector": [1.0, 2.0],
       "nan": None, "name": "x"},
      {"step": 2**40, "split": "valid", "loss": 1.0 / 3.0}]


def test_events_are_on_disk_before_close(tmp_path):
  # A killed run keeps what it logged: every write is flushed.
  writer = metric_writers.TensorBoardWriter(str(tmp_path))
  writer.write_scalars(7, {"a": 2.0, "skipped": None})
  assert _scalars(tmp_path) == {"a": [(7, 2.0)]}
  writer.close()


def test_resume_drops_the_records_after_the_checkpoint(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
  for step in (1, 2, 3):
    writer.write(step, "train", {"loss": float(step)})
  writer.close()
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False, resume_step=2)
  writer.write(3, "train", {"loss": 30.0})
  writer.close()
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(line)["loss"] for line in f] == [1.0, 2.0, 30.0]
  assert not (tmp_path / "tensorboard").exists()


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path), enabled=False)
  writer.write(1, "train", {"loss": 1.0})
  writer.close()
  assert not list(tmp_path.iterdir())


def test_missing_tensorboard_fails_at_the_start_naming_the_way_out(tmp_path):
  script = ("import sys; sys.modules['tensorboard'] = None\n"
            "from clcr_jax import metric_writers\n"
            f"metric_writers.MetricWriter({str(tmp_path)!r})\n")
  out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode != 0
  assert "tensorboard" in out.stderr and "--config.logging.tensorboard=False" in out.stderr


def test_progress_line_counts_rate_and_eta(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(metric_writers.time, "time", lambda: now[0])
  lines = []
  train = metric_writers.Progress(200, "step", start=40, log=lines.append)
  now[0] += 8.0  # 40 steps in 8 s since the resumed start: 5 steps/s, 120 steps to go
  train.log(80, "loss 0.5000")
  assert lines == ["step 80/200 loss 0.5000 | 5.00 steps/s | ETA 24s"]
  runs = metric_writers.Progress(8, "run", label="runs", per_unit=True)
  now[0] += 375.0  # 3 runs in 6m15s: 125 s per run, 5 to go
  assert runs.line(3, "ended") == "runs 3/8 ended | 2m05s/run | ETA 10m25s"
  fast = metric_writers.Progress(4, "pass", per_unit=True)
  now[0] += 1.0
  assert fast.line(2) == "pass 2/4 | 0.5s/pass | ETA 1s"
  assert metric_writers.Progress(4, "step").line(0) == "step 0/4 | 0.00 steps/s | ETA ?"


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (59.6, "1m00s"),
                                           (3600 * 2 + 61, "2h01m01s"), (float("inf"), "?")])
def test_format_seconds(seconds, text):
  assert metric_writers.format_seconds(seconds) == text
