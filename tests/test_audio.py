"""The audio front ends against independent computations written here (explicit per-frame DFTs)."""
import os
import pickle
import wave

import numpy as np
import pytest

from data_pipelines import audio
from data_pipelines.base import DataError
import fixtures_av


@pytest.fixture(name="wav16k")
def _wav16k(tmp_path):
  path = str(tmp_path / "clip.wav")
  pcm = fixtures_av.write_wav(path, 1.3, rate=16000, freq=523.0, seed=1)
  return path, pcm


def _dft_rows(frames: np.ndarray, n_fft: int) -> np.ndarray:
  """One-sided DFT of each row by an explicit exp(-2 pi i k n / N) sum (no FFT)."""
  n = np.arange(frames.shape[1])
  k = np.arange(n_fft // 2 + 1)[:, None]
  basis = np.exp(-2j * np.pi * k * n / n_fft)
  return np.stack([basis @ f for f in frames])


def _reflect(y: np.ndarray, i: int) -> float:
  """y at index i of np.pad(y, mode='reflect'), by mirror arithmetic."""
  n = len(y)
  if i < 0:
    i = -i
  if i >= n:
    i = 2 * (n - 1) - i
  return y[i]


# ---------------------------------------------------------------------------------------------
# wav reading
# ---------------------------------------------------------------------------------------------
def test_read_wav_scales_like_soundfile(wav16k):
  path, pcm = wav16k
  x, rate = audio.read_wav(path)
  assert rate == 16000 and x.shape == (1, len(pcm)) and x.dtype == np.float32
  np.testing.assert_array_equal(x[0], pcm.astype(np.float32) / 32768.0)


@pytest.mark.parametrize("width", [1, 3, 4])
def test_read_wav_other_widths(tmp_path, width):
  rng = np.random.default_rng(width)
  ints = rng.integers(-(1 << (8 * width - 1)), 1 << (8 * width - 1), 50)
  if width == 1:
    raw = (ints + 128).astype(np.uint8).tobytes()
  elif width == 3:
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
  else:
    raw = ints.astype("<i4").tobytes()
  path = str(tmp_path / "w.wav")
  with wave.open(path, "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(width)
    f.setframerate(8000)
    f.writeframes(raw)
  x, _ = audio.read_wav(path)
  np.testing.assert_allclose(x[0], ints / float(1 << (8 * width - 1)), rtol=0, atol=1e-7)


def test_stereo_is_averaged_for_spectrograms(tmp_path):
  path = str(tmp_path / "s.wav")
  pcm = fixtures_av.write_wav(path, 1.1, channels=2)
  x, _ = audio.read_wav(path)
  assert x.shape == (2, pcm.shape[0])
  mono = audio.ogm_stft(audio.resample(x.mean(0), 16000, 22050))
  np.testing.assert_array_equal(audio.AudioFeature("ogm_stft").from_wav(path), mono)


def test_bad_wavs_raise_data_error(tmp_path):
  bad = tmp_path / "bad.wav"
  bad.write_bytes(b"RIFF\x00\x00\x00\x00not a wave file at all")
  with pytest.raises(DataError, match="bad.wav: unreadable wav: expected a PCM WAV"):
    audio.read_wav(str(bad))
  good = str(tmp_path / "good.wav")
  fixtures_av.write_wav(good, 0.5)
  data = open(good, "rb").read()
  (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])
  with pytest.raises(DataError, match="cut.wav: truncated wav"):
    audio.read_wav(str(tmp_path / "cut.wav"))
  with pytest.raises(DataError, match="missing.wav"):
    audio.read_wav(str(tmp_path / "missing.wav"))


def test_resample_keeps_duration_and_pitch():
  rate_in, rate_out = 16000, 22050
  t = np.arange(rate_in) / rate_in
  y = audio.resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), rate_in, rate_out)
  assert len(y) == rate_out and y.dtype == np.float32
  spectrum = np.abs(np.fft.rfft(y[2000:-2000]))
  peak_hz = np.argmax(spectrum) * rate_out / len(y[2000:-2000])
  assert abs(peak_hz - 1000) < 2


