"""clcr_jax vs the PyTorch reference: train/eval throughput, compile time, memory, FLOPs.

    python -m benchmarks.run [--config mosi|cremad|synthetic|all] [--device cpu|gpu]
        [--dtype float32|bfloat16[,...]] [--repeats N] [--impls jax,torch,torch_compile]
        [--jax-variant NAME:key=value;key=value ...] [--out results.md]

In one process, per configuration and dtype: builds the JAX train step exactly as training does
(train_lib.make_train_step compiled by parallel.DataParallel: jit, donated state) and the
PyTorch reference (benchmarks/torch_reference) eager and under torch.compile, with the JAX
initial parameters copied into PyTorch; warms each up (JAX: lower + compile; PyTorch: first
steps, including torch.compile's compilation); then runs `--repeats` rounds in which every
implementation trains for the same number of steps on a device-resident synthetic batch, the
order rotating between rounds, and likewise for eval. Prints a markdown table of examples/s as
median (min-max) over the rounds, and the per-round JAX / PyTorch ratios. JAX FLOPs per step
come from XLA's cost analysis (cross-checked by hand for one layer); on GPU the run also times a
large bf16 matmul and reports the train step's MFU against it. In CPU mode with
--config all, the CREMA-D input pipeline (benchmarks/input_pipeline.py) is timed too.

Model-config variants of the JAX side are named with --jax-variant, e.g.
  --jax-variant 'xla_attn:attention=xla' --jax-variant 'sort:budget.method=sort'
  --jax-variant 'no_proj:ablation.dense_budget=True' (the step without the budget projection)
Values are parsed as Python literals when possible. `--baselines 1` (the default on CPU) adds
MulT and MBT (configs.BASELINE_VARIANTS) as JAX variants, so each table shows what they cost
next to CLCR at the same batch; they have no PyTorch twin (the torch rows are CLCR's).
"""
from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import statistics
import sys
import time

from benchmarks import _env

if __name__ == "__main__":
  _pre = argparse.ArgumentParser(add_help=False)
  _pre.add_argument("--device", default="cpu")
  _pre.add_argument("--xla-flags", default="")
  _known, _ = _pre.parse_known_args()
  if _known.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _known.xla_flags).strip()
  _env.configure(_known.device)

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from benchmarks import configs  # pylint: disable=wrong-import-position
from benchmarks import timing  # pylint: disable=wrong-import-position

IMPLS = ("jax", "torch", "torch_compile")


def parse_variant(text: str) -> tuple[str, dict]:
  name, _, body = text.partition(":")
  overrides = {}
  for item in filter(None, body.split(";")):
    key, _, value = item.partition("=")
    try:
      overrides[key.strip()] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key.strip()] = value
  return name, overrides


def matmul_rate(device: str, dtype: str) -> float:
  """FLOP/s of a large jnp.dot in `dtype` (bf16 on GPU: the MFU denominator)."""
  n = 8192 if device == "gpu" else 1024
  dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
  a = jax.random.normal(jax.random.key(0), (n, n), dt)
  b = jax.random.normal(jax.random.key(1), (n, n), dt)
  f = jax.jit(lambda a, b: a @ b)
  f(a, b).block_until_ready()
  reps = 10 if device == "gpu" else 3
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(reps):
      out = f(a, b)
    out.block_until_ready()
    best = min(best, (time.perf_counter() - start) / reps)
  return 2 * n**3 / best


