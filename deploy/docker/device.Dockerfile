# eenn-device image. Build from the repository root:
#   docker build -f deploy/docker/device.Dockerfile -t eenn/eenn-device:0.1.0 .
# Run (flags after the image name; TLS flags or explicit --plaintext/--server_plaintext):
#   docker run -p 50052:50052 -p 9092:9092 eenn/eenn-device:0.1.0 \
#     --plaintext --server=SERVER_HOST:50051 --server_plaintext --threads=2
# A camera source needs the device node: --device /dev/video0 ... --source=camera:0.
# The build context is limited by device.Dockerfile.dockerignore (BuildKit).

# ---- build: the Debian 12 packages of tools/setup.sh needed to compile the daemon.
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libtorch-dev \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev libopencv-dev prometheus-cpp-dev nlohmann-json3-dev libssl-dev zlib1g-dev \
      libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY common common
COPY proto proto
COPY server server
COPY device device
COPY tools tools
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEENN_BUILD_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target eenn-device \
 && strip --strip-debug build/bin/eenn-device

# ---- runtime: the shared libraries eenn-device links against, the binary, the bundle.
FROM debian:12
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libtorch1.13 libopenblas0-openmp \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-core1.0 libssl3 libzstd1 libstdc++6 \
      libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406 libopencv-videoio406 \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin eenn
COPY --from=build /src/build/bin/eenn-device /usr/local/bin/eenn-device
COPY models/cifar10-resnet18 /opt/eenn/models/cifar10-resnet18
USER 10001
# gRPC for clients (EdgeService, grpc.health.v1) and Prometheus /metrics.
EXPOSE 50052 9092
ENTRYPOINT ["/usr/local/bin/eenn-device", "--bundle=/opt/eenn/models/cifar10-resnet18", "--listen=0.0.0.0:50052", "--metrics_address=0.0.0.0:9092"]
