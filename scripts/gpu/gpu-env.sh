# Sourced by scripts/gpu/call.sh there (on the lent GPU machine): Burn's CUDA backend (cubecl-cuda)
# compiles its kernels at run time with NVRTC, which it loads by name (libnvrtc.so, or
# libnvrtc.so.<major>), and it reads the CUDA headers from $CUDA_PATH/include, else
# /usr/local/cuda/include. Where the machine's defaults miss them, point both at the toolkit that
# is there (nvcc's, else the pip packages PyTorch brought). For Vulkan, name NVIDIA's driver file
# where the machine has it (the device tool's README). Prints what it found.

# The number of completed epochs a run's state.json records (FILE); fails, printing nothing, where
# the file or the field is missing. Used by checks.sh (a leg's stop) and state.sh (the pieces' names).
fer_completed_epochs() {
  grep -o '"completed_epochs"[[:space:]]*:[[:space:]]*[0-9]*' "$1" 2>/dev/null | grep -o '[0-9]*$'
}

fer_gpu_env() {
  local d candidates=()
  if [ -z "${CUDA_PATH:-}" ] && [ ! -f /usr/local/cuda/include/cuda_runtime.h ]; then
    command -v nvcc >/dev/null 2>&1 && candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")")
    for d in /usr/local/cuda-*; do [ -d "$d" ] && candidates+=("$d"); done
    for d in "${candidates[@]}"; do
      if [ -f "$d/include/cuda_runtime.h" ]; then export CUDA_PATH=$d; break; fi
    done
  fi
  echo "CUDA headers: ${CUDA_PATH:-/usr/local/cuda}/include$([ -f "${CUDA_PATH:-/usr/local/cuda}/include/cuda_runtime.h" ] || echo ' (no cuda_runtime.h there)')"

  local loads='import ctypes, sys
for name in sys.argv[1:]:
    try:
        ctypes.CDLL(name); print(name); break
    except OSError:
        pass'
  local found
  found=$(python3 -c "$loads" libnvrtc.so libnvrtc.so.13 libnvrtc.so.12 2>/dev/null)
  if [ -z "$found" ]; then
    local dirs=("${CUDA_PATH:-/usr/local/cuda}/lib64" "${CUDA_PATH:-/usr/local/cuda}/targets/x86_64-linux/lib")
    while read -r d; do dirs+=("$d"); done < <(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null)
    local lib
    lib=$(for d in "${dirs[@]}"; do [ -d "$d" ] && find "$d" -maxdepth 4 -name 'libnvrtc.so*' 2>/dev/null; done | head -n 1)
    if [ -n "$lib" ]; then
      export LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      found="$lib (added its folder to LD_LIBRARY_PATH)"
    fi
  fi
  echo "NVRTC: ${found:-not found (the CUDA backend cannot compile kernels)}"

  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; fi
  echo "Vulkan driver file: ${VK_DRIVER_FILES:-none named, the Vulkan loader searches its default folders}"
}

# Burn's GPU backends (CubeCL) read their settings from the first cubecl.toml found in the working
# directory or one of its parents (the repository's keeps compiled kernels in target/).
# fer_cubecl_toml FILE CACHE [PROFILE_LOG] writes one for a process run elsewhere that keeps the
# autotune results (which kernel won for each shape) and the compiled kernels (PTX, SPIR-V) under
# CACHE: pass the repository's target/ to share theirs. With PROFILE_LOG, CubeCL also times every
# kernel it runs into that file, one line per launch and a table per device synchronisation (fer
# bench-train synchronises after each step): where a step's time goes, kernel by kernel.
fer_cubecl_toml() {
  local file=${1:?fer_cubecl_toml FILE CACHE [PROFILE_LOG]} cache=${2:?fer_cubecl_toml FILE CACHE [PROFILE_LOG]}
  mkdir -p "$cache"
  {
    echo '[compilation]'
    echo "cache = { file = \"$cache\" }"
    echo '[autotune]'
    echo "cache = { file = \"$cache\" }"
    if [ -n "${3:-}" ]; then
      echo '[profiling.logger]'
      echo 'level = "basic"'
      echo "file = \"$3\""
      echo 'append = false'
    fi
  } > "$file"
}

# The GPU's name as the kernel cache records it (card.txt, first line): autotune results are filed
# by device index, not by card, so unpack.sh checks the card before it uses a cache.
fer_gpu_name() {
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true
}

# The GPU's CUDA compute capability (9.0 for the H100 and the H200), card.txt's second line as
# "compute_cap=9.0": cards of one architecture run the same compiled kernels and autotune
# candidates, so unpack.sh falls back on a cache of such a card when none of this card's travels.
fer_gpu_arch() {
  nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ' || true
}

# fer_card_txt: card.txt's two lines for this machine's GPU.
fer_card_txt() {
  fer_gpu_name
  echo "compute_cap=$(fer_gpu_arch)"
}
