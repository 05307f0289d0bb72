#!/usr/bin/env bash
# Builds every target with sanitizers into its own build folder and runs the
# whole test suite (ctest) under them:
#   tools/sanitize.sh address   # AddressSanitizer + UndefinedBehaviorSanitizer, build-asan/
#   tools/sanitize.sh thread    # ThreadSanitizer, build-tsan/ (and an instrumented
#                               # build of Debian's abseil and gRPC, see below)
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
# The Debian source package of the installed binary package $1, unpacked
# under $2/src (dpkg-source checks the checksums the .dsc lists).
debian_source() {
  local src ver mirror pool dsc f
  for tool in curl dpkg-source; do
    command -v "$tool" >/dev/null || { apt-get install -y -qq curl dpkg-dev >/dev/null; break; }
  done
  src=$(dpkg-query -W -f='${source:Package}' "$1")
  ver=$(dpkg-query -W -f='${source:Version}' "$1")
  mirror="${EENN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  pool="$mirror/pool/main/${src:0:1}/$src"
  dsc="${src}_${ver#*:}.dsc"
  mkdir -p "$2"
  curl -sSf -o "$2/$dsc" "$pool/$dsc"
  for f in $(awk '/^Checksums-Sha256:/ {on=1; next} /^[^ ]/ {on=0} on {print $3}' "$2/$dsc"); do
    curl -sSf -o "$2/$f" "$pool/$f"
  done
  rm -rf "$2/src"
  (cd "$2" && dpkg-source -x "$dsc" src >/dev/null)
}

