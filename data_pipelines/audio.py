"""Audio front ends of the audio-visual peers, in numpy and scipy (no librosa, no torchaudio).

Three features, one per peer recipe (docs/data.md, CREMA-D and Kinetics-Sounds), selected by
`AudioFeature.kind`:

  'ogm_stft'  OGM-GE / ARL on-the-fly spectrogram: load at 22050 Hz, tile to 3 s (66150 samples),
              clip to [-1, 1], librosa.stft(n_fft=512, hop_length=353) (periodic Hann window,
              frames centred by padding n_fft // 2 on both sides), log(|S| + 1e-7).
              -> float32 [257, 188].
  'pmr_spec'  PMR / DI-MML offline spectrogram: load at 22050 Hz, tile to 160000 samples, clip,
              scipy.signal.spectrogram(fs=22050, nperseg=512, noverlap=353) (its defaults: Tukey
              0.25 window, constant detrend, PSD density scaling), log(S + 1e-7), per-clip
              z-score. -> float32 [257, 1004].
  'fbank'     MLA / OGM-GE Kinetics-Sounds offline fbank: mean-removed waveform at the file's
              rate, torchaudio.compliance.kaldi.fbank(htk_compat=True, use_energy=False,
              window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10), zero-pad or
              cut to 1024 frames, optionally (x - mean) / (2 std). On disk (1024 time, 128 mel);
              exposed TRANSPOSED as float32 [128, 1024] so that every spectrogram in a batch is
              [freq, time].

Known deviations from the reference code (all documented where they happen):
  * Resampling uses scipy.signal.resample_poly (Kaiser-windowed polyphase FIR) where librosa used
    resampy 'kaiser_best' (<= 0.9) or soxr 'HQ' (>= 0.10); values differ slightly near Nyquist.
    Files already at the target rate are not resampled, as in librosa.
  * librosa <= 0.8 (what OGM-GE ran, PyTorch 1.8 era) pads centred frames by reflection; librosa
    >= 0.9 pads with zeros. `stft_pad_mode` picks ('reflect' default).
  * Arithmetic is float64 throughout and cast to float32 at the end; torchaudio's fbank runs in
    float32, so log-mel values differ from it by float32 rounding (~1e-5).
  * Clips too short for the peers' fixed tiling (shorter than 1 s for 'ogm_stft') are tiled as
    many times as needed; for every clip the peers handle, the result is identical to theirs.
"""
from __future__ import annotations

import dataclasses
import io
import math
import wave
from typing import Any

import numpy as np

from data_pipelines.base import DataError, check_array

KINDS = ("ogm_stft", "pmr_spec", "fbank")
FORMATS = ("wav", "npy", "pkl")

# ---------------------------------------------------------------------------------------------
# wav reading and resampling
# ---------------------------------------------------------------------------------------------


