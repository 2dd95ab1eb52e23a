# Sourced by tests/run.sh: NVRTC (libnvrtc), so that the GPU kernels' compile test runs on
# machines without a GPU. NVRTC needs no GPU and no driver; it comes from NVIDIA's
# nvidia-cuda-nvrtc wheel on PyPI, unpacked once under target/nvrtc (about 110 MB).

NVRTC_WHEEL='nvidia-cuda-nvrtc==13.0.88'

provide_nvrtc() {
  local root="$PWD/target/nvrtc"
  local lib="$root/nvidia/cu13/lib"
  if [ ! -f "$lib/libnvrtc.so.13" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
      apt-get install -y -q python3-pip >/dev/null
    fi
    rm -rf "$root" && mkdir -p "$root/wheel"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$root/wheel" "$NVRTC_WHEEL"
    python3 -m zipfile -e "$root"/wheel/*.whl "$root"
    rm -rf "$root/wheel"
  fi
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}
