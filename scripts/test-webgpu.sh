#!/usr/bin/env bash
# `npm run test:webgpu`: the WebGPU execution-provider tests on Mesa's software Vulkan (lavapipe), no GPU needed.
# Installs what is missing (Debian/Ubuntu, as root): Debian 12's own Mesa (22.x) is too old for Dawn, bookworm-backports'
# Mesa 25 works. Extra arguments go to vitest (e.g. a file or -t NAME).
set -euo pipefail
cd "$(dirname "$0")/.."

mesa_major() { dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | sed -E 's/^([0-9]+:)?([0-9]+).*/\2/'; }
have_vulkan() {
  ldconfig -p | grep -q 'libvulkan\.so\.1' && ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && [ "$(mesa_major || echo 0)" -ge 24 ]
}

if ! have_vulkan; then
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
    echo "test:webgpu needs libvulkan1 and Mesa >= 24 lavapipe (mesa-vulkan-drivers); install them as root, or run as root on Debian" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  target=()
  if grep -qs 'bookworm' /etc/os-release; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo 'deb http://deb.debian.org/debian bookworm-backports main' >/etc/apt/sources.list.d/bookworm-backports.list
    fi
    target=(-t bookworm-backports)
  fi
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${target[@]}" mesa-vulkan-drivers libvulkan1 >/dev/null
  have_vulkan || { echo "lavapipe install did not give Mesa >= 24 (have: $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers))" >&2; exit 1; }
fi

export TESSERA_TEST_DEVICE="${TESSERA_TEST_DEVICE:-webgpu}"
exec npx vitest run --config test/webgpu/vitest.config.ts "$@"
