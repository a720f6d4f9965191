#!/bin/bash
# Submit the preprocessing chain: tokenizer step, K array tasks, merge (afterok dependencies).
#
#   HVDLM_INPUT="corpus/" HVDLM_OUT=data HVDLM_NUM_TASKS=8 \
#   HVDLM_PREPROCESS_ARGS="--redact-pii --dedup" slurm/preprocess.sh [extra sbatch options]
#
# Prints "tokenizer=ID tasks=ID merge=ID"; watch with `squeue`, logs go to logs/. The
# settings are those of slurm/preprocess.sbatch; extra arguments go to every sbatch call
# (e.g. --partition=cpu --account=me).
set -euo pipefail

[ -n "${HVDLM_INPUT:-}" ] || { echo "preprocess.sh: error: HVDLM_INPUT is not set" >&2; exit 2; }
[ -n "${HVDLM_OUT:-}" ] || { echo "preprocess.sh: error: HVDLM_OUT is not set" >&2; exit 2; }
K=${HVDLM_NUM_TASKS:-4}
[[ "$K" =~ ^[1-9][0-9]*$ ]] || { echo "preprocess.sh: error: HVDLM_NUM_TASKS must be >= 1" >&2; exit 2; }
export HVDLM_NUM_TASKS=$K
SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/preprocess.sbatch"
mkdir -p logs  # sbatch does not create the folder of --output

submit() { sbatch --parsable "$@" | cut -d';' -f1; }

tok=$(submit "$@" --export=ALL,HVDLM_STEP=tokenizer "$SCRIPT")
arr=$(submit "$@" --dependency="afterok:$tok" --array="0-$((K - 1))" \
      --output='logs/%x-%A_%a.out' --export=ALL,HVDLM_STEP=task "$SCRIPT")
mrg=$(submit "$@" --dependency="afterok:$arr" --export=ALL,HVDLM_STEP=merge "$SCRIPT")
echo "tokenizer=$tok tasks=$arr merge=$mrg"