# ---------------------------------------------------------------------------------------------
# OGM-GE STFT
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_ogm_stft_matches_explicit_frame_loop(wav16k, pad_mode):
  path, _ = wav16k
  feature = audio.AudioFeature("ogm_stft", stft_pad_mode=pad_mode)
  got = feature.from_wav(path)
  assert got.shape == (257, 188) and got.dtype == np.float32
  # Independent path: the 22050 Hz signal, tiled x3 (the clip is 1.3 s >= 1 s), cut, clipped.
  x, rate = audio.read_wav(path)
  y = audio.resample(x[0], rate, 22050)
  y = np.clip(np.concatenate([y, y, y])[:66150], -1, 1).astype(np.float64)
  n_fft, hop, half = 512, 353, 256
  window = np.array([0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft) for n in range(n_fft)])
  frames = []
  for t in range(188):
    start = t * hop - half  # frame t is centred on sample t * hop
    if pad_mode == "reflect":
      seg = [_reflect(y, i) for i in range(start, start + n_fft)]
    else:
      seg = [y[i] if 0 <= i < len(y) else 0.0 for i in range(start, start + n_fft)]
    frames.append(np.array(seg) * window)
  want = np.log(np.abs(_dft_rows(np.array(frames), n_fft)).T + 1e-7)
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)


def test_ogm_stft_tiles_short_clips_like_the_peers():
  y = np.random.default_rng(0).uniform(-1, 1, 30000).astype(np.float32)  # 1.36 s at 22050
  want = audio.ogm_stft(np.tile(y, 3)[:66150])  # the peer's exact tiling
  np.testing.assert_array_equal(audio.ogm_stft(y), want)
  short = audio.ogm_stft(y[:5000])  # < 1 s: the peers would give fewer frames; we tile more
  assert short.shape == (257, 188)


def test_pmr_spectrogram_matches_explicit_psd():
  rng = np.random.default_rng(2)
  y = (0.3 * np.sin(np.arange(40000) * 0.05) + 0.05 * rng.standard_normal(40000))
  y = y.astype(np.float32)
  got = audio.pmr_spectrogram(y)
  assert got.shape == (257, 1004)
  sig = np.clip(np.tile(y, 4)[:160000], -1, 1).astype(np.float64)
  n, step, fs = 512, 512 - 353, 22050.0
  # periodic Tukey(0.25) window, written out
  m = np.arange(n) / n
  alpha = 0.25
  w = np.ones(n)
  rise = m < alpha / 2
  w[rise] = 0.5 * (1 + np.cos(np.pi * (2 * m[rise] / alpha - 1)))
  fall = m >= 1 - alpha / 2
  w[fall] = 0.5 * (1 + np.cos(np.pi * (2 * m[fall] / alpha - 2 / alpha + 1)))
  frames = []
  for t in range(1004):
    seg = sig[t * step:t * step + n]
    frames.append((seg - seg.mean()) * w)
  psd = np.abs(_dft_rows(np.array(frames), n)) ** 2 / (fs * np.sum(w ** 2))
  psd[:, 1:-1] *= 2
  s = np.log(psd.T + 1e-7)
  want = (s - s.mean()) / (s.std() + 1e-9)
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)


