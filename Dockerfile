# ktrail's images for people who build with Docker (or buildah, kaniko …):
#
#   docker build --target agent     -t REGISTRY/ktrail/ktrail-agent:TAG .
#   docker build --target collector -t REGISTRY/ktrail/ktrail-collector:TAG .
#
# The same images as `cargo xtask image` assembles without a Docker engine (that is the
# path this project's tests take): the binaries on Debian bookworm's libc. Point
# deploy/'s `images` at what you pushed (docs/deploy.md). No Docker engine runs where
# this project is tested: scripts/dockerfile-check.sh builds this file with buildah and
# deploys the result on the local cluster (docs/deploy.md, "The Dockerfile").

FROM rust:1-bookworm AS build
# The eBPF toolchain, as `cargo xtask setup` installs it (xtask/src/ebpf.rs): Debian's
# rustc-web ships a `core` for bpfel-unknown-none; bpf-linker against Debian's LLVM 22
# (bookworm's own updates carry llvm-22).
RUN apt-get update \
 && apt-get install -y --no-install-recommends rustc-web cargo-web libstd-rust-web-dev-bpf \
      llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev binutils \
 && rm -rf /var/lib/apt/lists/*
RUN PATH=/usr/lib/llvm-22/bin:$PATH LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
    cargo install bpf-linker --version ^0.13 --no-default-features --features llvm-22
WORKDIR /src
COPY . .
# Cache mounts (BuildKit, buildah): a rebuild after a source change recompiles only what
# changed, and the 4 GiB of target/ stay out of the image's layers.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p ktrail-agent -p ktrail-collector -p ktrail-cli \
 && mkdir /out \
 && for b in ktrail-agent ktrail-collector ktrail; do \
      objcopy --strip-debug target/release/$b /out/$b; \
    done

FROM debian:bookworm-slim AS agent
COPY --from=build /out/ktrail-agent /usr/local/bin/ktrail-agent
ENTRYPOINT ["/usr/local/bin/ktrail-agent"]

FROM debian:bookworm-slim AS collector
COPY --from=build /out/ktrail-collector /out/ktrail /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ktrail-collector"]
