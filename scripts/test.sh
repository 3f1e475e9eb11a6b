#!/usr/bin/env bash
# The project's one test command (README and .ci/run): installs what the tests need, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# onnxruntime-node's install script downloads CUDA libraries from outside the npm registry; the CPU and WebGPU
# providers ship inside the package, so skip it (see docs/gpu.md for a GPU install).
export ONNXRUNTIME_NODE_INSTALL=skip
npm ci --no-audit --no-fund --loglevel=error

# The cross-language test calls the server from Python (Debian's grpcio and grpc-tools).
if ! /usr/bin/python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-grpcio python3-grpc-tools >/dev/null
  else
    echo "note: python3-grpcio / python3-grpc-tools missing and not root: the Python client test will fail" >&2
  fi
fi

npx tsc --noEmit -p .
npx eslint . --max-warnings=0
npx vitest run