def layer_check(bench) -> str:
  """One layer, counted by hand and by XLA's cost analysis (forward, float32)."""
  from benchmarks.jax_impl import cost_flops  # pylint: disable=import-outside-toplevel
  b = bench.batch_size
  cfg = bench.config.model
  if bench.name == "cremad":
    f, h, w, c = bench.shapes["visual"]
    n = b * f
    x = jax.ShapeDtypeStruct((n, h, w, c), jnp.float32)
    k = jax.ShapeDtypeStruct((7, 7, c, cfg.resnet.base_width), jnp.float32)
    conv = lambda x, k: jax.lax.conv_general_dilated(
        x, k, (2, 2), [(3, 3), (3, 3)], dimension_numbers=("NHWC", "HWIO", "NHWC"))
    xla = cost_flops(jax.jit(conv).lower(x, k).compile())
    oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    hand = 2 * n * oh * ow * cfg.resnet.base_width * 7 * 7 * c
    what = (f"visual ResNet-18 conv1 (7x7/2, {c}->{cfg.resnet.base_width}) on {n} frames "
            f"{h}x{w}: 2*N*{oh}*{ow}*{cfg.resnet.base_width}*7*7*{c}")
  else:
    from clcr_jax.models import layers  # pylint: disable=import-outside-toplevel
    mods = list(bench.shapes)
    m = "text" if "text" in mods else mods[0]
    tq = bench.shapes[m][0]
    tk = sum(bench.shapes[o][0] for o in mods if o != m)
    dsh = cfg.d_shared or cfg.d // 2
    mha = layers.MultiHeadAttention(cfg.num_heads, dsh, "einsum")
    q = jnp.zeros((b, tq, dsh))
    kv = jnp.zeros((b, tk, dsh))
    mask = jnp.ones((b, tk), bool)
    params = mha.init(jax.random.key(0), q, kv, mask)
    xla = cost_flops(jax.jit(mha.apply).lower(params, q, kv, mask).compile())
    hand = 2 * b * (2 * tq * dsh * dsh + 2 * tk * dsh * dsh + 2 * tq * tk * dsh)
    what = (f"exchange attention of {m!r} (one level): q,out {tq}x{dsh}x{dsh}, k,v "
            f"{tk}x{dsh}x{dsh}, logits+values 2x{tq}x{tk}x{dsh}, batch {b}")
  ratio = f"{xla / hand:.3f}" if xla else "n/a"
  return (f"FLOPs cross-check, {what}: by hand {hand / 1e9:.3f} GFLOP, XLA cost analysis "
          f"{(xla or 0) / 1e9:.3f} GFLOP (XLA / hand = {ratio}; XLA also counts softmax, "
          f"bias and mask elementwise work)")


def steps_for(seconds: float, step_s: float, lo: int = 1, hi: int = 200) -> int:
  return int(min(hi, max(lo, round(seconds / max(step_s, 1e-6)))))


