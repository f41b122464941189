# syntax=docker/dockerfile:1
# vaultgemma-server images. Two targets (cpu, the last stage, is the default):
#   docker build --target cpu  -t vaultgemma-server:0.1.0 .        (debian:bookworm-slim)
#   docker build --target cuda -t vaultgemma-server-cuda:0.1.0 .   (NVIDIA CUDA 13 runtime)
# Run (the weights are never in the image; mount a checkpoint directory or a Hugging Face cache
# read-only):
#   docker run --rm -p 50051:50051 -p 9464:9464 \
#     -v "$HOME/.cache/huggingface:/models/huggingface:ro" vaultgemma-server:0.1.0
#   docker run --rm -p 50051:50051 -v /path/to/checkpoint:/models/checkpoint:ro \
#     vaultgemma-server:0.1.0 --model /models/checkpoint
#   docker run --rm --gpus all -p 50051:50051 -p 9464:9464 \
#     -v "$HOME/.cache/huggingface:/models/huggingface:ro" vaultgemma-server-cuda:0.1.0
# tests/deploy/check_dockerfile.sh checks this file statically (CI has no container engine):
# COPY sources against the build context and .dockerignore, the runtime packages against the
# libraries the built binaries load, the CUDA plugin's build and place, and the hadolint rules
# listed there.

ARG DEBIAN_VERSION=12.11

