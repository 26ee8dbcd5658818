#!/usr/bin/env bash
# The mutation check: each tests/mutants/NN-name.patch is a single-point bug
# of the kind a developer really makes (its first line says what it breaks).
# For each one this applies it to a scratch copy of the tree (never the
# caller's working tree), builds, runs a fixed, fast selection of the suite
# and records whether the selection caught the mutant and which test did.
#
#   tests/mutants/run.sh               every patch, then the table and the score
#   tests/mutants/run.sh 03 hub relay  the patches whose file name contains any of these
#   tests/mutants/run.sh --check       only check that every patch still applies
#   tests/mutants/run.sh --list        list the patches and what each breaks
#
# The selection, in stages that stop at the first that fails: `lib`, the
# library's unit tests; `sim`, the simulated OS (SOCKLOOP_SIM_CASES, 200
# here unless set); `suite`, the suite's modules in SUITE_MODULES below.
# MUTANT_STAGES="sim" runs only some (to see what the simulation alone
# catches, say). A mutant that fails to build is reported and left out of
# the score; one whose tests run past MUTANT_TIMEOUT (seconds per stage,
# default 600) counts as caught, marked as a timeout.
#
# The scratch copy and a target dir of its own (debug profile, so each
# mutant recompiles only the sockloop crate) live in MUTANTS_DIR (default
# target/mutants); the table goes to MUTANTS_DIR/results.md and each
# mutant's output to MUTANTS_DIR/logs/.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel)"
dir="${MUTANTS_DIR:-$repo/target/mutants}"
timeout_s="${MUTANT_TIMEOUT:-600}"
sim_cases="${SOCKLOOP_SIM_CASES:-200}"
stages="${MUTANT_STAGES:-lib sim suite}"
# The suite's modules a developer runs after touching the reactor, a codec
# or a service: in-process servers and the binary's echo, relay and hub
# paths. Left out for time: TLS, threads, upgrades, activation, the
# load generator and the tours.
SUITE_MODULES=(codec_props:: fuzz_corpus:: proxy_protocol:: echo:: framed:: ordering::
    partial_input:: hub:: relay:: relay_upstreams:: lifecycle:: hostile_peers::
    metrics:: proxy_listener::)

mode=run
baseline=yes
patterns=()
for arg in "$@"; do
    case "$arg" in
        --check) mode=check ;;
        --list) mode=list ;;
        --no-baseline) baseline=no ;;
        -h | --help)
            sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "unknown option $arg (see --help)" >&2
            exit 2
            ;;
        *) patterns+=("$arg") ;;
    esac
done

patches=()
for p in "$here"/*.patch; do
    name="$(basename "$p")"
    if [ ${#patterns[@]} -eq 0 ]; then
        patches+=("$p")
        continue
    fi
    for pattern in "${patterns[@]}"; do
        if [[ "$name" == *"$pattern"* ]]; then
            patches+=("$p")
            break
        fi
    done
done
if [ ${#patches[@]} -eq 0 ]; then
    echo "no patch matches: ${patterns[*]}" >&2
    exit 2
fi

if [ "$mode" = list ]; then
    for p in "${patches[@]}"; do
        printf '%s\n    %s\n' "$(basename "$p" .patch)" "$(head -n 1 "$p")"
    done
    exit 0
fi

# Every patch must still apply to the tree as it is: a mutation that no
# longer applies measures nothing, and must be mended, not skipped.
stale=()
for p in "${patches[@]}"; do
    git -C "$repo" apply --check "$p" 2>/dev/null || stale+=("$(basename "$p")")
done
if [ ${#stale[@]} -gt 0 ]; then
    echo "these mutation patches no longer apply to the tree; remake them with git diff:" >&2
    printf '  %s\n' "${stale[@]}" >&2
    exit 1
fi
echo "all ${#patches[@]} mutation patches apply"
[ "$mode" = check ] && exit 0

# The scratch copy: the tracked and untracked (not ignored) files as they
# are in the working tree, in a git repository of its own so that a patch
# is applied and reverted with git. tar keeps the files' times, so cargo
# rebuilds only what a patch touched.
tree="$dir/tree"
rm -rf "$tree" "$dir/logs"
mkdir -p "$tree" "$dir/logs"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$tree"
git -C "$tree" init -q
git -C "$tree" add -A
git -C "$tree" -c user.name=mutants -c user.email=mutants@localhost commit -qm base

export CARGO_TARGET_DIR="$dir/target"
export SOCKLOOP_SIM_CASES="$sim_cases"
# The tests must run the binary built from the mutant, from a fixed seed.
unset SOCKLOOP_TEST_BIN SOCKLOOP_SIM_SEED SOCKLOOP_SIM_DEBUG RUST_LOG

# Runs one stage under the timeout, output to log $1: 0 passed, 1 failed,
# 2 timed out.
stage() {
    local log="$1"
    shift
    local status=0
    (cd "$tree" && timeout --kill-after=10 "$timeout_s" "$@") >>"$log" 2>&1 || status=$?
    case "$status" in
        0) return 0 ;;
        124 | 137) return 2 ;;
        *) return 1 ;;
    esac
}

# The tests a failed stage names, the first three and how many more: those
# that failed, or for a timeout those still running.
culprits() {
    local log="$1" found
    found="$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | sort -u)"
    if [ -z "$found" ]; then
        found="$(grep -E 'has been running for over' "$log" | sed -E 's/^test (.*) has been running.*/\1/' | sort -u)"
    fi
    local n
    n="$(grep -c . <<<"$found" || true)"
    if [ "$n" -eq 0 ]; then
        echo -
    elif [ "$n" -le 3 ]; then
        paste -sd' ' - <<<"$found"
    else
        echo "$(head -n 3 <<<"$found" | paste -sd' ' -) (+$((n - 3)) more)"
    fi
}

