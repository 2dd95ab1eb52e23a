#!/usr/bin/env bash
# Builds the C plugins into plugins/build/*.wasm with Debian's clang and wasi-libc.
# Installs them when missing and this runs as root (apt-get); says what to install otherwise.
# The .wat plugins need no build: Sluice compiles WebAssembly text itself.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/build"
packages=(clang lld wasi-libc libclang-rt-14-dev-wasm32)

have_toolchain() {
    command -v clang >/dev/null && command -v wasm-ld >/dev/null && [[ -d /usr/lib/wasm32-wasi || -d /usr/share/wasi-sysroot ]]
}

if ! have_toolchain; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "plugins/build.sh: installing ${packages[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}" >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}" >/dev/null; }
    else
        echo "plugins/build.sh: needs ${packages[*]} (Debian packages) to build the C plugins" >&2
        exit 1
    fi
fi

mkdir -p "$out"
for src in "$here"/*/*.c; do
    name="$(basename "$(dirname "$src")")"
    clang --target=wasm32-wasi -O2 -Wall -Wextra -Werror -Wl,--strip-all \
        -o "$out/$name.wasm" "$src" -lm
    echo "built plugins/build/$name.wasm"
done
