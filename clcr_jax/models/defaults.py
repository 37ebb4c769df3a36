"""Model configuration defaults. Experiment configs override only what differs.

Every choice the paper leaves open is a field here with this project's default (marked DEFAULT;
docs/model.md lists them by section);
fields named after a paper symbol say so.
"""
from __future__ import annotations

import ml_collections

from clcr_jax.models import bert
from clcr_jax.models import mbt
from clcr_jax.models import misa
from clcr_jax.models import mult


# Where this project's defaults depart from the model as the paper writes it, the paper's form
# (and the first release's defaults): a run recorded before these fields existed ran it, and the
# PyTorch reference in benchmarks/ implements it. README, "CLCR against late fusion", has the
# experiments behind each departure.
PAPER_FORM = {
    "budget.participation_init": 0.68,
    "inter_cad.summary_norm": True,
    "inter_cad.value_scale": "mean",
    "inter_cad.level_scale": "mean",
    "inter_cad.proj_init": "lecun",
    "inter_cad.summary_proj": "learned",
}


def modality(kind: str, backbone: str = "tcn") -> ml_collections.ConfigDict:
  """One modality's encoder: input layout and backbone (see models/backbones.py)."""
  return ml_collections.ConfigDict({"kind": kind, "backbone": backbone})


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # 'clcr' | 'late_fusion' | 'flat_attention' | 'mult' | 'mbt' | 'misa' (models/__init__.py)
  c.name = "clcr"
  # 'classification' | 'regression' | 'segment_classification', or 'auto': from the dataset.
  c.task = "auto"
  c.num_classes = 0               # 0: from the dataset
  c.num_segments = 0              # S for segment_classification (AVE: 10); 0: from the dataset
  # Modality name -> {kind, backbone}; modalities are ordered by name. Empty: every modality
  # of the dataset, with its reader's kind and the TCN backbone.
  c.modalities = ml_collections.ConfigDict()

  c.d = 128                       # common width d. DEFAULT (Widths): 128 MSA, 512 AV
  c.d_shared = 0                  # d_sh; 0 -> d // 2. DEFAULT (Widths)
  c.d_private = 0                 # d_pr; 0 -> d // 2. DEFAULT (Widths)
  c.num_heads = 4                 # DEFAULT (Widths): 4 for d=128, 8 for d=512
  c.dropout = 0.1                 # DEFAULT (Widths)
  c.ffn_mult = 2                  # exchange FFN hidden = ffn_mult * width. DEFAULT (Exchange)
  # Whether the Stiefel split U_sh, U_pr,m learns (DEFAULT) or stays at its random orthonormal
  # initialisation (a fixed split; the layers around it still learn).
  c.stiefel_trainable = True
  # The exchange block's norms: 'post' LN(x + f(x)) (DEFAULT, Exchange) | 'pre' x + f(LN(x)).
  c.exchange_norm = "post"
  # The exchange block's output projections (attention out, FFN fc2): 'default' (lecun normal)
  # | 'zero' (the block adds nothing at init: with 'pre' norms it starts as the identity).
  c.exchange_init = "default"
  c.private_ffn = False           # optional per-modality FFN on private streams. DEFAULT (Exchange)
  c.max_len = 0                   # positional table length; 0 -> length seen at init
  c.pos_init_std = 0.02           # P_l init N(0, 0.02). DEFAULT (Hierarchy)
  c.attention = "auto"            # 'auto' | 'blockwise' | 'einsum' | 'xla' | 'cudnn' (layers.py)

  c.tcn = ml_collections.ConfigDict()
  c.tcn.width = 0                 # 0 -> d
  c.tcn.kernel_size = 3           # DEFAULT (Backbones)
  c.tcn.dilations = (1, 2, 4)     # receptive fields 3 -> 7 -> 15. DEFAULT (Backbones)
  c.resnet = ml_collections.ConfigDict()
  c.resnet.base_width = 64        # 64 = standard ResNet-18
  c.resnet.spatial_grid = 1       # clip tokens per frame = grid**2. DEFAULT
  # Backbone 'bert' (kind 'token_ids', models/bert.py): the text levels are BERT hidden states.
  c.bert = ml_collections.ConfigDict()
  # A local Hugging Face directory (config.json + model.safetensors), e.g. bert-base-uncased;
  # its config.json fills the sizes below at launch. Nothing is downloaded.
  c.bert.path = ""
  c.bert.random_init = False      # allow path '' (random weights; benchmarks, smoke tests)
  # Hidden states used as the shallow/mid/deep levels (0 = embeddings' output, l = after layer
  # l): the paper's 4/8/12 of a 12-layer BERT; (2, 4, 6) for a 6-layer one.
  c.bert.levels = (4, 8, 12)
  # No gradient, no dropout, no optimiser state for BERT; else it is fine-tuned at
  # config.train.bert_learning_rate.
  c.bert.freeze = False
  # Sizes (Hugging Face config.json names: vocab_size, hidden_size, num_hidden_layers, ...),
  # bert-base-uncased's by default (models/bert.py's Bert); overwritten from bert.path.
  for field in bert.HF_FIELDS:
    c.bert[field] = getattr(bert.Bert, field)

  c.budget = ml_collections.ConfigDict()
  # B_l / T at init. 0.001 (DEFAULT): the exchange starts almost closed and its learnable ratio
  # opens it as far as training asks; the paper's optimum r ~ 0.68 cost 12 points of valid
  # accuracy on the default synthetic generator and 5 on the variant (README, CLCR against late
  # fusion).
  c.budget.participation_init = 0.001
  c.budget.kappa_init = 1.0           # kappa_l = softplus(k_l) at init. DEFAULT (Budget)
  c.budget.theta_init = -1.0          # theta_l; < 0 -> sqrt(d_sh). DEFAULT (Budget)
  c.budget.method = "bisection"       # capped-simplex solver: "bisection" (fast) | "sort" (exact)
  # Token scores a~: 'sigmoid' = sigmoid(kappa (||h_sh|| - theta)) (DEFAULT, Budget), or 'zscore' =
  # kappa * (||h_sh|| standardised over the row's valid tokens).
  c.budget.scores = "sigmoid"
  # 'at_most': sum alpha <= B (never binds while the scores sum below B); 'exactly': sum alpha = B.
  c.budget.constraint = "at_most"
  # Keys/values of the exchange: 'all' valid shared tokens of the other modalities (DEFAULT,
  # Exchange), or 'budget': only the tokens their own budget admits, values scaled by alpha.
  c.budget.pool = "all"

  c.inter_cad = ml_collections.ConfigDict()
  # The five fields below are DEFAULTs departing from the paper's form (PAPER_FORM), each of which
  # slowed or cost CLCR against late fusion on the synthetic benchmark (README, CLCR against late
  # fusion): together they let the pooled backbone features reach the head unchanged at init.
  # LayerNorm on each pooled summary s_l^m = LN(W mean_t h) (the paper's form: True).
  c.inter_cad.summary_norm = False
  # z_sh = scale * sum_m beta_m W_v s_m: 'mean' (scale 1, as the paper writes it; beta sums to 1)
  # or 'sum' (scale M, so uniform beta gives the sum of the modalities, not their average).
  c.inter_cad.value_scale = "sum"
  # s-_m = scale * sum_l omega_l s_l^m: 'mean' (scale 1; omega sums to 1) or 'sum' (scale L).
  c.inter_cad.level_scale = "sum"
  # Kernel init of the summary projections W, W' and of W_v, W_u: 'lecun' (random) |
  # 'identity' | 'orthogonal' (norm-preserving; inter_cad.projection_init).
  c.inter_cad.proj_init = "identity"
  # The summary map W [w, d]: 'learned' (the paper's W) | 'fixed' (the pooled stream zero-padded
  # to d, no parameters: one learned map fewer between the backbone and the head).
  c.inter_cad.summary_proj = "fixed"

  # The paper's Table 3 ablations, as switches of this one model.
  c.ablation = ml_collections.ConfigDict()
  c.ablation.no_hierarchy = False     # one level (the deep one)
  c.ablation.no_intraced = False      # no shared/private split, no exchange
  c.ablation.no_intercad = False      # uniform level / modality weights, no private gates
  c.ablation.full_mix = False         # tokens of all levels in one pool
  c.ablation.dense_budget = False     # every valid token exchanges (alpha = 1)

  # The baselines' own hyperparameters, with their reference code's defaults (cited in each
  # module's docstring). late_fusion / flat_attention head: 'mlp' (TaskHead, DEFAULT) |
  # 'linear' (one Linear on the concatenation, OGM-GE's classifier; needed by train.modulation).
  c.fusion_head = "mlp"
  c.mult = mult.default_config()
  c.mbt = mbt.default_config()
  c.misa = misa.default_config()

  c.dtype = "float32"             # activations: 'float32' | 'bfloat16'
  c.param_dtype = "float32"
  c.remat = False                 # recompute backbones in the backward pass (ResNet: per block)
  return c
