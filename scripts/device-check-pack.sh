#!/usr/bin/env bash
# Prepares what `scripts/device-check.sh` needs on a GPU machine without network and with at most 64 MiB of files per
# call (README of the device tool), into .cache/device-check/ (git-ignored):
#   one payload = the check bundled into one file (esbuild), node, the CUDA build of onnxruntime-node from
#   `npm run install:cuda` (core + provider, linux-x64 only) installed as node_modules/onnxruntime-node there, and
#   onnxruntime-common; xz-compressed and cut into parts of at most PART_MIB (default 56) MiB, each in its own folder
#   .cache/device-check/part-K/ with a manifest of every part's sha256.
# The CUDA provider (230 MB) is cut down for one GPU architecture by default: its fatbin images for other architectures
# are zeroed (scripts/fatbin-keep-arch.ts; ARCH=90 for H100/H200), which makes the payload 2 parts instead of 4.
# FULL_PROVIDER=1 keeps it whole. Run here (no network needed once `npm run install:cuda` was run):
#   bash scripts/device-check-pack.sh           then, on the device, one call per part (docs/gpu.md, "Device check")
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${ARCH:-90}"
part_mib="${PART_MIB:-56}"
cuda=deploy/cuda-provider/node_modules
[ -f "$cuda/onnxruntime-node-cuda/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so" ] || { echo "run \`npm run install:cuda\` first" >&2; exit 1; }
pack=.cache/device-check
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
rm -rf "$pack" && mkdir -p "$pack"
t0=$(date +%s)

# The check in one file, onnxruntime-node left external, at src/model/graph/ beside the .proto file the sources read
# through import.meta.url; it resolves onnxruntime-node from the payload's own node_modules.
mkdir -p "$stage/src/model/graph"
node_modules/.bin/esbuild scripts/device-check.ts --bundle --platform=node --format=esm --target=node20 \
  --external:onnxruntime-node --outfile="$stage/src/model/graph/device-check.mjs" --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
cp src/model/graph/onnx-subset.proto "$stage/src/model/graph/"

# The CUDA build under the name the bundle imports, linux-x64 files only.
mkdir -p "$stage/node_modules"
cp -a "$cuda/onnxruntime-node-cuda" "$stage/node_modules/onnxruntime-node"
cp -a "$cuda/onnxruntime-common" "$stage/node_modules/onnxruntime-common"
bin="$stage/node_modules/onnxruntime-node/bin/napi-v6/linux/x64"
if [ "${FULL_PROVIDER:-0}" != 1 ]; then
  node bin/run-ts.mjs scripts/fatbin-keep-arch.ts "$bin/libonnxruntime_providers_cuda.so" "$stage/provider.so" --arch "$arch" >"$pack/provider-sm_$arch.json"
  mv "$stage/provider.so" "$bin/libonnxruntime_providers_cuda.so"
fi
cp "$(command -v node)" "$stage/node"

tar -C "$stage" -cf - src node node_modules | xz -T0 -6 >"$stage/payload.tar.xz"
payload_sha=$(sha256sum "$stage/payload.tar.xz" | cut -d' ' -f1)
split -b "${part_mib}M" -d -a 2 "$stage/payload.tar.xz" "$stage/payload.tar.xz.part"
parts=("$stage"/payload.tar.xz.part*)
provider=$([ "${FULL_PROVIDER:-0}" = 1 ] && echo "all architectures" || echo "sm_$arch only")
manifest="{\"payloadSha256\":\"$payload_sha\",\"provider\":\"$provider\",\"parts\":["
for i in "${!parts[@]}"; do
  name=$(basename "${parts[$i]}")
  manifest+="$([ "$i" -gt 0 ] && echo ,){\"name\":\"$name\",\"sha256\":\"$(sha256sum "${parts[$i]}" | cut -d' ' -f1)\",\"bytes\":$(stat -c %s "${parts[$i]}")}"
done
manifest+="]}"
for i in "${!parts[@]}"; do
  dir="$pack/part-$((i + 1))"
  mkdir -p "$dir"
  mv "${parts[$i]}" "$dir/"
  echo "$manifest" >"$dir/manifest.json"
done
echo "$manifest" >"$pack/manifest.json"
du -sh "$pack"/part-*
echo "packed in $(( $(date +%s) - t0 )) s: ${#parts[@]} part(s); on the device, one call per part, each carrying one folder:"
for i in "${!parts[@]}"; do echo "  run(carry: [\"$pack/part-$((i + 1))\"], command: \"bash scripts/device-check.sh\", timeout_s: 600)"; done
