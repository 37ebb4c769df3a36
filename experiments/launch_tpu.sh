#!/usr/bin/env bash
# Runs one clcr_jax config on every worker of a Cloud TPU pod slice (multi-host).
#
# Usage (from the repository root of your workstation):
#   experiments/launch_tpu.sh TPU_NAME ZONE --config=experiments/configs/<name>.py[:arg] \
#       --workdir=/mnt/clcr/<exp> [--config.a.b=value ...]
#
# What it does: `gcloud compute tpus tpu-vm ssh TPU_NAME --zone ZONE --worker=all --command ...`
# so that every host of the slice runs the same command at the same time:
#   cd $REMOTE_DIR && . $VENV/bin/activate && \
#     python -m clcr_jax.main <your args> --config.parallel.multihost=True
# `--config.parallel.multihost=True` makes clcr_jax.main call jax.distributed.initialize(),
# which on Cloud TPU finds the coordinator, the process count and this host's index by itself;
# then each host reads its own slice of the data and the train step runs over all chips.
#
# The workdir must be ONE directory that every host sees at the same path (train_lib writes it
# with os/open, so not gs:// directly): mount a bucket with gcsfuse, or use Filestore/NFS, at the
# same path on all workers. Only process 0 writes config.json, metrics.jsonl and results.json;
# orbax writes the checkpoints from all hosts together. Relaunching the same command resumes.
#
# Environment (all optional):
#   REMOTE_DIR  the repository on the workers, relative to the home directory or absolute
#               (default: clcr_jax)
#   VENV        the virtual environment on the workers (default: $REMOTE_DIR/.venv)
#   SETUP=1     first copy this repository's tracked files to every worker and install it:
#               python3 -m venv $VENV; pip install -e ".[tf]" "jax[tpu]"
#   PROJECT     passed as gcloud --project
#   DRY_RUN=1   print the gcloud commands instead of running them
#
# A sweep prints one such line per run:
#   python -m experiments.sweep experiments/sweeps/ablation.py:dataset=kinetics_sounds \
#       --workdir_root=/mnt/clcr/ablation_ks --print_commands --tpu=TPU_NAME --zone=ZONE
# (after the pattern of google-research/big_vision's run_tpu.sh: the same command on all hosts).
set -euo pipefail

if [[ $# -lt 3 || "$1" == -* || "$2" == -* ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 2
fi
TPU_NAME="$1"
ZONE="$2"
shift 2

has_config=0
has_workdir=0
for a in "$@"; do
  case "$a" in
    --config=*) has_config=1 ;;
    --workdir=*) has_workdir=1 ;;
    --config.parallel.multihost=*)
      echo "launch_tpu.sh sets --config.parallel.multihost=True itself; drop '$a'" >&2
      exit 2 ;;
  esac
done
if [[ $has_config -eq 0 || $has_workdir -eq 0 ]]; then
  echo "launch_tpu.sh: give --config=... and --workdir=... (see the header of $0)" >&2
  exit 2
fi

REMOTE_DIR="${REMOTE_DIR:-clcr_jax}"
VENV="${VENV:-$REMOTE_DIR/.venv}"
GCLOUD=(gcloud compute tpus tpu-vm)
EXTRA=(--zone "$ZONE")
if [[ -n "${PROJECT:-}" ]]; then
  EXTRA+=(--project "$PROJECT")
fi

run() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

q() { printf '%q' "$1"; }

if [[ "${SETUP:-0}" == "1" ]]; then
  repo_root="$(cd "$(dirname "$0")/.." && pwd)"
  archive="$(mktemp -t clcr_jax_XXXXXX.tar.gz)"
  (cd "$repo_root" && git ls-files -z | tar --null -czf "$archive" -T -)
  run "${GCLOUD[@]}" scp "$archive" "$TPU_NAME:clcr_jax_src.tar.gz" --worker=all "${EXTRA[@]}"
  rm -f "$archive"
  setup_cmd="cd ~ && mkdir -p $(q "$REMOTE_DIR") && tar -xzf clcr_jax_src.tar.gz -C $(q "$REMOTE_DIR")"
  setup_cmd+=" && { [ -d $(q "$VENV") ] || python3 -m venv $(q "$VENV"); }"
  setup_cmd+=" && . $(q "$VENV")/bin/activate && cd $(q "$REMOTE_DIR")"
  setup_cmd+=" && pip install -q -e '.[tf]' 'jax[tpu]'"
  run "${GCLOUD[@]}" ssh "$TPU_NAME" --worker=all "${EXTRA[@]}" --command "$setup_cmd"
fi

args=""
for a in "$@" --config.parallel.multihost=True; do
  args+=" $(q "$a")"
done
# Paths are relative to the home directory (or absolute) on every worker.
remote_cmd="cd ~ && . $(q "$VENV")/bin/activate && cd $(q "$REMOTE_DIR") && python -m clcr_jax.main$args"
run "${GCLOUD[@]}" ssh "$TPU_NAME" --worker=all "${EXTRA[@]}" --command "$remote_cmd"