def run_one(name: str, dtype: str, args, variants) -> dict:
  """Benchmarks one configuration in one dtype; returns the results dict."""
  from benchmarks import jax_impl  # pylint: disable=import-outside-toplevel
  device = args.device
  results = {"config": name, "dtype": dtype, "device": device, "impls": {}}
  impls = []
  jax_names = []
  for vname, overrides in variants:
    overrides = dict(overrides)
    if dtype == "bfloat16":
      overrides.setdefault("dtype", "bfloat16")
    bench = configs.get(name, device, args.batch, overrides)
    host_batch = configs.make_batch(bench)
    print(f"[{name}/{dtype}] building {vname} ({overrides or 'defaults'})", flush=True)
    impl = jax_impl.JaxImpl(vname, bench, host_batch, device)
    impls.append(impl)
    jax_names.append(vname)
  base_bench = configs.get(name, device, args.batch)
  results["description"] = base_bench.description
  results["batch"] = base_bench.batch_size
  torch_impls = [i for i in args.impls if i.startswith("torch")]
  if torch_impls:
    import torch  # pylint: disable=import-outside-toplevel
    from benchmarks import torch_impl  # pylint: disable=import-outside-toplevel
    if device == "gpu" and dtype == "float32" and args.torch_tf32:
      torch.set_float32_matmul_precision("high")
      torch.backends.cudnn.allow_tf32 = True
    host_batch = configs.to_torch_layout(base_bench, configs.make_batch(base_bench))
    for impl_name in torch_impls:
      print(f"[{name}/{dtype}] building {impl_name}", flush=True)
      impls.append(torch_impl.TorchImpl(
          impl_name, base_bench, host_batch, impls[0].variables, device, dtype,
          compile_mode=args.compile_mode if impl_name == "torch_compile" else None))
  # Warm-up (compilation included), one implementation at a time. A failing variant or
  # torch.compile is reported and dropped; the main JAX step failing ends the run.
  results["failed"] = {}
  for impl in list(impls):
    start = time.perf_counter()
    try:
      impl.warm_up()
    except Exception as e:  # pylint: disable=broad-except
      if impl is impls[0]:
        raise
      print(f"[{name}/{dtype}] {impl.name} FAILED: {e!r:.400}", flush=True)
      results["failed"][impl.name] = f"{e!r:.300}"
      impls.remove(impl)
      if impl.name in jax_names:
        jax_names.remove(impl.name)
      continue
    impl.info["warmup_total_s"] = time.perf_counter() - start
    print(f"[{name}/{dtype}] {impl.name}: warm-up {impl.info['warmup_total_s']:.1f} s "
          f"(first train step {impl.info['first_train_s']:.2f} s)", flush=True)
  # Steps per timed segment, from a short timing of each implementation.
  plan = {}
  for impl in impls:
    t_train = timing.timed(lambda: impl.train(1))
    t_eval = timing.timed(lambda: impl.evaluate(1))
    plan[impl.name] = (steps_for(args.seconds, t_train), steps_for(args.seconds / 2, t_eval))
  b = base_bench.batch_size
  train_rates = {i.name: [] for i in impls}
  eval_rates = {i.name: [] for i in impls}
  for r in range(args.repeats):
    order = impls[r % len(impls):] + impls[:r % len(impls)]
    for impl in order:
      n = plan[impl.name][0]
      train_rates[impl.name].append(n * b / timing.timed(lambda: impl.train(n)))
    for impl in order:
      n = plan[impl.name][1]
      eval_rates[impl.name].append(n * b / timing.timed(lambda: impl.evaluate(n)))
    print(f"[{name}/{dtype}] round {r + 1}/{args.repeats}: " + ", ".join(
        f"{k} {v[-1]:.1f}" for k, v in train_rates.items()) + " train ex/s", flush=True)
  for impl in impls:
    results["impls"][impl.name] = dict(impl.info, train=train_rates[impl.name],
                                       eval=eval_rates[impl.name], steps=plan[impl.name])
  results["jax_variants"] = jax_names
  try:
    results["layer_check"] = layer_check(base_bench)
  except Exception as e:  # pylint: disable=broad-except
    results["layer_check"] = f"FLOPs cross-check failed: {e!r}"
  return results


def ratio_spread(num, den) -> str:
  return timing.spread([a / b for a, b in zip(num, den)], "{:.2f}")