def read_wav(path: str, data: bytes | None = None) -> tuple[np.ndarray, int]:
  """Reads a PCM wav file with the stdlib `wave` module.

  Args:
    path: the file; with `data` given it only names the file in errors.
    data: the file's bytes when the caller has already read them (e.g. from a zip archive).
  Returns:
    (float32 [channels, n] in [-1, 1), sample rate). Integer PCM is scaled like soundfile and
    torchaudio do (int16 / 32768, 8-bit unsigned offset by 128).
  Raises:
    DataError naming the file when it is not a readable, non-empty PCM wav.
  """
  try:
    with wave.open(io.BytesIO(data) if data is not None else path, "rb") as f:
      channels, width, rate, frames = (f.getnchannels(), f.getsampwidth(), f.getframerate(),
                                       f.getnframes())
      raw = f.readframes(frames)
  except (wave.Error, EOFError, OSError) as e:
    raise DataError(f"{path}: unreadable wav: expected a PCM WAV file (8/16/24/32-bit integer), "
                    f"found: {e}") from e
  if len(raw) != frames * width * channels:
    raise DataError(f"{path}: truncated wav: header promises {frames} frames "
                    f"({frames * width * channels} bytes), found {len(raw)} bytes")
  if frames == 0:
    raise DataError(f"{path}: empty wav: expected at least one sample, found 0")
  if width == 1:
    x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
  elif width == 2:
    x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
  elif width == 3:
    b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
    v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    v = np.where(v >= 1 << 23, v - (1 << 24), v)
    x = v.astype(np.float32) / float(1 << 23)
  elif width == 4:
    x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
  else:
    raise DataError(f"{path}: unsupported wav sample width: expected 1-4 bytes, found {width}")
  return x.reshape(-1, channels).T, rate


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Polyphase resampling along the last axis (scipy.signal.resample_poly); float32 out."""
  if rate_in == rate_out:
    return x.astype(np.float32)
  from scipy import signal  # pylint: disable=import-outside-toplevel
  g = math.gcd(int(rate_in), int(rate_out))
  return signal.resample_poly(x, rate_out // g, rate_in // g, axis=-1).astype(np.float32)


def tile_to(x: np.ndarray, n: int) -> np.ndarray:
  """Repeats a 1-D signal and cuts it to n samples (= the peers' np.tile(x, k)[:n] whenever
  k * len(x) >= n; short clips get as many repeats as they need instead of a short output)."""
  return np.tile(x, -(-n // len(x)))[:n]


# ---------------------------------------------------------------------------------------------
# the three spectrograms
# ---------------------------------------------------------------------------------------------


def hann(n: int, periodic: bool) -> np.ndarray:
  """Hann window; periodic = scipy get_window('hann', fftbins=True) (librosa), symmetric =
  torch.hann_window(periodic=False) (Kaldi 'hanning')."""
  denom = n if periodic else n - 1
  return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / denom)


def stft_magnitude(y: np.ndarray, n_fft: int, hop: int, pad_mode: str) -> np.ndarray:
  """|librosa.stft(y, n_fft, hop)| with centred frames: float64 [n_fft // 2 + 1, frames]."""
  y = np.pad(y.astype(np.float64), n_fft // 2, mode=pad_mode)
  n_frames = 1 + (len(y) - n_fft) // hop
  idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
  spec = np.fft.rfft(y[idx] * hann(n_fft, periodic=True)[None, :], axis=1)
  return np.abs(spec).T


def ogm_stft(y: np.ndarray, *, seconds: float = 3.0, rate: int = 22050, n_fft: int = 512,
             hop: int = 353, pad_mode: str = "reflect") -> np.ndarray:
  """OGM-GE spectrogram of a mono signal already at `rate`: float32 [257, 188] by default."""
  y = np.clip(tile_to(y, int(round(seconds * rate))), -1.0, 1.0)
  return np.log(stft_magnitude(y, n_fft, hop, pad_mode) + 1e-7).astype(np.float32)


def pmr_spectrogram(y: np.ndarray, *, samples: int = 160000, rate: int = 22050,
                    nperseg: int = 512, noverlap: int = 353) -> np.ndarray:
  """PMR / DI-MML spectrogram (scipy.signal.spectrogram defaults), z-scored: float32 [257, 1004]."""
  from scipy import signal  # pylint: disable=import-outside-toplevel
  y = np.clip(tile_to(y, samples), -1.0, 1.0)
  _, _, s = signal.spectrogram(y, rate, nperseg=nperseg, noverlap=noverlap)
  s = np.log(s.astype(np.float64) + 1e-7)
  return ((s - s.mean()) / (s.std() + 1e-9)).astype(np.float32)


def _mel(f):
  return 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)


def kaldi_mel_banks(num_bins: int, padded_window: int, rate: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> np.ndarray:
  """Kaldi's triangular mel filters (no VTLN warp): float64 [num_bins, padded_window // 2 + 1];
  the Nyquist column is zero, as in torchaudio."""
  nyquist = 0.5 * rate
  if high_freq <= 0.0:
    high_freq += nyquist
  mel_low, mel_high = _mel(low_freq), _mel(high_freq)
  delta = (mel_high - mel_low) / (num_bins + 1)
  b = np.arange(num_bins, dtype=np.float64)[:, None]
  left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
  mel = _mel(rate / padded_window * np.arange(padded_window // 2))[None, :]
  weights = np.maximum(0.0, np.minimum((mel - left) / (center - left),
                                       (right - mel) / (right - center)))
  return np.pad(weights, ((0, 0), (0, 1)))


def kaldi_fbank(waveform: np.ndarray, rate: int, *, num_mel_bins: int = 128,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                preemphasis: float = 0.97, where: str = "waveform") -> np.ndarray:
  """torchaudio.compliance.kaldi.fbank on channel 0, with the MLA / AST settings.

  Settings: dither 0, remove_dc_offset, pre-emphasis 0.97 (first sample replicated), symmetric
  Hann ('hanning') window, window zero-padded to the next power of two, power spectrum, mel
  filters 20 Hz..Nyquist, log(max(x, float32 eps)), snip_edges (only whole frames).

  Args:
    waveform: float [channels, n] (or [n]).
    rate: its sample rate; window and shift in samples are int(rate * ms / 1000).
  Returns:
    float64 [frames, num_mel_bins] (time, mel), frames = 1 + (n - window) // shift.
  """
  x = np.atleast_2d(np.asarray(waveform, np.float64))[0]
  window = int(rate * frame_length_ms * 0.001)
  shift = int(rate * frame_shift_ms * 0.001)
  padded = 1 << (window - 1).bit_length()
  if len(x) < window:
    raise DataError(f"{where}: too short for a Kaldi fbank: expected at least {window} samples "
                    f"({frame_length_ms} ms at {rate} Hz), found {len(x)}")
  n_frames = 1 + (len(x) - window) // shift
  frames = x[np.arange(window)[None, :] + shift * np.arange(n_frames)[:, None]]
  frames = frames - frames.mean(axis=1, keepdims=True)
  frames = frames - preemphasis * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
  frames = frames * hann(window, periodic=False)[None, :]
  power = np.abs(np.fft.rfft(frames, n=padded, axis=1)) ** 2
  mel = power @ kaldi_mel_banks(num_mel_bins, padded, rate).T
  return np.log(np.maximum(mel, np.finfo(np.float32).eps))


def pad_or_cut(features: np.ndarray, length: int) -> np.ndarray:
  """Zero-pads or cuts axis 0 to `length` (the MLA / AST target_length step)."""
  if len(features) >= length:
    return features[:length]
  return np.pad(features, ((0, length - len(features)), (0, 0)))


# ---------------------------------------------------------------------------------------------
# precomputed arrays
# ---------------------------------------------------------------------------------------------
def load_pickled_array(path: str) -> np.ndarray:
  """A pickled numpy array, through `safe_pickle` (numpy arrays only: pickle can run code)."""
  from data_pipelines import safe_pickle  # pylint: disable=import-outside-toplevel
  obj = safe_pickle.load(path)
  if not isinstance(obj, np.ndarray):
    raise DataError(f"{path}: expected a pickled numpy array, found {type(obj).__name__}")
  return obj


def load_array(path: str, fmt: str) -> np.ndarray:
  """A precomputed per-clip array from a .npy (no pickles inside) or .pkl file."""
  if fmt == "npy":
    try:
      return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise DataError(f"{path}: unreadable .npy: expected a numeric numpy array, found: {e}") \
          from e
  if fmt == "pkl":
    return load_pickled_array(path)
  raise ValueError(f"audio format must be one of {FORMATS}, found {fmt!r}")


# ---------------------------------------------------------------------------------------------
# the feature as a reader uses it
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AudioFeature:
  """One audio feature recipe and how to get it from a file.

  Attributes:
    kind: 'ogm_stft' | 'pmr_spec' | 'fbank' (module docstring).
    sample_rate: rate wavs are resampled to before the feature; None = the preset's (22050 Hz
      for the spectrograms, the file's own rate for the fbank, as MLA/OGM-GE KS did).
    stft_pad_mode: 'reflect' (librosa <= 0.8, OGM-GE) or 'constant' (librosa >= 0.9).
    fbank_norm: (mean, std) -> (x - mean) / (2 std) after padding, applied to fbanks computed
      from wav (OGM-GE KS uses (-4.503877, 5.141276)); precomputed arrays are taken as they are.
    disk_shape: expected shape of precomputed arrays; None = the preset's ((257, 188),
      (257, 1004), (1024, 128)). A custom shape is taken as [freq, time] and not transposed.
  """
  kind: str = "ogm_stft"
  sample_rate: int | None = None
  stft_pad_mode: str = "reflect"
  fbank_norm: tuple[float, float] | None = None
  disk_shape: tuple[int, int] | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"audio_feature must be one of {KINDS}, found {self.kind!r}")
    if self.stft_pad_mode not in ("reflect", "constant"):
      raise ValueError(f"stft_pad_mode must be 'reflect' or 'constant', found "
                       f"{self.stft_pad_mode!r}")

  @property
  def preset_disk_shape(self) -> tuple[int, int]:
    return {"ogm_stft": (257, 188), "pmr_spec": (257, 1004), "fbank": (1024, 128)}[self.kind]

  @property
  def transposed(self) -> bool:
    """True when arrays on disk are (time, freq): the preset fbank."""
    return self.kind == "fbank" and self.disk_shape is None

  @property
  def shape(self) -> tuple[int, int]:
    """[n_freq, n_time] of the array the reader returns."""
    disk = self.disk_shape or self.preset_disk_shape
    return (disk[1], disk[0]) if self.transposed else tuple(disk)

  def params(self) -> dict[str, Any]:
    """Everything that changes the values, for the cache's compatibility check."""
    d = dataclasses.asdict(self)
    d["shape"] = list(self.shape)
    return d

  def from_wav(self, path: str) -> np.ndarray:
    """Computes the feature from a wav file: float32 [n_freq, n_time]."""
    x, rate = read_wav(path)
    return self.from_samples(x, rate, path)

  def from_samples(self, x: np.ndarray, rate: int, where: str) -> np.ndarray:
    """The feature of float32 [channels, n] samples in [-1, 1) at `rate` (as read_wav gives)."""
    path = where
    if self.kind == "fbank":
      x = x - x.mean()  # MLA / OGM-GE KS remove the mean of the whole (multi-channel) waveform
      target = self.sample_rate or rate
      x = resample(x[:1], rate, target)
      fb = pad_or_cut(kaldi_fbank(x, target, where=path), 1024)
      if self.fbank_norm is not None:
        fb = (fb - self.fbank_norm[0]) / (2.0 * self.fbank_norm[1])
      out = fb.T.astype(np.float32)
    else:
      target = self.sample_rate or 22050
      y = resample(x.mean(axis=0), rate, target)  # librosa.load(mono=True) averages channels
      if self.kind == "ogm_stft":
        out = ogm_stft(y, rate=target, pad_mode=self.stft_pad_mode)
      else:
        out = pmr_spectrogram(y, rate=target)
    return self.check(out, path)

  def from_file(self, path: str, fmt: str) -> np.ndarray:
    """The feature of one clip from a wav or a precomputed array file: float32 [F, T]."""
    if fmt == "wav":
      return self.from_wav(path)
    array = load_array(path, fmt)
    if not np.issubdtype(array.dtype, np.floating):
      raise DataError(f"{path}: expected a float spectrogram array, found dtype {array.dtype}")
    disk = self.disk_shape or self.preset_disk_shape
    check_array(array, where=path, shape=disk)
    if self.transposed:
      array = array.T
    return self.check(array.astype(np.float32), path)

  def check(self, array: np.ndarray, where: str) -> np.ndarray:
    return check_array(array, where=where, shape=self.shape, finite=True)