# ---------------------------------------------------------------------------------------------
# builder: Debian 12 with exactly the packages of `make deps` (tools/ci/install_deps.sh).
FROM debian:${DEBIAN_VERSION} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY tools/ci/install_deps.sh tools/ci/install_deps.sh
RUN tools/ci/install_deps.sh && rm -rf /var/lib/apt/lists/*
COPY CMakeLists.txt ./
COPY proto proto
COPY engine engine
COPY server server
COPY client client
COPY tools tools
COPY tests tests
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVG_BUILD_BENCHMARKS=OFF \
 && cmake --build /build --target vaultgemma-server vaultgemma-cli \
 && install -d /out/bin \
 && install -m 0755 /build/bin/vaultgemma-server /build/bin/vaultgemma-cli /out/bin/ \
 && tools/deploy/collect_runtime_libs.sh /out/lib /out/bin/vaultgemma-server /out/bin/vaultgemma-cli

# ---------------------------------------------------------------------------------------------
# cuda-builder: the builder plus nvcc and the CUDA runtime, cuBLAS and CCCL headers from NVIDIA's
# Debian 12 repository, builds the CUDA backend plugin libvaultgemma_cuda.so (issue 7) for sm_80
# and sm_90a. It starts from the builder, so the plugin is compiled by the same g++ against the
# same Abseil as the server it is loaded into. The package versions are those of CUDA 13.0.1, the
# release of the cuda stage's base image (CUDA runtime 13.0.88, cuBLAS 13.0.2.14): bump them and
# that tag together (tests/deploy/check_dockerfile.sh checks that both name CUDA 13.0). The
# plugin's non-CUDA libraries (Abseil) join the server's in /out/lib; collect_runtime_libs.sh
# never copies a CUDA library, which the runtime image and the host's driver provide.
FROM builder AS cuda-builder
ARG CUDA_REPO=https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL -o /tmp/cuda-keyring.deb "${CUDA_REPO}/cuda-keyring_1.1-1_all.deb" \
 && dpkg -i /tmp/cuda-keyring.deb \
 && rm /tmp/cuda-keyring.deb \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cuda-cccl-13-0=13.0.85-1 \
      cuda-cudart-13-0=13.0.88-1 \
      cuda-cudart-dev-13-0=13.0.88-1 \
      cuda-nvcc-13-0=13.0.88-1 \
      libcublas-13-0=13.0.2.14-1 \
      libcublas-dev-13-0=13.0.2.14-1 \
 && rm -rf /var/lib/apt/lists/*
RUN cmake -S . -B /build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DVG_BUILD_BENCHMARKS=OFF \
      -DVG_ENABLE_CUDA=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda-13.0/bin/nvcc \
      -DCMAKE_CUDA_ARCHITECTURES="80;90a" \
 && cmake --build /build-cuda --target vaultgemma_cuda \
 && install -D -m 0755 /build-cuda/lib/libvaultgemma_cuda.so /out/plugin/libvaultgemma_cuda.so \
 && tools/deploy/collect_runtime_libs.sh /out/lib /out/plugin/libvaultgemma_cuda.so

# ---------------------------------------------------------------------------------------------
# cuda: the same server on NVIDIA's CUDA 13 runtime image (CUDA runtime, cuBLAS and cuBLASLt
# included), for GPU nodes; it serves on the first GPU by default (--device cuda). NVIDIA
# publishes no Debian image, so the binaries from the Debian builder bring their own non-glibc
# libraries (gRPC, protobuf, Abseil, prometheus-cpp and theirs, collected by
# tools/deploy/collect_runtime_libs.sh) in /opt/vaultgemma/lib.
#
# The CUDA backend is the plugin from cuda-builder, which the server dlopen()s only for
# --device cuda[:N], after /metrics has started (cuBLASLt's static TLS breaks prometheus-cpp's
# HTTP threads when linked into the executable, TOOLCHAIN.md landmine 2), so the server binary
# itself never links CUDA. It lies at /usr/local/lib/libvaultgemma_cuda.so, the server's default
# (../lib/ from its own directory, /usr/local/bin), so no --cuda-plugin is needed. Without a GPU
# (no --gpus, no NVIDIA container runtime) the server exits with code 2 and one line naming the
# missing driver or device; pass --device cpu to serve on the CPU from this image.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04 AS cuda
RUN groupadd --system --gid 10001 vaultgemma \
 && useradd --system --uid 10001 --gid vaultgemma --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin vaultgemma
COPY --from=cuda-builder /out/lib /opt/vaultgemma/lib
COPY --from=builder /out/bin/vaultgemma-server /out/bin/vaultgemma-cli /usr/local/bin/
COPY --from=cuda-builder /out/plugin/libvaultgemma_cuda.so /usr/local/lib/libvaultgemma_cuda.so
RUN echo /opt/vaultgemma/lib > /etc/ld.so.conf.d/vaultgemma.conf && ldconfig
ENV HF_HOME=/models/huggingface \
    HF_HUB_OFFLINE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
VOLUME ["/models"]
USER 10001:10001
EXPOSE 50051 9464
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
  CMD ["vaultgemma-cli", "health", "--server", "127.0.0.1:50051", "--deadline", "5"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["vaultgemma-server"]
CMD ["--model", "google/vaultgemma-1b", "--device", "cuda", "--listen", "0.0.0.0:50051", \
     "--metrics-port", "9464"]

# ---------------------------------------------------------------------------------------------
# cpu: the runtime libraries only (each package maps to a library that `ldd` reports for the
# server or the CLI; tests/deploy/check_dockerfile.sh keeps this list complete). The binaries
# load no CUDA library and no libsentencepiece (TOOLCHAIN.md).
FROM debian:${DEBIAN_VERSION}-slim AS cpu
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libabsl20220623 \
      libc-ares2 \
      libc6 \
      libcivetweb1 \
      libgcc-s1 \
      libgrpc++1.51 \
      libgrpc29 \
      libprometheus-cpp-core1.0 \
      libprometheus-cpp-pull1.0 \
      libprotobuf32 \
      libre2-9 \
      libssl3 \
      libstdc++6 \
      zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 vaultgemma \
 && useradd --system --uid 10001 --gid vaultgemma --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin vaultgemma
COPY --from=builder /out/bin/vaultgemma-server /out/bin/vaultgemma-cli /usr/local/bin/
# The server resolves a Hugging Face id offline under $HF_HOME/hub and never downloads.
ENV HF_HOME=/models/huggingface \
    HF_HUB_OFFLINE=1
VOLUME ["/models"]
USER 10001:10001
EXPOSE 50051 9464
# Docker's own health check (Kubernetes ignores it and uses native gRPC probes instead): the
# gRPC health service, SERVING once the weights are loaded. Loading 2 GB of weights may take
# minutes, hence the start period. With --listen on another port or TLS, override it.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
  CMD ["vaultgemma-cli", "health", "--server", "127.0.0.1:50051", "--deadline", "5"]
# SIGTERM drains (--drain-timeout, default 30 s): give `docker stop` a longer --time.
STOPSIGNAL SIGTERM
ENTRYPOINT ["vaultgemma-server"]
CMD ["--model", "google/vaultgemma-1b", "--listen", "0.0.0.0:50051", "--metrics-port", "9464"]