if [ "$kind" = thread ]; then
  absl_dir="$PWD/$dir/abseil-tsan"
  if [ ! -f "$absl_dir/build/.complete" ]; then
    rm -rf "$absl_dir"
    debian_source libabsl-dev "$absl_dir/dl"
    cmake -S "$absl_dir/dl/src" -B "$absl_dir/build" -DCMAKE_CXX_STANDARD=17 -DBUILD_SHARED_LIBS=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" \
      -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
      -DCMAKE_SKIP_BUILD_RPATH=ON -DCMAKE_CXX_COMPILER_LAUNCHER=ccache > "$absl_dir/cmake.log" 2>&1 || { cat "$absl_dir/cmake.log"; exit 1; }
    # Every library: an inline function of abseil (call_once, a spin lock)
    # may be bound to its copy in any of them.
    cmake --build "$absl_dir/build" -j"${EENN_JOBS:-$(nproc)}" > "$absl_dir/build.log" 2>&1 \
      || { tail -50 "$absl_dir/build.log"; exit 1; }
    touch "$absl_dir/build/.complete"
  fi
  # lib/: every library, for a run with gRPC instrumented too. lib-plain-grpc/:
  # all but the value types gRPC shares between its own threads (Status, Cord,
  # strings), for a run with Debian's uninstrumented gRPC (EENN_TSAN_GRPC=0):
  # instrumented, they would be checked on gRPC's behalf while gRPC's ordering
  # stays invisible. They hold no synchronization of ours.
  if [ ! -f "$absl_dir/lib-plain-grpc/.complete" ]; then
    rm -rf "$absl_dir/lib" "$absl_dir/lib-plain-grpc" && mkdir -p "$absl_dir/lib" "$absl_dir/lib-plain-grpc"
    find "$absl_dir/build" -name 'libabsl_*.so.*.*' -exec cp {} "$absl_dir/lib/" \;
    cp "$absl_dir"/lib/*.so.*.* "$absl_dir/lib-plain-grpc/"
    rm -f "$absl_dir"/lib-plain-grpc/libabsl_{status,statusor,cord,cord_internal,strings,strings_internal,str_format_internal}.so.* \
      "$absl_dir"/lib-plain-grpc/libabsl_cordz_*.so.*
    for f in "$absl_dir"/lib/*.so.*.* "$absl_dir"/lib-plain-grpc/*.so.*.*; do ln -sf "$(basename "$f")" "${f%.0.0}"; done
    touch "$absl_dir/lib-plain-grpc/.complete"
  fi
  # gRPC the same way: its core orders the handing over of calls, messages
  # and completion tags between its threads with its own atomics, which
  # ThreadSanitizer sees only when they are instrumented. Built against the
  # system abseil, protobuf, re2, c-ares and OpenSSL, as Debian builds it.
  # EENN_TSAN_GRPC=0 skips it (tests/sanitizers/tsan-grpc.supp then applies too).
  grpc_dir="$PWD/$dir/grpc-tsan"
  if [ "${EENN_TSAN_GRPC:-1}" != 0 ] && [ ! -f "$grpc_dir/lib/.complete" ]; then
    mkdir -p "$grpc_dir/lib"
    [ -d "$grpc_dir/dl/src" ] || debian_source libgrpc++-dev "$grpc_dir/dl"
    protoc_lib=$(ls /usr/lib/*/libprotoc.so.* 2>/dev/null | head -1)
    cmake -S "$grpc_dir/dl/src" -B "$grpc_dir/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" -DCMAKE_C_FLAGS_RELWITHDEBINFO="$flags" \
      -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_C_FLAGS="-fsanitize=thread" \
      -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" -DCMAKE_CXX_STANDARD=17 -DBUILD_SHARED_LIBS=ON \
      -DgRPC_ABSL_PROVIDER=package -DgRPC_CARES_PROVIDER=package -DgRPC_PROTOBUF_PROVIDER=package \
      -DgRPC_RE2_PROVIDER=package -DgRPC_SSL_PROVIDER=package -DgRPC_ZLIB_PROVIDER=package \
      -DgRPC_BACKWARDS_COMPATIBILITY_MODE=OFF -DgRPC_BUILD_CODEGEN=OFF -DgRPC_BUILD_GRPC_CPP_PLUGIN=OFF \
      -DgRPC_BUILD_GRPC_CSHARP_PLUGIN=OFF -DgRPC_BUILD_GRPC_NODE_PLUGIN=OFF \
      -DgRPC_BUILD_GRPC_OBJECTIVE_C_PLUGIN=OFF -DgRPC_BUILD_GRPC_PHP_PLUGIN=OFF \
      -DgRPC_BUILD_GRPC_PYTHON_PLUGIN=OFF -DgRPC_BUILD_GRPC_RUBY_PLUGIN=OFF -DgRPC_BUILD_TESTS=OFF \
      ${protoc_lib:+-DProtobuf_PROTOC_LIBRARY="$protoc_lib"} -DCMAKE_SKIP_BUILD_RPATH=ON \
      -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
      > "$grpc_dir/cmake.log" 2>&1 || { cat "$grpc_dir/cmake.log"; exit 1; }
    # The libraries this repository's binaries load (see ldd build/bin/eenn-device),
    # but grpc++_reflection: gRPC defines it only with its code generators,
    # which need protoc's headers; the system copy loads this grpc++ (same soname).
    cmake --build "$grpc_dir/build" -j"${EENN_JOBS:-$(nproc)}" --target gpr grpc grpc++ \
      upb address_sorting > "$grpc_dir/build.log" 2>&1 \
      || { tail -50 "$grpc_dir/build.log"; exit 1; }
    find "$grpc_dir/build" -maxdepth 1 -name 'lib*.so.*' -exec cp -P {} "$grpc_dir/lib/" \;
    touch "$grpc_dir/lib/.complete"
  fi
  if [ "${EENN_TSAN_GRPC:-1}" = 0 ]; then
    tsan_libs="$absl_dir/lib-plain-grpc"
  else
    tsan_libs="$grpc_dir/lib:$absl_dir/lib"
  fi
  export LD_LIBRARY_PATH="$tsan_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
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
# ThreadSanitizer's suppressions: tsan.supp, and with an uninstrumented gRPC
# (EENN_TSAN_GRPC=0) tsan-grpc.supp too.
tsan_supp="$PWD/$dir/tsan.supp"
if [ "$kind" = thread ]; then
  cat "$supp/tsan.supp" > "$tsan_supp"
  [ "${EENN_TSAN_GRPC:-1}" != 0 ] || cat "$supp/tsan-grpc.supp" >> "$tsan_supp"
fi
export TSAN_OPTIONS="halt_on_error=1:exitcode=86:second_deadlock_stack=1:suppressions=$tsan_supp:log_path=$reports/tsan"
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
