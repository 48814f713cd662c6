#!/usr/bin/env bash
# Sourced by run-main.sh and run-tests.sh: installs what a fresh Debian machine lacks.
# - Debian packages (apt-get, as root or through sudo), only those missing.
# - A Rust toolchain >= 1.92 through rustup when cargo is absent (Debian's cargo is too old).

# Debian packages the workspace builds against.
# fonts-dejavu-core: the text font of the PNG reports and of `fer predict --annotate` labels.
# libdlib-dev, libopenblas-dev, liblapack-dev: dlib (landmarks) and the BLAS/LAPACK it links;
# libdlib-data: dlib's 68-point landmark model (/usr/share/dlib/shape_predictor_68_face_landmarks.dat).
FER_APT_PACKAGES=(build-essential pkg-config ca-certificates fonts-dejavu-core
    libdlib-dev libdlib-data libopenblas-dev liblapack-dev)

fer_ensure_apt() {
    local missing=()
    for p in "${FER_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

fer_ensure_rust() {
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    if ! command -v cargo >/dev/null 2>&1; then
        echo "setup: cargo not found; installing Rust with rustup (https://rustup.rs)" >&2
        command -v curl >/dev/null 2>&1 || { FER_APT_PACKAGES+=(curl); fer_ensure_apt; }
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
        . "$HOME/.cargo/env"
    fi
    local version
    version=$(rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n1.92.0\n' "$version" | sort -V | head -n1)" != "1.92.0" ]; then
        echo "setup: rustc $version is older than 1.92 (burn 0.21 needs 1.92); run 'rustup update stable'" >&2
        return 1
    fi
}

# dlib's landmark code is C++ templates compiled into fer-rs (dlib-face-recognition's wrapper):
# -march=native makes it ~1.6x faster, and -ffp-contract=off keeps its output bit-identical to a
# generic build (checked on all 35,887 FER2013 faces; docs/RESULTS.md). FER_PORTABLE=1 builds
# generic code, e.g. for a binary that will run on another machine. Both scripts use the same flags,
# so switching between them does not rebuild the workspace.
fer_cxxflags() {
    if [ "${FER_PORTABLE:-0}" != "1" ] && [ -z "${CXXFLAGS:-}" ]; then
        export CXXFLAGS="-march=native -ffp-contract=off"
    fi
}

fer_setup() {
    fer_ensure_apt
    fer_ensure_rust
    fer_cxxflags
}
