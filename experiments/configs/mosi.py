"""CMU-MOSI: sentiment regression from text, audio and vision (MMSA or MulT pickles).

Launch (MMSA `unaligned_50.pkl`, the default; docs/model.md, Backbones: unaligned is primary):
  python -m clcr_jax.main --config=experiments/configs/mosi.py \\
      --config.data.root=/data/MMSA/MOSI --workdir=runs/mosi/seed1111
MMSA's five seeds 1111-1115 (report the mean and the population std, x100, as MMSA does):
  for s in 1111 1112 1113 1114 1115; do
    python -m clcr_jax.main --config=experiments/configs/mosi.py --config.seed=$s \\
        --config.data.root=/data/MMSA/MOSI --workdir=runs/mosi/seed$s
  done
Variants (`--config=experiments/configs/mosi.py:<arg>`, comma-separated):
  aligned                  MMSA `aligned_50.pkl` (the DLF codebase's setting; docs/data.md asks for
                           both), or MulT's `mosi_data.pkl` with format=mult
  format=mult              MulT pickles (`mosi_data_noalign.pkl` / `mosi_data.pkl`, GloVe text);
                           format=auto takes whichever of MMSA / MulT is in the root
  model=late_fusion        reference fusions on the same backbones (also flat_attention,
                           mult, mbt, misa)
  text=bert                the paper's text levels: MMSA `text_bert` token ids [3, 50] through
                           a pre-trained BERT, hidden states 4 / 8 / 12 as the three levels,
                           fine-tuned at train.bert_learning_rate (5e-5, MMSA's; the rest 1e-3)
                           with train.bert_weight_decay (None: train.weight_decay).
                           Point it at a local Hugging Face directory (config.json +
                           model.safetensors; nothing is downloaded), e.g.
                           --config.model.bert.path=/models/bert-base-uncased
                           (a 6-layer model: --config.model.bert.levels='(2, 4, 6)';
                           --config.model.bert.freeze=True keeps BERT fixed)
  tiny                     a seconds-long CPU smoke setting (d = 16, batch 8)
  e.g. --config=experiments/configs/mosi.py:aligned,format=mult

Data (docs/data.md, MOSI and MOSEI; config.data fields documented in
data_pipelines/readers/mosi.py):
  root default ../shared/data/MOSI (the reader also looks in <root>/Processed/, MMSA's layout)
  splits train 1284 / valid 229 / test 686 (CMU standard folds; the fingerprint names the version)
  text   MMSA `text`: BERT features [50, 768] (MulT: GloVe [50, 300]); mask from `text_bert`
  audio  COVAREP 5-d; vision Facet 20-d; unaligned T = 375 / 500 with length arrays,
         aligned T = 50 for every modality; audio -inf -> 0 as MMSA does
  label  `regression_labels` in [-3, 3]; L1 loss (docs/model.md, Losses; MMSA family)
Model (docs/model.md, Backbones and Widths): d = 128, 4 heads, d_sh = d_pr = 64; every modality is
Linear(D -> d) + a
  3-stage dilated TCN (k 3, dilations 1/2/4: receptive fields 3 / 7 / 15 frames) whose stage
  outputs are the three levels. DEVIATION: the paper's text levels are hidden states of a
  fine-tuned BERT (layers 4/8/12): that is `text=bert`. The default (`text=features`) takes
  the text levels from MMSA's precomputed BERT features through the same TCN instead.
Optimisation (paper, docs/model.md, Optimisation): SGD momentum 0.9, lr 1e-3, wd 1e-4, batch 64,
100 epochs,
  StepLR(70, x0.1).
Selection (MMSA `KeyEval = "Loss"`): validation every epoch; the checkpoint with the lowest
  validation loss (select_metric 'auto' = loss for regression) is evaluated once on test.
  MMSA also early-stops after 8 epochs without improvement; here all epochs run and the best is
  kept, which selects the same checkpoint whenever MMSA would have stopped after it.
Metrics: MMSA metricsTop (Has0_acc_2, Has0_F1_score, Non0_acc_2, Non0_F1_score, Mult_acc_5,
  Mult_acc_7, MAE, Corr); --config.eval.regression_variant=mult (MulT/MISA's swapped F1) or dmd
  for those papers' key sets.
"""
from __future__ import annotations

from clcr_jax import models
from experiments.configs import _benchmark
from experiments.configs import common

SEEDS = (1111, 1112, 1113, 1114, 1115)  # MMSA's default seeds (docs/data.md, Metrics)
DATA_DIRS = {"mosi": "MOSI", "mosei": "MOSEI"}


def msa_config(dataset: str, arg: str | None):
  """The MOSI / MOSEI config (they differ only in the files the reader looks for)."""
  arg = common.parse_arg(arg, model="clcr", format="mmsa", aligned=False, tiny=False,
                         text="features")
  if arg.format not in ("mmsa", "mult", "auto"):
    raise ValueError(f"format={arg.format!r}: expected 'mmsa', 'mult' or 'auto'")
  if arg.text not in ("features", "bert"):
    raise ValueError(f"text={arg.text!r}: expected 'features' (MMSA's BERT features through a "
                     "TCN) or 'bert' (token ids through a pre-trained BERT)")
  if arg.text == "bert" and arg.format == "mult":
    raise ValueError("text=bert needs MMSA pickles (`text_bert`); MulT's hold GloVe vectors")
  config = common.paper_recipe(common.base_config())
  config.seed = SEEDS[0]
  config.model.name = _benchmark.check_model(arg.model)

  _benchmark.set_data(config, dataset, dict(
      root=_benchmark.data_root(DATA_DIRS[dataset]),
      path="",                 # an explicit pickle file instead of root's standard names
      format=arg.format,       # 'mmsa' | 'mult' | 'auto'
      aligned=arg.aligned,
      # 'text' (BERT features) | 'text_bert' (ids, mask, segment ids; the 'bert' backbone)
      text_field="text_bert" if arg.text == "bert" else "text",
      padding_side="auto",     # 'auto' | 'left' | 'right'
      nan_to_zero=False,
  ))
  config.data.train_split = "train"
  config.data.test_split = "test"

  config.model.task = "regression"
  config.model.d = 128
  config.model.num_heads = 4
  for m in ("text", "audio", "vision"):
    config.model.modalities[m] = models.modality("sequence", "tcn")
  if arg.text == "bert":
    config.model.modalities.text = models.modality("token_ids", "bert")
    config.model.bert.levels = (4, 8, 12)  # the paper's, for a 12-layer BERT
  config.loss.regression = "l1"

  config.eval.select_on = "valid"
  config.eval.select_metric = "auto"   # regression: validation loss, min (MMSA KeyEval "Loss")
  config.eval.regression_variant = "mmsa"

  if arg.tiny:
    _benchmark.scale_down(config)
  return config


def get_config(arg: str | None = None):
  return msa_config("mosi", arg)
