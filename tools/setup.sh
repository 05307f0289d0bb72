#!/usr/bin/env bash
# Installs every missing build and run dependency from Debian 12 packages, then
# configures and builds eenn into build/ (binaries in build/bin/).
# Idempotent: packages already installed are skipped, and the build is
# incremental (ccache keeps recompiles cheap).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ccache pkg-config git
  libtorch-dev libopenblas0-openmp
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libopencv-dev prometheus-cpp-dev nlohmann-json3-dev libssl-dev zlib1g-dev
  libzstd-dev prometheus openssl
  libgtest-dev libgmock-dev libbenchmark-dev dataset-fashion-mnist
  python3-torch python3-torchvision
  systemd python3-yaml
  dpkg-dev binutils
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
JOBS="${EENN_JOBS:-$(nproc)}"
cmake -S . -B build -DCMAKE_BUILD_TYPE="${EENN_BUILD_TYPE:-RelWithDebInfo}" > build.cmake.log 2>&1 \
  || { cat build.cmake.log; exit 1; }
rm -f build.cmake.log
cmake --build build -j"$JOBS"
