#!/usr/bin/env bash
# `npm run device-check`: correctness of each GPU execution provider against the CPU path and the decode throughput
# benchmark (scripts/device-check.ts), JSON out. Runs with this checkout's node_modules when present; otherwise (a GPU
# machine without network) from .cache/device-check/ made by scripts/device-check-pack.sh. Results go to $OUT when set
# (the device tool), else bench/results/. Extra arguments go to device-check.ts (--providers, --streams, --steps).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
pack=.cache/device-check

# WebGPU needs a Vulkan loader and a driver: take the carried loader when the system has none, and NVIDIA's ICD where
# the driver is mounted under /usr/local/nvidia.
if ! ldconfig -p | grep -q 'libvulkan\.so\.1' && compgen -G "$pack/debs/*.deb" >/dev/null; then
  for f in "$pack"/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
command -v nvidia-smi >/dev/null && nvidia-smi >"$out/nvidia-smi.txt" 2>&1

if [ -d node_modules/onnxruntime-node ] && [ -d node_modules/tsx ]; then
  run=(npx tsx scripts/device-check.ts)
else
  [ -f "$pack/device-check.mjs" ] || { echo "no node_modules and no $pack: run scripts/device-check-pack.sh first and carry $pack" >&2; exit 1; }
  mkdir -p /tmp/device-check/bin
  xz -dc "$pack/node.xz" >/tmp/device-check/bin/node && chmod +x /tmp/device-check/bin/node
  tar -xJf "$pack/onnxruntime-node.tar.xz"
  cp "$pack/device-check.mjs" src/model/graph/.device-check.mjs
  run=(/tmp/device-check/bin/node src/model/graph/.device-check.mjs)
fi
set -o pipefail
timeout 560 "${run[@]}" --out "$out/device-check.json" "$@" 2>&1 | grep -v 'maxDynamic.*artificially reduced' | tee "$out/device-check.log"
