"""CMU-MOSEI: sentiment regression from text, audio and vision (MMSA or MulT pickles).

Launch (MMSA `unaligned_50.pkl`, the default):
  python -m clcr_jax.main --config=experiments/configs/mosei.py \\
      --config.data.root=/data/MMSA/MOSEI --workdir=runs/mosei/seed1111
MMSA's five seeds 1111-1115 (report the mean and the population std, x100, as MMSA does):
  for s in 1111 1112 1113 1114 1115; do
    python -m clcr_jax.main --config=experiments/configs/mosei.py --config.seed=$s \\
        --config.data.root=/data/MMSA/MOSEI --workdir=runs/mosei/seed$s
  done
Variants (`:arg`, comma-separated; the same as mosi.py):
  aligned        MMSA `aligned_50.pkl` (or MulT `mosei_senti_data.pkl` with format=mult)
  format=mult    MulT pickles (`mosei_senti_data_noalign.pkl` / `mosei_senti_data.pkl`);
                 format=auto takes whichever is in the root
  model=late_fusion | flat_attention | mult | mbt | misa, tiny
  text=bert      MMSA `text_bert` ids through a local pre-trained BERT (hidden states 4/8/12 as
                 the text levels): --config.model.bert.path=/models/bert-base-uncased

Data (docs/data.md, MOSI and MOSEI):
  root default ../shared/data/MOSEI (or <root>/Processed/)
  splits train 16326 / valid 1871 / test 4659 (MMSA / MulT; SDK re-extractions differ slightly,
         the fingerprint names which one the file matches)
  text   BERT features [50, 768] (MulT: GloVe [50, 300]); audio COVAREP 74-d, vision Facet 35-d;
         unaligned T = 500 / 500 with length arrays, aligned T = 50
  label  `regression_labels` in [-3, 3]; L1 loss
Model, optimisation, selection and metrics: as mosi.py (d = 128, 4 heads, TCN levels for every
  modality, text from precomputed BERT features; paper recipe; lowest validation loss; MMSA
  metricsTop). The whole pickle is held in memory (about 8.5 GB as float32 for the unaligned file).
"""
from __future__ import annotations

from experiments.configs import mosi


def get_config(arg: str | None = None):
  return mosi.msa_config("mosei", arg)
