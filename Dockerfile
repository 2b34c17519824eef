# The leasecron image: a static binary on busybox (the default) or on an empty base. See docs/container.md.
#
#   podman build -t leasecron .                                       # busybox: /bin/sh and its tools
#   podman build --build-arg BASE=scratch -t leasecron:scratch .      # the binary alone, for command: jobs
#   podman build --platform linux/amd64,linux/arm64 --manifest leasecron .    # both, cross-compiled
#
# Needs BuildKit (Docker 23+) or buildah (podman 4+): the build stage uses RUN --mount=type=cache. podman 4.3
# also needs --build-arg BUILDPLATFORM=linux/amd64 (the build machine's) to cross-compile.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm
# The final image's base: busybox's musl variant (one static busybox binary: sh, date, df, wget, ...), or
# scratch.
ARG BASE=docker.io/library/busybox:1.37.0-musl
# The URL of the source repository, for the org.opencontainers.image.source label.
ARG SOURCE_URL=""

# === build: the static binary for TARGETARCH, compiled on the build machine's own architecture ===
FROM --platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
ARG TARGETARCH

# The Rust target of TARGETARCH. Cross-compiling, also the target's C compiler and static glibc (ring
# compiles C) and the target's Rust standard library. The cross toolchain is not version-pinned: it comes
# from the Debian release of the pinned rust image, whose archive keeps one version of each package.
# hadolint ignore=DL3008
RUN set -eu; \
    build_arch="$(dpkg --print-architecture)"; \
    target_arch="${TARGETARCH:-$build_arch}"; \
    case "$target_arch" in \
        amd64) triple='x86_64-unknown-linux-gnu' gcc='gcc-x86-64-linux-gnu' libc='libc6-dev-amd64-cross' ;; \
        arm64) triple='aarch64-unknown-linux-gnu' gcc='gcc-aarch64-linux-gnu' libc='libc6-dev-arm64-cross' ;; \
        *) echo "TARGETARCH $target_arch: only amd64 and arm64 are supported" >&2; exit 1 ;; \
    esac; \
    if [ "$target_arch" != "$build_arch" ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends "$gcc" "$libc"; \
        rm -rf /var/lib/apt/lists/*; \
        rustup target add "$triple"; \
    fi; \
    echo "$triple" > /target-triple
# Every target links with its triplet-named gcc: the native gcc has that name too.
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc

# The files the image adds besides the binary: an entry for the numeric user (for tools that look their
# user up), the CA bundle (for a kubeconfig without a CA, and for jobs that speak TLS), and /tmp, where the
# Deployment mounts an emptyDir over the read-only root filesystem.
RUN set -eu; \
    mkdir -p /rootfs/etc/ssl/certs /rootfs/usr/local/bin; \
    mkdir -m 1777 /rootfs/tmp; \
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
        'leasecron:x:65532:65532:leasecron:/tmp:/bin/false' > /rootfs/etc/passwd; \
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'leasecron:x:65532:' > /rootfs/etc/group; \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/

WORKDIR /src
# Cargo.toml names the benches: the manifest does not parse without them.
COPY Cargo.toml Cargo.lock ./
COPY benches/ benches/
COPY src/ src/
# Static glibc (+crt-static): glibc >= 2.34 has its files and dns NSS modules inside libc, so name
# resolution needs no shared module at run time. RUSTFLAGS with an explicit --target apply to the binary
# only, not to build scripts and proc macros. The profile `dist` (Cargo.toml): release optimised as one
# program, without debug info (the release profile's line tables would make the binary 88 MB instead of
# 21 MB); the symbols stay, so a backtrace still names its functions. The
# registry and target directory live in cache mounts: a source change recompiles leasecron alone.
RUN --mount=type=cache,id=leasecron-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=leasecron-target,target=/src/target,sharing=locked \
    set -eu; \
    triple="$(cat /target-triple)"; \
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --profile dist --locked --bin leasecron --target "$triple"; \
    install -m 0755 "target/$triple/dist/leasecron" /rootfs/usr/local/bin/leasecron; \
    readelf --program-headers --dynamic /rootfs/usr/local/bin/leasecron > /tmp/headers; \
    if grep -E 'INTERP|\(NEEDED\)' /tmp/headers; then \
        echo "leasecron is not statically linked" >&2; exit 1; \
    fi

# === rootfs: every file the image adds to its base ===
# .ci/image replaces this stage with a directory (--build-context rootfs=DIR), to build the image from a
# binary built outside, without pulling any base image.
FROM scratch AS rootfs
COPY --from=build /rootfs/ /

# === the image ===
FROM ${BASE}
ARG SOURCE_URL
LABEL org.opencontainers.image.title="leasecron" \
      org.opencontainers.image.description="A singleton cron runner for Kubernetes: only the holder of a Lease runs the jobs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}"
# (DL3067 warns against copying a whole image's filesystem: rootfs holds only the files above.)
# hadolint ignore=DL3067
COPY --from=rootfs / /
ENV HOME=/tmp \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 9090
# leasecron is PID 1: it reaps orphaned processes itself, and its runs die with it (PR_SET_PDEATHSIG).
ENTRYPOINT ["/usr/local/bin/leasecron"]
CMD ["run", "--jobs", "/etc/leasecron/jobs.yaml"]
