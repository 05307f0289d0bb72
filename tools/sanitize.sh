#!/usr/bin/env bash
# Builds every target with sanitizers into its own build folder and runs the
# whole test suite (ctest) under them:
#   tools/sanitize.sh address   # AddressSanitizer + UndefinedBehaviorSanitizer, build-asan/
#   tools/sanitize.sh thread    # ThreadSanitizer, build-tsan/ (and an instrumented
#                               # build of Debian's abseil, see below)
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

# ThreadSanitizer must see every synchronization: Debian's abseil is not
# instrumented, so its Mutex looks like no synchronization at all and every
# access it guards would be reported. Build the installed abseil version from
# Debian's own source package (checksums verified by dpkg-source), instrumented,
# and run the tests against those libraries (same soname, same inline namespace).
if [ "$kind" = thread ]; then
  absl_dir="$PWD/$dir/abseil-tsan"
  if [ ! -f "$absl_dir/lib/.complete" ]; then
    for tool in curl dpkg-source; do
      command -v "$tool" >/dev/null || { apt-get install -y -qq curl dpkg-dev >/dev/null; break; }
    done
    src=$(dpkg-query -W -f='${source:Package}' libabsl-dev)
    ver=$(dpkg-query -W -f='${source:Version}' libabsl-dev)
    mirror="${EENN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    pool="$mirror/pool/main/${src:0:1}/$src"
    rm -rf "$absl_dir" && mkdir -p "$absl_dir/dl" "$absl_dir/lib"
    dsc="${src}_${ver#*:}.dsc"
    curl -sSf -o "$absl_dir/dl/$dsc" "$pool/$dsc"
    for f in $(awk '/^Checksums-Sha256:/ {on=1; next} /^[^ ]/ {on=0} on {print $3}' "$absl_dir/dl/$dsc"); do
      curl -sSf -o "$absl_dir/dl/$f" "$pool/$f"
    done
    (cd "$absl_dir/dl" && dpkg-source -x "$dsc" src >/dev/null)
    cmake -S "$absl_dir/dl/src" -B "$absl_dir/build" -DCMAKE_CXX_STANDARD=17 -DBUILD_SHARED_LIBS=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" \
      -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
      -DCMAKE_SKIP_BUILD_RPATH=ON -DCMAKE_CXX_COMPILER_LAUNCHER=ccache > "$absl_dir/cmake.log" 2>&1 || { cat "$absl_dir/cmake.log"; exit 1; }
    # Every library: an inline function of abseil (call_once, a spin lock)
    # may be bound to its copy in any of them.
    cmake --build "$absl_dir/build" -j"${EENN_JOBS:-$(nproc)}" > "$absl_dir/build.log" 2>&1 \
      || { tail -50 "$absl_dir/build.log"; exit 1; }
    find "$absl_dir/build" -name 'libabsl_*.so.*.*' -exec cp {} "$absl_dir/lib/" \;
    # ... except the value types gRPC shares between its own threads (Status,
    # Cord, strings): instrumented, they are checked on gRPC's behalf while
    # gRPC's ordering stays invisible. They hold no synchronization of ours.
    rm -f "$absl_dir"/lib/libabsl_{status,statusor,cord,cord_internal,strings,strings_internal,str_format_internal}.so.* \
      "$absl_dir"/lib/libabsl_cordz_*.so.*
    for f in "$absl_dir"/lib/*.so.*.*; do ln -sf "$(basename "$f")" "${f%.0.0}"; done
    touch "$absl_dir/lib/.complete"
  fi
  export LD_LIBRARY_PATH="$absl_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

supp="$PWD/tests/sanitizers"
# Every process (test binaries, and the daemons and clients they start) writes
# its reports to files here, so a report in a daemon fails the run even when
# the test that started it did not notice.
reports="$PWD/$dir/sanitizer-reports"
rm -rf "$reports" && mkdir -p "$reports"
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:exitcode=86:detect_leaks=1:detect_odr_violation=0:suppressions=$supp/asan.supp:log_path=$reports/asan"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=86:suppressions=$supp/ubsan.supp:log_path=$reports/ubsan"
export TSAN_OPTIONS="halt_on_error=1:exitcode=86:second_deadlock_stack=1:suppressions=$supp/tsan.supp:log_path=$reports/tsan"
# Sanitized code runs several times slower: one test binary at a time per core,
# longer timeouts.
status=0
ctest --test-dir "$dir" --output-on-failure -j"${EENN_TEST_JOBS:-2}" --timeout 1800 "$@" || status=$?
found=$(find "$reports" -type f | sort)
if [ -n "$found" ]; then
  echo "sanitizer reports ($(echo "$found" | wc -l) processes), in $reports:" >&2
  for f in $found; do echo "== $f" >&2; head -80 "$f" >&2; done
  status=1
else
  echo "no sanitizer report from any process"
fi
exit "$status"
