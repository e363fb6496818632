#!/usr/bin/env bash
# The fuzz stage of scripts/test (README, "Fuzzing"): builds the cargo-fuzz
# targets under fuzz/ and runs each for FUZZ_SECONDS (default 20) from the
# committed seeds in fuzz/seeds/<target>; fails if any target crashes (a
# panic, a failed property assertion, a timeout or running out of memory).
#
#   scripts/fuzz.sh                     every target, FUZZ_SECONDS each
#   FUZZ_SECONDS=600 scripts/fuzz.sh    a long run
#   scripts/fuzz.sh envelope sqs_sigv4  only these targets
#
# Only the stable toolchain is needed: cargo-fuzz passes nightly-only flags
# (-Zsanitizer, -Cpasses=sancov-module...), which RUSTC_BOOTSTRAP=1 admits.
# cargo-fuzz is installed from crates.io when missing. Targets build without
# a sanitizer (-s none): the project forbids unsafe code, so AddressSanitizer
# would only watch dependencies, at the price of a slower build and slower
# executions (a long run can add it: cargo fuzz run -s address ...).
# FUZZ_JOBS targets run at once (default: the CPU count).
# What a run finds (new inputs) goes to a scratch directory, never into the
# committed seeds; a crashing input is kept in fuzz/artifacts/<target>/ and
# its path printed (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -s none
# <target> <file>, from fuzz/).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-20}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$PWD/target"

# libfuzzer-sys compiles libFuzzer (C++) from source.
if ! command -v c++ >/dev/null 2>&1; then
  echo "==> installing g++ (libFuzzer is C++)"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null 2>&1 \
    || { echo "error: the fuzz targets need a C++ compiler (g++ or clang++) to build libFuzzer" >&2; exit 1; }
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked --quiet \
    || { echo "error: could not install cargo-fuzz (cargo install cargo-fuzz --locked)" >&2; exit 1; }
fi

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

# The workspace's `cargo fmt --all` does not reach this separate crate.
cargo fmt --check || { echo "error: fuzz/ is not formatted (cd fuzz && cargo fmt)" >&2; exit 1; }

start=$(date +%s)
echo "==> building fuzz targets (${targets[*]})"
cargo fuzz build -s none >/dev/null 2>build.log \
  || { cat build.log >&2; echo "error: the fuzz targets do not build" >&2; exit 1; }
rm -f build.log
echo "    built in $(( $(date +%s) - start ))s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# One target for $seconds; its verdict and figures in $scratch/<target>.result.
run_target() {
  local target=$1 log="$scratch/$1.log"
  mkdir -p "$scratch/$target" "artifacts/$target"
  if cargo fuzz run -s none "$target" "$scratch/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    local execs speed cov
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    echo "    $target: ok, $execs runs ($speed/s), coverage $cov" >"$scratch/$target.result"
  else
    { echo "    $target: CRASHED"; grep -E -A3 'panicked|Test unit written' "$log" | head -30 || tail -40 "$log"; } \
      >"$scratch/$target.result"
  fi
}

# The targets are single-threaded: run FUZZ_JOBS (default: the CPU count)
# at a time.
jobs="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
echo "==> fuzzing ${#targets[@]} targets for ${seconds}s each, $jobs at a time"
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_target "$target" &
done
wait
failed=()
for target in "${targets[@]}"; do
  cat "$scratch/$target.result"
  if grep -q ': CRASHED$' "$scratch/$target.result"; then failed+=("$target"); fi
done
echo "==> fuzzing took $(( $(date +%s) - start ))s in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: fuzz targets crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