# Builds and runs the selection on the tree as it is now, stage by stage,
# each building only what it runs (the library's tests alone build in a
# fraction of the suite's time); sets result, stage_name and caught_by.
run_selection() {
    local log="$1" target filters status
    result=caught
    caught_by=-
    for stage_name in $stages; do
        case "$stage_name" in
            lib) target=--lib filters= ;;
            sim) target="--test suite" filters=sim ;;
            suite) target="--test suite" filters="${SUITE_MODULES[*]}" ;;
            *)
                echo "unknown stage $stage_name in MUTANT_STAGES" >&2
                exit 2
                ;;
        esac
        echo "== $stage_name: cargo test $target -- $filters" >>"$log"
        # shellcheck disable=SC2086 # split into words on purpose
        if ! (cd "$tree" && cargo test --locked --no-run $target) >>"$log" 2>&1; then
            result=unbuildable
            return
        fi
        status=0
        # shellcheck disable=SC2086
        stage "$log" cargo test --locked $target -- $filters || status=$?
        case "$status" in
            0) continue ;;
            1) caught_by="$(culprits "$log")" ;;
            2) caught_by="timeout: $(culprits "$log")" ;;
        esac
        return
    done
    result=MISSED
    stage_name=-
}

results="$dir/results.md"
if [ "$baseline" = yes ]; then
    echo "baseline: the selection on the tree without a mutant (log: $dir/logs/baseline.log)"
    start=$SECONDS
    run_selection "$dir/logs/baseline.log"
    if [ "$result" != MISSED ]; then
        echo "the selection does not pass without a mutant ($result at $stage_name: $caught_by);" \
            "every mutant would look caught. See $dir/logs/baseline.log" >&2
        exit 1
    fi
    echo "baseline passes ($((SECONDS - start)) s)"
fi

{
    echo "| mutant | result | stage | caught by | seconds |"
    echo "|---|---|---|---|---|"
} >"$results"
caught=0
missed=0
unbuildable=0
for p in "${patches[@]}"; do
    name="$(basename "$p" .patch)"
    log="$dir/logs/$name.log"
    head -n 1 "$p" >"$log"
    git -C "$tree" apply "$p"
    start=$SECONDS
    run_selection "$log"
    seconds=$((SECONDS - start))
    git -C "$tree" checkout -q -- .
    case "$result" in
        caught) caught=$((caught + 1)) ;;
        MISSED) missed=$((missed + 1)) ;;
        unbuildable) unbuildable=$((unbuildable + 1)) ;;
    esac
    row="| $name | $result | $stage_name | $caught_by | $seconds |"
    echo "$row" >>"$results"
    echo "$row"
done

scored=$((caught + missed))
{
    echo
    echo "Score: $caught of $scored caught ($((scored ? 100 * caught / scored : 0))%)," \
        "$missed missed, $unbuildable unbuildable;" \
        "stages: $stages; SOCKLOOP_SIM_CASES=$sim_cases; tree $(git -C "$repo" rev-parse --short HEAD)."
} >>"$results"
echo
cat "$results"
[ "$unbuildable" -eq 0 ]
