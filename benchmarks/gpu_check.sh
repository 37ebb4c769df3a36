#!/usr/bin/env bash
# The GPU benchmark, as one script for a short lease on one H100/H200 (about 9 minutes).
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Needs jax[cuda], flax, optax, torch (CUDA) and ml-collections; no TensorFlow (batches are
# synthetic and device-resident). Where ml-collections is missing, put its wheel in .whl/
# (pip download ml-collections==1.1.0 -d .whl): it is installed to /tmp/site first.
# Writes OUT_DIR/{gpu.txt, cremad_bf16.md/.json, cremad_fp32.md, mosi.md, *.log}.
set -uo pipefail
out="${1:-${OUT:-/tmp/clcr_gpu}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ! python3 -c "import ml_collections" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.version.cuda)"
} 2>&1 | tee "$out/gpu.txt"

# 1. The target: CREMA-D shape in bfloat16, clcr_jax vs PyTorch eager (autocast) and
#    torch.compile, plus XLA's attention instead of cuDNN's for comparison.
timeout 330 python3 -m benchmarks.run --config cremad --device gpu --dtype bfloat16 \
    --repeats 3 --jax-variant 'xla_attention:attention=xla' \
    --out "$out/cremad_bf16.md" --json "$out/cremad_bf16.json" 2>&1 | tee "$out/cremad_bf16.log"
# 2. CREMA-D in float32 (TF32 matmuls on both sides), JAX vs eager.
timeout 120 python3 -m benchmarks.run --config cremad --device gpu --dtype float32 \
    --repeats 2 --impls jax,torch --out "$out/cremad_fp32.md" 2>&1 | tee "$out/cremad_fp32.log"
# 3. MOSI shape in bfloat16, JAX vs eager.
timeout 110 python3 -m benchmarks.run --config mosi --device gpu --dtype bfloat16 \
    --repeats 2 --impls jax,torch --out "$out/mosi.md" 2>&1 | tee "$out/mosi.log"
