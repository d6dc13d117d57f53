#!/usr/bin/env bash
# Packs, into .devpkgs/ (ignored by git), the pure-Python packages that a lent GPU machine
# lacks and cannot download: the official sam2 and its configuration stack. They are copied
# from this machine's installation (run `bash scripts/test.sh` once first), so no network is
# needed on either side. Then carry ".devpkgs" and put it on PYTHONPATH (see
# benchmarks/gpu_table.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.devpkgs/' .git/info/exclude 2>/dev/null || echo '/.devpkgs/' >> .git/info/exclude
rm -rf .devpkgs && mkdir -p .devpkgs
for mod in sam2 hydra omegaconf antlr4 iopath safetensors; do
  dir=$(python3 -c "import importlib, os; m = importlib.import_module('$mod'); print(os.path.dirname(m.__file__))")
  cp -r "$dir" .devpkgs/
done
du -sh .devpkgs
