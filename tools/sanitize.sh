#!/usr/bin/env bash
# Builds every target with sanitizers into its own build folder and runs the
# whole test suite (ctest) under them:
#   tools/sanitize.sh address   # AddressSanitizer + UndefinedBehaviorSanitizer, build-asan/
#   tools/sanitize.sh thread    # ThreadSanitizer, build-tsan/
# Any sanitizer report fails the test that triggered it (halt_on_error /
# exitcode); the suppression files in tests/sanitizers/ name only code outside
# this repository (the Debian libraries are not instrumented).
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-}"
case "$kind" in
  address) sanitize="address,undefined"; dir="build-asan"; flags="-O2 -g -DNDEBUG" ;;
  # ThreadSanitizer: -O1 with line tables only compiles much faster than full
  # debug information, and reports still name file and line.
  thread) sanitize="thread"; dir="build-tsan"; flags="-O1 -g1 -DNDEBUG" ;;
  *) echo "usage: tools/sanitize.sh address|thread [ctest args...]" >&2; exit 2 ;;
esac
shift
# Packages and the normal build (some tests use its python helpers); EENN_SKIP_SETUP=1 skips it.
[ -n "${EENN_SKIP_SETUP:-}" ] || tools/setup.sh >/dev/null
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" \
  -DEENN_SANITIZE="$sanitize" > "$dir.cmake.log" 2>&1 \
  || { cat "$dir.cmake.log"; exit 1; }
rm -f "$dir.cmake.log"
cmake --build "$dir" -j"${EENN_JOBS:-$(nproc)}"

supp="$PWD/tests/sanitizers"
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:exitcode=86:detect_leaks=1:detect_odr_violation=0:suppressions=$supp/asan.supp"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=86:suppressions=$supp/ubsan.supp"
export TSAN_OPTIONS="halt_on_error=1:exitcode=86:second_deadlock_stack=1:suppressions=$supp/tsan.supp"
# Sanitized code runs several times slower: one test binary at a time per core,
# longer timeouts.
ctest --test-dir "$dir" --output-on-failure -j"${EENN_TEST_JOBS:-2}" --timeout 1800 "$@"
