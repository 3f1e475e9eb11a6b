#!/usr/bin/env bash
# `npm run device-check`: the CUDA device check (scripts/device-check.ts), JSON out. Two ways to run:
#   - with this checkout's node_modules (a machine with the repository installed): the check runs through tsx;
#   - on a GPU machine without network (the device tool), from the parts made by scripts/device-check-pack.sh: each call
#     carries one folder .cache/device-check/part-K; the parts are kept in /var/tmp/tessera-device-check between calls
#     (a warm machine keeps them) and, once all are there and their sha256 match, reassembled, unpacked and run. A call
#     that completes the set runs the check; one that does not says which parts are still missing and exits 3.
# The CUDA libraries are found in the Python environment's site-packages/nvidia/*/lib (PyTorch's CUDA 13 wheels) and
# handed to the check as --cuda-lib-path, which preloads them by full path as `tessera serve --cuda-lib-path` does;
# cuDNN, which the provider opens by the name libcudnn.so, goes on LD_LIBRARY_PATH through a folder of links.
# Results go to $OUT when set (the device tool), else bench/results/. Extra arguments go to device-check.ts.
# One run stays under 8 minutes: unpacking ~20 s, the check stops itself at 450 s (it saves after every case).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
keep=/var/tmp/tessera-device-check

if [ -d node_modules/onnxruntime-node ] && [ -d node_modules/tsx ] && ! compgen -G ".cache/device-check/part-*" >/dev/null; then
  run=(node bin/run-ts.mjs scripts/device-check.ts)
else
  mkdir -p "$keep/parts"
  for dir in .cache/device-check/part-*; do
    [ -d "$dir" ] || continue
    cp "$dir"/payload.tar.xz.part* "$keep/parts/" && cp "$dir/manifest.json" "$keep/manifest.json"
  done
  [ -f "$keep/manifest.json" ] || { echo "no parts carried: run scripts/device-check-pack.sh here and carry .cache/device-check/part-1, then the others" >&2; exit 1; }
  manifest=$(cat "$keep/manifest.json")
  missing=()
  while read -r name sha; do
    [ -f "$keep/parts/$name" ] && [ "$(sha256sum "$keep/parts/$name" | cut -d' ' -f1)" = "$sha" ] || missing+=("$name")
  done < <(echo "$manifest" | python3 -c 'import json,sys; [print(p["name"], p["sha256"]) for p in json.load(sys.stdin)["parts"]]')
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "device-check: staged in $keep; still missing: ${missing[*]} (carry the folders holding them, one call each, while this machine is warm)"
    exit 3
  fi
  payload_sha=$(echo "$manifest" | python3 -c 'import json,sys; print(json.load(sys.stdin)["payloadSha256"])')
  if [ "$(cat "$keep/unpacked" 2>/dev/null)" != "$payload_sha" ]; then
    t0=$(date +%s)
    [ "$(cat "$keep"/parts/payload.tar.xz.part* | sha256sum | cut -d' ' -f1)" = "$payload_sha" ] || { echo "device-check: the reassembled payload does not match its sha256" >&2; exit 1; }
    rm -rf "$keep/payload" && mkdir -p "$keep/payload"
    cat "$keep"/parts/payload.tar.xz.part* | xz -dc | tar -xf - -C "$keep/payload" || exit 1
    echo "$payload_sha" >"$keep/unpacked"
    echo "device-check: unpacked in $(( $(date +%s) - t0 )) s (CUDA provider: $(echo "$manifest" | python3 -c 'import json,sys; print(json.load(sys.stdin)["provider"])'))"
  fi
  # The bundle sits in the payload beside its .proto file and resolves onnxruntime-node (the CUDA build) from there.
  run=("$keep/payload/node" "$keep/payload/src/model/graph/device-check.mjs")
fi

# PyTorch's CUDA libraries (nvidia-cublas, -cuda-runtime, -curand, -cudnn-cu13 ...) and the driver's folder.
libdirs=()
for sp in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
  [ -d "$sp/nvidia" ] && while read -r d; do libdirs+=("$d"); done < <(find "$sp/nvidia" -maxdepth 3 -name 'lib*.so*' -printf '%h\n' | sort -u)
done
[ -d /usr/local/nvidia/lib64 ] && libdirs+=(/usr/local/nvidia/lib64)
cudnn=/tmp/tessera-cudnn
rm -rf "$cudnn" && mkdir -p "$cudnn"
for d in "${libdirs[@]}"; do for f in "$d"/libcudnn*.so.*; do [ -e "$f" ] && ln -sf "$f" "$cudnn/"; done; done
[ -e "$cudnn/libcudnn.so.9" ] && ln -sf libcudnn.so.9 "$cudnn/libcudnn.so"
export LD_LIBRARY_PATH="$cudnn${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
libpath=$(IFS=,; echo "${libdirs[*]}")
echo "device-check: CUDA library folders: ${libpath:-(none found)}"
command -v nvidia-smi >/dev/null && nvidia-smi >"$out/nvidia-smi.txt" 2>&1

timeout 450 "${run[@]}" --out "$out/device-check.json" --cuda-lib-path "$libpath" "$@" 2>&1 | grep -v 'maxDynamic.*artificially reduced' | tee "$out/device-check.log"