# ---------------------------------------------------------------------------------------------
# Kaldi fbank
# ---------------------------------------------------------------------------------------------
def _fbank_reference(x: np.ndarray, rate: int) -> np.ndarray:
  """Kaldi fbank written out frame by frame and bin by bin (torchaudio's algorithm)."""
  win, shift, nfft = int(rate * 0.025), int(rate * 0.010), 512
  hann_sym = np.array([0.5 - 0.5 * np.cos(2 * np.pi * i / (win - 1)) for i in range(win)])
  mel = lambda f: 1127.0 * np.log(1 + f / 700.0)
  lo, hi = mel(20.0), mel(rate / 2)
  delta = (hi - lo) / 129
  weights = np.zeros((128, nfft // 2 + 1))
  for b in range(128):
    left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
    for k in range(nfft // 2):
      m = mel(k * rate / nfft)
      if left < m <= center:
        weights[b, k] = (m - left) / (center - left)
      elif center < m < right:
        weights[b, k] = (right - m) / (right - center)
  out = []
  for t in range(1 + (len(x) - win) // shift):
    f = x[t * shift:t * shift + win].astype(np.float64)
    f = f - f.mean()
    f = np.array([f[i] - 0.97 * f[max(i - 1, 0)] for i in range(win)])
    f = np.concatenate([f * hann_sym, np.zeros(nfft - win)])
    power = np.abs(_dft_rows(f[None], nfft)[0]) ** 2
    out.append(np.log(np.maximum(weights @ power, np.finfo(np.float32).eps)))
  return np.array(out)


def test_kaldi_fbank_matches_frame_by_frame_reference(wav16k):
  path, _ = wav16k
  x, rate = audio.read_wav(path)
  x = x - x.mean()
  got = audio.kaldi_fbank(x, rate)
  want = _fbank_reference(x[0], rate)
  assert got.shape == want.shape == (1 + (len(x[0]) - 400) // 160, 128)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  # The reader's feature: padded with zeros to 1024 frames, normalised, exposed [mel, time].
  feature = audio.AudioFeature("fbank", fbank_norm=(-4.5, 5.0))
  full = feature.from_wav(path)
  assert full.shape == (128, 1024)
  padded = np.concatenate([want, np.zeros((1024 - len(want), 128))])
  np.testing.assert_allclose(full, ((padded + 4.5) / 10.0).T, rtol=0, atol=1e-6)


def test_fbank_cuts_long_clips_to_1024_frames(tmp_path):
  path = str(tmp_path / "long.wav")
  fixtures_av.write_wav(path, 11.0, rate=8000)
  got = audio.AudioFeature("fbank").from_wav(path)  # 8 kHz: window 200, shift 80
  x, _ = audio.read_wav(path)
  want = audio.kaldi_fbank(x - x.mean(), 8000)[:1024]
  np.testing.assert_allclose(got, want.T.astype(np.float32), rtol=0, atol=0)


def test_too_short_for_fbank_names_the_file(tmp_path):
  path = str(tmp_path / "tiny.wav")
  fixtures_av.write_wav(path, 0.01)
  with pytest.raises(DataError, match=r"tiny.wav: too short .* expected at least 400 samples"):
    audio.AudioFeature("fbank").from_wav(path)


# ---------------------------------------------------------------------------------------------
# precomputed arrays
# ---------------------------------------------------------------------------------------------
def test_precomputed_presets_and_checks(tmp_path):
  fb = np.random.default_rng(0).normal(size=(1024, 128)).astype(np.float32)
  np.save(tmp_path / "a.npy", fb)
  got = audio.AudioFeature("fbank").from_file(str(tmp_path / "a.npy"), "npy")
  np.testing.assert_array_equal(got, fb.T)  # (time, mel) on disk -> [mel, time]
  spec = np.random.default_rng(1).normal(size=(257, 1004))
  with open(tmp_path / "b.pkl", "wb") as f:
    pickle.dump(spec, f)
  got = audio.AudioFeature("pmr_spec").from_file(str(tmp_path / "b.pkl"), "pkl")
  assert got.dtype == np.float32 and got.shape == (257, 1004)
  with pytest.raises(DataError, match=r"a.npy: expected shape \(257, 188\), found \(1024, 128\)"):
    audio.AudioFeature("ogm_stft").from_file(str(tmp_path / "a.npy"), "npy")
  custom = audio.AudioFeature("fbank", disk_shape=(64, 100))
  np.save(tmp_path / "c.npy", np.zeros((64, 100), np.float32))
  assert custom.from_file(str(tmp_path / "c.npy"), "npy").shape == (64, 100) == custom.shape
  fb[3, 5] = np.nan
  np.save(tmp_path / "nan.npy", fb)
  with pytest.raises(DataError, match="nan.npy.*non-finite"):
    audio.AudioFeature("fbank").from_file(str(tmp_path / "nan.npy"), "npy")


def test_pickles_that_run_code_are_refused(tmp_path):
  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned",))
  with open(tmp_path / "evil.pkl", "wb") as f:
    pickle.dump(Evil(), f)
  with pytest.raises(DataError, match="evil.pkl"):
    audio.AudioFeature("pmr_spec").from_file(str(tmp_path / "evil.pkl"), "pkl")
