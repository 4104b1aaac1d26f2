#!/usr/bin/env bash
# Set up the node on a fresh Debian machine (run as root from the repository root).
#   - Debian packages: Orthanc (the PACS for tests and demo), dcmtk and dicom3tools (independent
#     DICOM peers and the dciodvfy validator), python3-venv.
#   - A virtual environment in .venv with the project and its Python dependencies
#     (torch pinned to 2.13.0: a CPU wheel; looser pins pull gigabytes of CUDA packages).
# Idempotent: a second run only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

need_apt=()
for pair in orthanc:/usr/sbin/Orthanc dcmtk:/usr/bin/storescu dicom3tools:/usr/bin/dciodvfy; do
  pkg=${pair%%:*}; bin=${pair#*:}
  [ -x "$bin" ] || need_apt+=("$pkg")
done
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
# Orthanc web viewer + Chromium: the viewer test looks at the overlay series as a user would;
# orthanc-python: the Python autorouting variant.
[ -f /usr/share/orthanc/plugins/libOrthancWebViewer.so ] || need_apt+=(orthanc-webviewer)
[ -f /usr/share/orthanc/plugins/libOrthancPython.so ] || need_apt+=(orthanc-python)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Debian's orthanc package may start a system Orthanc on 4242/8042; the node's tests and demo
  # start their own on free ports, so the system one is left alone.
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python dependencies into .venv (torch==2.13.0 CPU)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/dicom-node)"
