"""The AV-MNIST audio recipe: a 112 x 112 spectrogram of one spoken-digit recording, in numpy.

Reproduces `wav_to_spectrogram` of the AV-MNIST generator that MultiBench's files come from
(slyviacassell/_MFAS, datasets/avmnist_gen.py, commit 8d582c1), without librosa or matplotlib:

1. Samples at the file's own rate (FSDD: 8 kHz), int PCM scaled to [-1, 1) as librosa does;
   channels averaged. The generator mixes in ESC-50 noise with `noise_power=0` by default, i.e.
   adds nothing, so no noise is mixed here.
2. Window length and overlap chosen so that the signal gives exactly 112 frames: the smallest
   window `nperseg` (searched from ceil(L / 112) - 1 upward) that has an overlap `noverlap`
   (the smallest one) with 112 * nperseg - 111 * noverlap <= L < 113 * nperseg - 112 * noverlap.
   `mfas_segmentation` is the closed form of the generator's double loop.
3. matplotlib `specgram` (mlab PSD): symmetric Hann window (`np.hanning`), no detrending,
   FFT zero-padded to nfft = 2 * (112 - 1) + 1 = 223, one-sided 112 bins, |X|^2 doubled except
   at DC (and, a matplotlib quirk, except the last bin when `nperseg` is even), divided by the
   sample rate and by sum(window^2); then 10 * log10.
4. Rendering ('mfas', the default): the generator drew the dB image with imshow into a
   1.12 x 1.12 inch, 100 dpi figure (112 x 112 pixels, highest frequency in the top row),
   colour-scaled from the image's own min to max through the 'Greys' colormap (high power =
   dark), and kept the red channel as uint8; MultiBench divides by 255. We do the same with the
   colormap's 256-entry lookup table, so a pixel is `lut[floor(256 * (z - min) / (max - min))] /
   255` with row 0 = highest frequency. 'db' instead returns the min-max scaled dB values in
   [0, 1] (high power = 1, row 0 = 0 Hz, no 8-bit quantisation).

Checked against matplotlib 3.11 itself (the generator's specgram call, rendered with Agg, on
50 FSDD recordings): every pixel identical. Deviations: the generator ran a 2020 matplotlib whose
renderer we could not run; frames of pure digital silence (PSD 0, -inf dB, which would blank the
whole matplotlib image) are floored to the recording's lowest finite value, with a logged count
(no FSDD recording has one).
"""
from __future__ import annotations

import logging

import numpy as np

from data_pipelines.base import DataError

F_LENGTH = 112   # frequency bins
T_LENGTH = 112   # time frames
NFFT = (F_LENGTH - 1) * 2 + 1  # 223: odd, so the one-sided spectrum has exactly 112 bins
# matplotlib's 'Greys' (ColorBrewer, 9 colours from white to black), one channel, 0..255.
_GREYS = np.array([255, 240, 217, 189, 150, 115, 82, 37, 0], np.float64) / 255.0


