#!/usr/bin/env bash
# Prepares everything `scripts/device-check.sh` needs on a GPU machine without network, into .cache/device-check/
# (git-ignored; name it in the device tool's `carry`): the check bundled into one file, node, onnxruntime-node's
# Linux x64 binaries, and the Vulkan loader .deb (WebGPU runs on Dawn over Vulkan). Run here, with network, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
pack=.cache/device-check
rm -rf "$pack" && mkdir -p "$pack/debs"

# One file, onnxruntime-node left external. It runs from src/model/graph/ on the device so the .proto paths the sources
# resolve against import.meta.url (./onnx-subset.proto, ../graph/onnx-subset.proto) point at the real file.
node_modules/.bin/esbuild scripts/device-check.ts --bundle --platform=node --format=esm --target=node20 \
  --external:onnxruntime-node --outfile="$pack/device-check.mjs" --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"

# onnxruntime-node (+ onnxruntime-common) for linux/x64 only.
tar -cJf "$pack/onnxruntime-node.tar.xz" --exclude='bin/napi-v6/darwin' --exclude='bin/napi-v6/win32' \
  --exclude='bin/napi-v6/linux/arm64' node_modules/onnxruntime-node node_modules/onnxruntime-common

# node itself (the GPU image has Python, not Node).
xz -T0 -c "$(command -v node)" >"$pack/node.xz"

# Vulkan loader for amd64, whatever this machine's architecture (the device tool's README recipe).
lists=/tmp/device-check-apt-lists
mkdir -p "$lists/partial"
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$lists")
apt-get "${o[@]}" update -qq >/dev/null
(cd "$pack/debs" && apt-get "${o[@]}" download libvulkan1 >/dev/null)

du -sh "$pack" "$pack"/*
