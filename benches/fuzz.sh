#!/usr/bin/env bash
# Fuzzes every parser that sees untrusted bytes (the targets in fuzz/fuzz_targets/,
# bodies in crates/weir-fuzz) for N minutes each, one target at a time, one libFuzzer
# job, under `nice -n 19`, then prints one markdown table: target, minutes,
# executions, crashes, corpus size.
#
# Usage: benches/fuzz.sh [minutes-per-target] [target ...]
#        (default: 10 minutes, every target; `cargo fuzz list` from fuzz/ names them)
# Knobs: FUZZ_TIMEOUT=10 (seconds one input may take before it counts as a hang),
#        FUZZ_MALLOC_MB=512 (one allocation above this counts as a crash),
#        FUZZ_RSS_MB=2048, FUZZ_JOBS is deliberately absent: the box is shared.
#
# Installs on first use what it needs and `.ci/run` does not: the nightly toolchain
# (rustup), cargo-fuzz (cargo install) and a C++ compiler for libfuzzer-sys (apt).
# The committed corpus (fuzz/corpus/<target>) is read, and what the fuzzer finds new
# goes to fuzz/corpus-grown/<target>; crashes land in fuzz/artifacts/<target>/ with the full log next to
# them (fuzz/artifacts/<target>.log). Both are gitignored: minimize what is worth
# keeping with `cargo +nightly fuzz cmin <target> fuzz/corpus-grown/<target>` and copy
# a small part into fuzz/corpus/<target>, which CI replays (crates/weir-fuzz/tests).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ=$REPO/fuzz
MINUTES=${1:-10}
shift || true
[[ $MINUTES =~ ^[0-9]+$ ]] && ((MINUTES > 0)) || {
    echo "fuzz.sh: minutes must be a positive integer, not '$MINUTES'" >&2
    exit 2
}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
FUZZ_MALLOC_MB=${FUZZ_MALLOC_MB:-512}
FUZZ_RSS_MB=${FUZZ_RSS_MB:-2048}

log() { printf 'fuzz.sh: %s\n' "$*" >&2; }

SUDO=()
[[ $(id -u) -ne 0 ]] && SUDO=(sudo)

# --- tools -----------------------------------------------------------------
if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain (cargo-fuzz needs -Zsanitizer)"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    nice -n 19 cargo install cargo-fuzz --locked
fi
if ! command -v c++ >/dev/null; then
    log "installing a C++ compiler (libfuzzer-sys builds libFuzzer)"
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++
fi

cd "$FUZZ"
mapfile -t ALL < <(cargo +nightly fuzz list)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
    printf '%s\n' "${ALL[@]}" | grep -qx -- "$t" || {
        echo "fuzz.sh: no target '$t' (have: ${ALL[*]})" >&2
        exit 2
    }
done

# -a: debug assertions and overflow checks on, so an overflow is a crash too.
log "building the targets (nightly, ASan, debug assertions)"
nice -n 19 cargo +nightly fuzz build -a >&2
# The targets run from their binaries, not through `cargo fuzz run`: no rebuild between
# targets, so the whole run fuzzes the code as it was built here.
BIN=$FUZZ/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release

ROWS=()
for t in "${TARGETS[@]}"; do
    grown=$FUZZ/corpus-grown/$t
    artifacts=$FUZZ/artifacts/$t
    mkdir -p "$grown" "$artifacts"
    before=$(find "$artifacts" -maxdepth 1 -type f | wc -l)
    logfile=$FUZZ/artifacts/$t.log
    log "$t: $MINUTES min (log: ${logfile#"$REPO"/})"
    start=$(date +%s)
    # One job, no -fork; a crash ends the run early (its time is in the table).
    set +e
    # New inputs go to the first directory; the committed corpus is only read.
    nice -n 19 "$BIN/$t" "$grown" "$FUZZ/corpus/$t" \
        -max_total_time=$((MINUTES * 60)) -timeout="$FUZZ_TIMEOUT" \
        -malloc_limit_mb="$FUZZ_MALLOC_MB" -rss_limit_mb="$FUZZ_RSS_MB" \
        -print_final_stats=1 -artifact_prefix="$artifacts/" >"$logfile" 2>&1
    status=$?
    set -e
    ran=$((($(date +%s) - start + 30) / 60))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logfile" | tail -1)
    if [[ -z $execs ]]; then
        # Killed or crashed before the final stats: the last status line counts.
        execs=$(grep -o '^#[0-9]*' "$logfile" | tail -1 | tr -d '#')
    fi
    crashes=$(($(find "$artifacts" -maxdepth 1 -type f | wc -l) - before))
    # libFuzzer's own count at the end: inputs in its corpus / their total size.
    corpus=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$logfile" | tail -1 | sed 's/corp: //')
    note=""
    ((status != 0 && crashes == 0)) && note=" (exit $status, see log)"
    ROWS+=("| $t | $ran | ${execs:-0} | $crashes$note | ${corpus:-?} |")
done

echo "| target | minutes | executions | crashes | corpus (inputs/size) |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
