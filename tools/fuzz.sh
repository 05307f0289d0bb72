#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (AddressSanitizer + UBSan) into
# build-fuzz/ and runs each for FUZZ_SECONDS (default 600), one after the other:
#   tools/fuzz.sh                       # tensor_decoder, image_decode, manifest_parse
#   FUZZ_SECONDS=60 tools/fuzz.sh image_decode
# Each run starts from tests/fuzz/corpus/<target> plus what earlier runs found
# (build-fuzz/corpus/<target>). A crash, leak, timeout or sanitizer report
# fails the script and its input is copied to tests/fuzz/regressions/<target>/,
# which the ordinary test suite replays (ctest -R fuzz_replay) once committed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-600}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tensor_decoder image_decode manifest_parse)
command -v clang++ >/dev/null || { echo "fuzz: clang is missing (apt-get install clang)" >&2; exit 1; }
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEENN_FUZZ=ON \
  > build-fuzz.cmake.log 2>&1 || { cat build-fuzz.cmake.log; exit 1; }
rm -f build-fuzz.cmake.log
cmake --build build-fuzz -j"${EENN_JOBS:-$(nproc)}" --target $(printf 'fuzz_%s ' "${targets[@]}")

status=0
summary=()
for t in "${targets[@]}"; do
  corpus="build-fuzz/corpus/$t"
  artifacts="build-fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  log="build-fuzz/fuzz_$t.log"
  echo "fuzz: $t for ${seconds} s (log $log)"
  set +e
  ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    "build-fuzz/bin/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "tests/fuzz/corpus/$t" > "$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  found=$(find "$artifacts" -type f | wc -l)
  summary+=("$t: ${runs} executions in ${seconds} s, coverage ${cov} edges, corpus $(ls "$corpus" | wc -l) inputs, exit ${rc}, ${found} crash inputs")
  if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
    status=1
    mkdir -p "tests/fuzz/regressions/$t"
    cp "$artifacts"/* "tests/fuzz/regressions/$t/" 2>/dev/null || true
    tail -40 "$log"
  fi
done
printf 'fuzz: %s\n' "${summary[@]}"
exit $status