def fmt_table(res: dict, peak_rate: float | None, rate_label: str) -> str:
  """Markdown for one configuration/dtype."""
  lines = [f"### {res['config']} — {res['dtype']} — {res['device']} — batch {res['batch']}",
           "", res["description"], "",
           "| implementation | train ex/s | eval ex/s | compile / warm-up (s) | first eval (s) "
           "| peak memory | train GFLOP/step (XLA) | MFU |",
           "|---|---|---|---|---|---|---|---|"]
  for name, r in res["impls"].items():
    if "compile_s" in r:
      warm = (f"lower {r['lower_s']:.1f} + compile {r['compile_s']:.1f} "
              f"(eval compile {r['eval_compile_s']:.1f})")
    else:
      warm = f"first step {r['first_train_s']:.1f}"
    if r.get("peak_bytes") is not None:
      mem = timing.human_bytes(r["peak_bytes"])
    else:
      mem = f"RSS +{timing.human_bytes(r.get('train_rss_growth'))}"
      if r.get("train_plan_bytes"):
        mem += f" (XLA plan {timing.human_bytes(r['train_plan_bytes'])})"
    flops = r.get("train_flops")
    gflop = f"{flops / 1e9:.1f}" if flops else "—"
    mfu = "—"
    if flops and peak_rate:
      rate = statistics.median(r["train"]) / res["batch"] * flops
      mfu = f"{rate / peak_rate:.1%} ({rate / 1e12:.2f} TFLOP/s)"
    lines.append(f"| {name} | {timing.spread(r['train'])} | {timing.spread(r['eval'])} | "
                 f"{warm} | {r['first_eval_s']:.2f} | {mem} | {gflop} | {mfu} |")
  lines.append("")
  jax_names = res["jax_variants"]
  base = res["impls"][jax_names[0]]
  for other in ("torch", "torch_compile"):
    if other in res["impls"]:
      o = res["impls"][other]
      label = "PyTorch eager" if other == "torch" else "torch.compile"
      lines.append(f"* {jax_names[0]} / {label}: train {ratio_spread(base['train'], o['train'])}"
                   f"x, eval {ratio_spread(base['eval'], o['eval'])}x (median (min–max) of "
                   f"per-round ratios)")
  for v in jax_names[1:]:
    o = res["impls"][v]
    lines.append(f"* {v} / {jax_names[0]}: train {ratio_spread(o['train'], base['train'])}x, "
                 f"eval {ratio_spread(o['eval'], base['eval'])}x")
  if peak_rate:
    lines.append(f"* measured {rate_label} matmul rate: {peak_rate / 1e12:.2f} TFLOP/s "
                 "(MFU = XLA FLOPs per step x steps/s / this rate)")
  for impl_name, error in res.get("failed", {}).items():
    lines.append(f"* {impl_name} failed and was left out: {error}")
  lines.append(f"* {res['layer_check']}")
  lines.append("")
  return "\n".join(lines)


