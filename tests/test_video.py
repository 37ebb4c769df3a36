"""Frame sampling (numpy) and the tf frame transforms."""
import io

import numpy as np
import pytest
from PIL import Image

from data_pipelines import video
from data_pipelines.base import DataError

tf = pytest.importorskip("tensorflow")


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------
def test_eval_positions_are_segment_centres():
  pos, mask = video.sample_positions(10, 3, train=False)
  np.testing.assert_array_equal(pos, [1, 4, 8])  # segments [0,3) [3,6) [6,10)
  assert mask.all()
  pos, mask = video.sample_positions(1, 1, train=False)
  np.testing.assert_array_equal(pos, [0])


@pytest.mark.parametrize("n,want,want_mask", [
    (2, [0, 0, 1], [True, False, True]),
    (1, [0, 0, 0], [True, False, False]),
])
def test_short_clips_repeat_frames_and_mask_repeats(n, want, want_mask):
  pos, mask = video.sample_positions(n, 3, train=False)
  np.testing.assert_array_equal(pos, want)
  np.testing.assert_array_equal(mask, want_mask)
  tpos, tmask = video.sample_positions(n, 3, train=True, seed=np.array([1, 2], np.uint32))
  assert (np.diff(tpos) >= 0).all() and tmask.sum() == len(set(tpos.tolist()))


def test_train_positions_stay_in_their_segments_and_follow_the_seed():
  n, k = 25, 4
  bounds = (np.arange(k + 1) * n) // k
  draws = []
  for s in range(40):
    seed = np.array([s, 7], np.uint32)
    pos, mask = video.sample_positions(n, k, train=True, seed=seed)
    assert ((pos >= bounds[:-1]) & (pos < bounds[1:])).all() and mask.all()
    again, _ = video.sample_positions(n, k, train=True, seed=seed.astype(np.int32))
    np.testing.assert_array_equal(pos, again)  # the int32 view tf.data hands over is the same
    draws.append(tuple(pos))
  assert len(set(draws)) > 10  # the seed matters


def test_list_frames_is_sorted_and_checks(tmp_path):
  d = tmp_path / "clip"
  d.mkdir()
  for name in ["frame_10.jpg", "frame_02.jpg", "notes.txt", "frame_01.PNG"]:
    (d / name).write_bytes(b"x")
  assert video.list_frames(str(d), "entry") == ["frame_01.PNG", "frame_02.jpg", "frame_10.jpg"]
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="entry: clip without frames.*empty"):
    video.list_frames(str(tmp_path / "empty"), "entry")
  with pytest.raises(DataError, match="entry: frames directory not found"):
    video.list_frames(str(tmp_path / "nope"), "entry")


# ---------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------
def _png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def test_decode_and_eval_resize_normalise_exactly():
  frame = np.full((20, 30, 3), (255, 0, 128), np.uint8)
  encoded = tf.constant([_png(frame)] * 2)
  frames = video.decode(tf, encoded, 3)
  assert frames.shape == (2, 20, 30, 3) and frames.dtype == tf.uint8
  opts = video.FrameOptions(num_frames=2, image_size=16)
  out = video.transform(tf, frames, tf.constant([0, 0]), False, opts).numpy()
  assert out.shape == (2, 16, 16, 3)
  want = (np.array([255, 0, 128]) / 255.0 - np.array(video.IMAGENET_MEAN)) / video.IMAGENET_STD
  np.testing.assert_allclose(out, np.broadcast_to(want, out.shape), atol=1e-5)


def test_center_crop_keeps_the_middle():
  frame = np.zeros((40, 80, 1), np.uint8)
  frame[:, 30:50] = 255  # a bright band in the middle fifth
  out = video.eval_transform(tf, tf.constant(frame[None]), 16, "center_crop").numpy()
  assert out.shape == (1, 16, 16, 1)
  # Shorter side 40 -> round(16 * 256 / 224) = 18, width 36; the centre 16 columns hold the band.
  assert out[0, :, 8, 0].min() > 200 and out[0, :, 0, 0].max() < 60


def test_train_transform_is_a_pure_function_of_the_seed():
  rng = np.random.default_rng(0)
  frames = tf.constant(rng.integers(0, 255, (3, 24, 32, 3), dtype=np.uint8))
  opts = video.FrameOptions(num_frames=3, image_size=12)
  a = video.transform(tf, frames, tf.constant([5, 9]), True, opts).numpy()
  b = video.transform(tf, frames, tf.constant([5, 9]), True, opts).numpy()
  c = video.transform(tf, frames, tf.constant([5, 10]), True, opts).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert a.shape == (3, 12, 12, 3)


def test_flipping_a_flow_stack_inverts_its_x_component():
  u = np.full((16, 16), 50, np.uint8)
  v = np.tile(np.linspace(0, 250, 16).astype(np.uint8), (16, 1))  # increases left to right
  frames = tf.constant(np.stack([u, v], -1)[None])
  flipped_seen = unflipped_seen = False
  for s in range(12):
    out = video.train_transform(tf, frames, tf.constant([s, 1]), 16, flow=True).numpy()[0]
    flipped = out[8, 0, 1] > out[8, -1, 1]
    np.testing.assert_allclose(out[..., 0], 205.0 if flipped else 50.0, atol=1e-3)
    flipped_seen |= flipped
    unflipped_seen |= not flipped
  assert flipped_seen and unflipped_seen


def test_options_are_checked():
  with pytest.raises(ValueError, match="eval_crop"):
    video.FrameOptions(eval_crop="squash")