def mfas_segmentation(num_samples: int, t_length: int = T_LENGTH) -> tuple[int, int]:
  """(nperseg, noverlap) giving exactly `t_length` frames, as the MFAS generator searches them.

  With window i and hop h = i - j the signal has (L - i) // h + 1 frames; the generator takes the
  smallest i, then the smallest overlap j (largest hop), with exactly t_length frames. For a
  given i the largest admissible hop is min(i, (L - i) // (t_length - 1)), and if that one
  gives too few frames no smaller hop can work, so the search is a single loop over i.
  """
  n = int(num_samples)
  if n < t_length:
    raise DataError(f"a recording of {n} samples cannot give {t_length} spectrogram frames")
  for i in range(max(-(-n // t_length) - 1, 1), n):
    hop = min(i, (n - i) // (t_length - 1))
    if hop >= 1 and t_length * hop + i > n:
      return i, i - hop
  raise DataError(f"no window gives {t_length} frames for {n} samples")  # unreachable for n >= T


def psd_db(samples: np.ndarray, rate: int, nperseg: int, noverlap: int,
           nfft: int = NFFT) -> np.ndarray:
  """float64 [nfft // 2 + 1 (odd nfft), frames] dB power spectral density, mlab conventions."""
  x = np.asarray(samples, np.float64)
  frames = np.lib.stride_tricks.sliding_window_view(x, nperseg)[::nperseg - noverlap]
  window = np.hanning(nperseg)
  spec = np.abs(np.fft.rfft(frames * window, n=nfft, axis=1)) ** 2  # [frames, bins]
  # matplotlib doubles every one-sided bin except DC, and also spares the last bin when the
  # *window* length is even (it tests NFFT, not pad_to).
  spec[:, 1:(None if nperseg % 2 else -1)] *= 2.0
  spec /= rate * np.sum(window ** 2)
  with np.errstate(divide="ignore"):
    return 10.0 * np.log10(spec.T)


def _greys_lut() -> np.ndarray:
  """uint8 [256]: matplotlib's 'Greys' lookup table as rendered to bytes (truncating).

  The interpolation is written in matplotlib's operation order: np.interp rounds differently and
  lands one grey level lower on two of the 256 entries.
  """
  knots = np.linspace(0.0, 1.0, len(_GREYS)) * 255
  xind = 255 * np.linspace(0.0, 1.0, 256)
  ind = np.searchsorted(knots, xind)[1:-1]
  distance = (xind[1:-1] - knots[ind - 1]) / (knots[ind] - knots[ind - 1])
  inner = distance * (_GREYS[ind] - _GREYS[ind - 1]) + _GREYS[ind - 1]
  lut = np.clip(np.concatenate([_GREYS[:1], inner, _GREYS[-1:]]), 0.0, 1.0)
  return (lut * 255).astype(np.uint8)


GREYS_LUT = _greys_lut()


def render_mfas(db: np.ndarray) -> np.ndarray:
  """uint8 [F, T]: the dB image as the generator saved it (top row = highest frequency)."""
  z = np.flipud(db)
  lo, hi = z.min(), z.max()
  if hi <= lo:  # a constant image: matplotlib maps it all to the colormap's first colour
    return np.full(z.shape, GREYS_LUT[0], np.uint8)
  index = np.floor((z - lo) / (hi - lo) * 256.0).astype(np.int64)
  return GREYS_LUT[np.clip(index, 0, 255)]


def render_db(db: np.ndarray) -> np.ndarray:
  """float32 [F, T] in [0, 1]: min-max scaled dB, row 0 = 0 Hz."""
  lo, hi = db.min(), db.max()
  return ((db - lo) / max(hi - lo, 1e-12)).astype(np.float32)


def avmnist_spectrogram(samples: np.ndarray, rate: int, render: str = "mfas",
                        where: str = "") -> np.ndarray:
  """One recording's 112 x 112 spectrogram: uint8 for render='mfas', float32 for 'db'."""
  nperseg, noverlap = mfas_segmentation(len(samples))
  db = psd_db(samples, rate, nperseg, noverlap)
  if db.shape != (F_LENGTH, T_LENGTH):  # guards the segmentation arithmetic
    raise DataError(f"{where}: spectrogram shape {db.shape}, expected {(F_LENGTH, T_LENGTH)}")
  silent = ~np.isfinite(db)
  if silent.any():
    if silent.all():
      raise DataError(f"{where}: the recording is digital silence (all samples zero)")
    logging.info("%s: %d silent spectrogram cells floored to the lowest finite dB value", where,
                 int(silent.sum()))
    db = np.where(silent, db[~silent].min(), db)
  if render == "mfas":
    return render_mfas(db)
  if render == "db":
    return render_db(db)
  raise ValueError(f"config.data.audio_render must be 'mfas' or 'db', found {render!r}")