def input_pipeline_table(clips: int, batch: int, epochs: int) -> str:
  """The CREMA-D-style input pipeline alone (raw files and prepare cache), examples/s/core."""
  import tempfile  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from benchmarks import input_pipeline as ip  # pylint: disable=import-outside-toplevel
  from data_pipelines import prepare, registry  # pylint: disable=import-outside-toplevel
  cores = os.cpu_count() or 1
  steps = epochs * (clips // batch)
  lines = [f"### input pipeline — CREMA-D style from files — cpu ({cores} cores)", "",
           f"{clips} clips (3 s 16 kHz wav + 3 JPEG 224x224 frames each), batch {batch}, "
           f"{steps} steps after one warm-up batch; tf.data backend, OGM-GE spectrogram + 3 "
           "frames with random resized crop", "",
           "| source | modalities | examples/s (runs) | examples/s/core |", "|---|---|---|---|"]
  with tempfile.TemporaryDirectory() as root:
    ip.make_fixture(root, clips, 224)
    prepare.prepare("cremad", root, None, (), {"image_size": 224}, workers=cores,
                    progress=False)
    for modalities in [("audio", "visual"), ("audio",)]:
      fields = dict(name="cremad", root=root, image_size=224, num_frames=3,
                    modalities=modalities)
      readers = {"raw files": registry.get_reader(ml_collections.ConfigDict(
                     dict(fields, cache="off"))),
                 "prepare cache": registry.get_reader(ml_collections.ConfigDict(
                     dict(fields, cache="require")))}
      values = {k: [] for k in readers}
      for _ in range(2):
        for k, reader in readers.items():
          values[k].append(ip.throughput(reader, batch, steps))
      for k, v in values.items():
        lines.append(f"| {k} | {'+'.join(modalities)} | {timing.spread(v)} | "
                     f"{max(v) / cores:.1f} |")
  lines.append("")
  return "\n".join(lines)


def header(args) -> str:
  import importlib.metadata as md  # pylint: disable=import-outside-toplevel
  versions = []
  for pkg in ("jax", "jaxlib", "flax", "optax", "torch"):
    try:
      versions.append(f"{pkg} {md.version(pkg)}")
    except md.PackageNotFoundError:
      pass
  dev = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  card = getattr(dev, "device_kind", str(dev))
  return "\n".join([
      f"## clcr_jax benchmark — {datetime.date.today().isoformat()}", "",
      f"* command: `python -m benchmarks.run {' '.join(sys.argv[1:])}`",
      f"* device: {args.device} — JAX device {card}; host CPU {cpu}, {os.cpu_count()} cores",
      f"* versions: {', '.join(versions)}, Python {platform.python_version()}",
      f"* env: NPROC={os.environ.get('NPROC')} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
      f"* {args.repeats} interleaved rounds after warm-up; ~{args.seconds:g} s of training per "
      "implementation per round; numbers are median (min–max) over rounds", ""])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="all", help="mosi|cremad|synthetic|all, or a list")
  parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
  parser.add_argument("--dtype", default="float32", help="float32, bfloat16, or both: a list")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--impls", default=",".join(IMPLS))
  parser.add_argument("--jax-variant", action="append", default=[],
                      help="NAME:key=value;key=value (model config overrides); repeatable")
  parser.add_argument("--baselines", type=int, default=-1,
                      help="time MulT and MBT next to CLCR (-1: on CPU only)")
  parser.add_argument("--batch", type=int, default=0, help="0: the configuration's default")
  parser.add_argument("--seconds", type=float, default=0.0,
                      help="training time per implementation per round (0: 3 CPU, 1 GPU)")
  parser.add_argument("--compile-mode", default="default",
                      help="torch.compile mode: default | reduce-overhead | max-autotune")
  parser.add_argument("--torch-tf32", type=int, default=1,
                      help="GPU float32: let PyTorch use TF32 like XLA's default precision")
  parser.add_argument("--input-pipeline", type=int, default=-1,
                      help="time the input pipeline (-1: with --config all on CPU)")
  parser.add_argument("--pipeline-clips", type=int, default=64)
  parser.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts")
  parser.add_argument("--out", default="", help="also write the markdown here")
  parser.add_argument("--json", default="", help="also write raw results here")
  args = parser.parse_args(argv)
  args.impls = [i for i in args.impls.split(",") if i]
  unknown = set(args.impls) - set(IMPLS)
  if unknown or "jax" not in args.impls:
    parser.error(f"--impls must include jax and name only {IMPLS}; found {args.impls}")
  if not args.seconds:
    args.seconds = 1.0 if args.device == "gpu" else 3.0
  if args.device == "gpu" and jax.devices()[0].platform != "gpu":
    parser.error(f"--device gpu but JAX runs on {jax.devices()[0].platform}")
  names = list(configs.NAMES) if args.config == "all" else args.config.split(",")
  dtypes = args.dtype.split(",")
  variants = [("jax", {})] + [parse_variant(v) for v in args.jax_variant]
  if args.baselines == 1 or (args.baselines == -1 and args.device == "cpu"):
    variants += [(n, dict(o)) for n, o in configs.BASELINE_VARIANTS]

  out = [header(args)]
  print(out[0], flush=True)
  rates = {}
  all_results = []
  for dtype in dtypes:
    if args.device == "gpu":
      rates.setdefault("bfloat16", matmul_rate("gpu", "bfloat16"))
  for name in names:
    for dtype in dtypes:
      res = run_one(name, dtype, args, variants)
      all_results.append(res)
      peak = rates.get("bfloat16") if args.device == "gpu" else None
      text = fmt_table(res, peak, "bf16")
      out.append(text)
      print(text, flush=True)
  if args.input_pipeline == 1 or (args.input_pipeline == -1 and args.config == "all"
                                  and args.device == "cpu"):
    text = input_pipeline_table(args.pipeline_clips, 16, 2)
    out.append(text)
    print(text, flush=True)
  if args.out:
    with open(args.out, "w") as f:
      f.write("\n".join(out))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"results": all_results, "matmul_rates": rates}, f, indent=1, default=str)
  return 0


if __name__ == "__main__":
  sys.exit(main())
