#!/usr/bin/env bash
# Mutation testing of hvdlm's pure modules with mutmut 3 (the dev extra pins it): each module
# is mutated in a scratch copy of the repository and only the fast tests listed for it run
# against each mutant. Not part of `make test`; docs/testing.md has the latest results.
#
#   scripts/mutation.sh                   # every module below (hours on 2 cores)
#   scripts/mutation.sh requeue hostlist  # those modules, by name
#   make mutation MODULES="requeue pieces"
#
# MUTATION_DIR (default build/mutation) keeps one copy per module with mutmut's results: a
# rerun only tests the mutants whose function or tests changed. MUTATION_JOBS: mutants tested
# at once (default: the number of cores). Runs under nice -n 19. Each module's survivors:
#   cd build/mutation/NAME && ../../../.venv/bin/mutmut results && .venv/bin/mutmut show MUTANT
# The table at the end counts mutants generated, killed, survived, timed out and "no tests"
# (mutants in code that the listed tests reach only in a subprocess, which mutmut cannot see).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
MUTMUT=$(cd "$(dirname "$PY")" && pwd)/mutmut  # absolute: it runs inside each copy
OUT=${MUTATION_DIR:-$ROOT/build/mutation}
JOBS=${MUTATION_JOBS:-$(nproc)}

# name | files to mutate (globs) | pytest arguments choosing the tests that exercise them
# (paths, node ids; --deselect leaves out a test that trains a run, too slow per mutant)
MODULES="
requeue|hvdlm/cluster/requeue.py|tests/cluster/test_requeue.py tests/cluster/test_requeue_command.py
hostlist|hvdlm/cluster/hostlist.py|tests/cluster/test_hostlist.py tests/cluster/test_hostlist_edges.py
slurm_options|hvdlm/cluster/slurm_options.py|tests/slurm/test_submit.py::test_time_limits_in_sbatch_formats tests/slurm/test_submit.py::test_usage_errors_are_one_line tests/test_guarantees.py
pieces|hvdlm/text/pieces.py|tests/text/test_pieces.py
config|hvdlm/config.py|tests/test_config.py --deselect tests/test_config.py::test_run_config_toml_is_the_config_the_run_used tests/test_config_bounds.py tests/test_guarantees.py
pii|hvdlm/text/pii.py|tests/text/test_pii.py
tokenizer|hvdlm/text/tokenizer.py|tests/text/test_tokenizer.py
shards|hvdlm/text/shards.py|tests/text/test_shards.py
canaries|hvdlm/text/canaries.py|tests/test_audit.py
data|hvdlm/training/data.py|tests/training/test_data.py
optim|hvdlm/training/optim.py|tests/training/test_optim.py tests/training/test_clipping.py
scoring|hvdlm/training/scoring.py|tests/test_evaluate.py
checkpoint|hvdlm/training/checkpoint.py|tests/training/test_checkpoint.py
models|hvdlm/models/*.py|tests/models
explain|hvdlm/explain/*.py|tests/test_explain.py tests/test_explain_escaping.py
audit|hvdlm/audit/*.py|tests/test_audit.py
"

test -x "$MUTMUT" || { echo "mutation.sh: no $MUTMUT; pip install -e '.[dev]' first" >&2; exit 2; }
wanted=("$@")
known=$(echo "$MODULES" | cut -d'|' -f1 | xargs)
for name in "${wanted[@]}"; do
    [[ " $known " == *" $name "* ]] || { echo "mutation.sh: no module $name; one of: $known" >&2; exit 2; }
done

summary=()
while IFS='|' read -r name files tests; do
    [ -n "$name" ] || continue
    if [ ${#wanted[@]} -gt 0 ] && [[ " ${wanted[*]} " != *" $name "* ]]; then continue; fi
    work="$OUT/$name"
    echo "== $name: mutating $files; tests: $tests"
    mkdir -p "$work"
    # A fresh copy of the code and tests each time; mutmut's mutants/ cache stays.
    rm -rf "$work/hvdlm" "$work/tests" "$work/docs" "$work/slurm" "$work/scripts" "$work/benchmarks"
    (cd "$ROOT" && tar --exclude=__pycache__ --exclude=docs/scaling/data -cf - hvdlm tests docs slurm scripts \
        benchmarks setup.py pytest.ini) \
        | tar -xf - -C "$work"
    {
        echo "[mutmut]"
        echo "source_paths = hvdlm"
        echo "also_copy ="  # what tests read besides the code (docs, scripts, variables read)
        echo "    docs"
        echo "    slurm"
        echo "    scripts"
        echo "    benchmarks"
        echo "only_mutate ="
        for f in $files; do echo "    $f"; done
        echo "pytest_add_cli_args_test_selection ="
        for t in $tests; do echo "    $t"; done
        # argparse declarations are not mutated: their help texts are prose, and their
        # defaults are checked against docs/commands.md by tests/test_guarantees.py
        echo "do_not_mutate_patterns ="
        echo "    \.add_argument\("
        echo "    ArgumentParser\("
        # a mutant that loops forever (and may grow without bound) fails its test after 60 s
        echo "pytest_add_cli_args ="
        echo "    -p"
        echo "    no:cacheprovider"
        echo "    --timeout=60"
        # torch is not fork-safe once a test has used its thread pools
        echo "process_isolation = forkserver"
        echo "use_git_change_detection = false"
    } > "$work/setup.cfg.new"
    # mutmut numbers a function's mutants afresh when the settings change which ones exist,
    # and would give them the old numbers' results: start over then.
    if ! cmp -s "$work/setup.cfg.new" "$work/setup.cfg"; then rm -rf "$work/mutants"; fi
    mv "$work/setup.cfg.new" "$work/setup.cfg"
    (cd "$work" && HVDLM_TEST_NO_FORK=1 nice -n 19 "$MUTMUT" run --max-children "$JOBS" \
        > mutmut.log 2>&1) || echo "mutation.sh: mutmut failed for $name (see $work/mutmut.log)"
    counts=$(cd "$work" && "$MUTMUT" results --all true 2>/dev/null | awk -F': ' '
        NF > 1 { n++; s[$2]++ }
        END { printf "%d %d %d %d %d", n, s["killed"], s["survived"], s["timeout"],
              s["no tests"] }')
    summary+=("$name $counts")
done <<< "$MODULES"

printf '\n%-14s %9s %7s %9s %9s %9s\n' module generated killed survived "timed out" "no tests"
for row in "${summary[@]}"; do
    # shellcheck disable=SC2086
    printf '%-14s %9s %7s %9s %9s %9s\n' $row
done
