#!/bin/bash
# Submit the preprocessing chain: tokenizer step, K array tasks, merge (afterok dependencies).
#
#   slurm/preprocess.sh --tasks 8 --sbatch --partition=cpu -- corpus/ more.jsonl.zst \
#       --out data --redact-pii --dedup
#
# Before `--`: --tasks K (array tasks, default 4) and --sbatch OPTION (repeatable; goes to every
# sbatch call, e.g. --sbatch --account=me). After `--`: hvdlm.preprocess's own arguments, one
# shell word each (spaces in a path are kept). Prints "tokenizer=ID tasks=ID merge=ID"; each
# job's output lands in the current folder (hvdlm-preprocess-ID.out).
#
# The environment form still works: HVDLM_INPUT="corpus/" HVDLM_OUT=data HVDLM_NUM_TASKS=8
# HVDLM_PREPROCESS_ARGS="--redact-pii" slurm/preprocess.sh [sbatch options] (see
# slurm/preprocess.sbatch).
set -euo pipefail

die() { echo "preprocess.sh: error: $*" >&2; exit 2; }

K=${HVDLM_NUM_TASKS:-4}
sbatch_opts=()
preprocess_args=()
if [ -n "${HVDLM_INPUT:-}" ]; then
    [ -n "${HVDLM_OUT:-}" ] || die "HVDLM_OUT is not set"
    sbatch_opts=("$@")
else
    while [ $# -gt 0 ]; do
        case "$1" in
            --tasks) [ $# -ge 2 ] || die "--tasks needs a value"; K=$2; shift 2 ;;
            --tasks=*) K=${1#*=}; shift ;;
            --sbatch) [ $# -ge 2 ] || die "--sbatch needs a value"; sbatch_opts+=("$2"); shift 2 ;;
            --sbatch=*) sbatch_opts+=("${1#*=}"); shift ;;
            --) shift; preprocess_args=("$@"); break ;;
            *) die "unknown option '$1' (expected --tasks K, --sbatch OPTION, then -- and hvdlm.preprocess's arguments)" ;;
        esac
    done
    [ ${#preprocess_args[@]} -gt 0 ] || die "give hvdlm.preprocess's arguments after --, e.g. -- corpus/ --out data"
fi
[[ "$K" =~ ^[1-9][0-9]*$ ]] || die "the number of tasks must be >= 1, not '$K'"
export HVDLM_NUM_TASKS=$K
SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/preprocess.sbatch"

submit() { sbatch --parsable "$@" | cut -d';' -f1; }

tok=$(submit "${sbatch_opts[@]}" --export=ALL,HVDLM_STEP=tokenizer "$SCRIPT" "${preprocess_args[@]}")
arr=$(submit "${sbatch_opts[@]}" --dependency="afterok:$tok" --array="0-$((K - 1))" \
      --output='%x-%A_%a.out' --export=ALL,HVDLM_STEP=task "$SCRIPT" "${preprocess_args[@]}")
mrg=$(submit "${sbatch_opts[@]}" --dependency="afterok:$arr" --export=ALL,HVDLM_STEP=merge \
      "$SCRIPT" "${preprocess_args[@]}")
echo "tokenizer=$tok tasks=$arr merge=$mrg"
