#!/usr/bin/env bash
# The reference-scale training profile on a lent GPU machine (the `device` tool; its image has
# python3 3.12 with CUDA torch, transformers, sentence-transformers, and reaches no registry).
# scripts/device_payload.sh stages, here, what that image lacks as parts .gpu/p0.d .. p4.d (60 MiB
# each), the code as .gpu/tree (the commit in .gpu/commit, without the records) and nothing else; a
# call carries 64 MiB in all, so the machine gets the parts over five calls in a row, each within
# the 30 s the machine stays warm after the last (it keeps /tmp between calls while warm):
#
#   1. carry .gpu/p0.d:             mkdir -p /tmp/payload && cp .gpu/p0.d/part /tmp/payload/p0
#   2. carry .gpu/p1.d .gpu/tree:   P=$PWD/.gpu; cd .gpu/tree && PARTS=$P bash scripts/device_reference.sh stash 1 smoke
#   3. carry .gpu/p2.d:             cp .gpu/p2.d/part /tmp/payload/p2
#   4. carry .gpu/p3.d:             cp .gpu/p3.d/part /tmp/payload/p3
#   5. carry .gpu/p4.d .gpu/tree .gpu/commit:
#        P=$PWD/.gpu; mkdir -p .gpu/tree/benchmarks/results && cp benchmarks/results/training_runs.jsonl \
#        .gpu/tree/benchmarks/results/ && cd .gpu/tree && PARTS=$P bash scripts/device_reference.sh stash 4 run 8
#
# Steps (several in one call run in order):
#   stash N            keep part N in /tmp/payload
#   smoke              unpack what has come (the wheels are in the first two parts), install it in
#                      /tmp/site, and run scripts/device_smoke.py: Flower + Ray on the GPU, tiny model
#   run MINUTES        unpack everything, prepare SmolLM2, run `training_bench --profile reference`
#                      (BENCH_EXTRA: more arguments), starting no run that would end past MINUTES;
#                      records to $OUT/training_runs.jsonl (the committed records plus the new ones)
set -uo pipefail
REPO=$(pwd)
PARTS=${PARTS:-$REPO/.gpu}  # the staged parts and the commit they were staged at
PAYLOAD=/tmp/payload SITE=/tmp/site X=/tmp/unpacked
OUT=${OUT:-/tmp/out}
mkdir -p "$PAYLOAD" "$OUT"
export PYTHONPATH=$SITE:$REPO PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export FEDROUTER_CACHE=/tmp/cache
PY=${PYTHON:-python3}
say() { echo "[$(date +%T)] $*"; }

unpack() {  # what has come so far; a part still missing cuts the last file short (unpacked again later)
    rm -rf "$X" && mkdir -p "$X"
    cat $(ls "$PAYLOAD"/p* | sort) | tar -x -C "$X" 2>/dev/null
    say "unpacked $(du -sh "$X" | cut -f1) from $(ls "$PAYLOAD" | wc -l) parts"
}

install() {
    mkdir -p "$SITE" "$FEDROUTER_CACHE"
    if [ ! -f "$SITE/.installed" ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$X"/whl/*.whl \
            || { say "pip install failed"; exit 1; }
        touch "$SITE/.installed"
    fi
    for d in "$X"/site/*; do rm -rf "$SITE/$(basename "$d")"; cp -r "$d" "$SITE/"; done
    cp -r "$X"/cache/* "$FEDROUTER_CACHE/" 2>/dev/null
    # fedrouter as its pyproject maps it (package-dir), without building it
    rm -rf "$SITE/fedrouter" && cp -r "$REPO/fedrouter" "$SITE/fedrouter"
    for sub in router serving training; do ln -sfn "$REPO/$sub" "$SITE/fedrouter/$sub"; done
    "$PY" - <<'PYEOF'
import importlib, torch
for m in ("ray", "flwr", "peft", "gguf", "transformers", "sentence_transformers", "rouge_score", "numpy"):
    mod = importlib.import_module(m)
    print(f"{m} {getattr(mod, '__version__', '?')}", end="; ")
print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      f" ({torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'})")
PYEOF
}

while [ $# -gt 0 ]; do
    case "$1" in
    stash)
        cp "$PARTS/p$2.d/part" "$PAYLOAD/p$2" && say "part $2 kept ($(du -sh "$PAYLOAD" | cut -f1) in all)"
        shift 2 ;;
    smoke)
        unpack; install
        say "smoke: tiny model, Flower + Ray, on $($PY -c 'from fedrouter.training.model import device; print(device())')"
        "$PY" scripts/device_smoke.py fedrouter fedavg 2>&1 | grep -v "Loading weights\|Writing model" | tee "$OUT/smoke.log"
        say "smoke done (exit ${PIPESTATUS[0]})"
        shift ;;
    run)
        minutes=$2; shift 2
        unpack; install
        "$PY" -c 'from fedrouter.training.base_model import prepare_base_model; print(prepare_base_model())' \
            2>&1 | tail -1
        cp "$REPO/benchmarks/results/training_runs.jsonl" "$OUT/training_runs.jsonl"
        before=$(wc -l < "$OUT/training_runs.jsonl")
        say "reference profile, deadline ${minutes} min"
        FEDROUTER_SOURCE_COMMIT=$(cat "$PARTS/commit") "$PY" -m benchmarks.training_bench --profile reference \
            --records "$OUT/training_runs.jsonl" --work /tmp/work --deadline-min "$minutes" ${BENCH_EXTRA:-} 2>&1 \
            | grep -v "Loading weights\|Writing model" | tee "$OUT/bench.log"
        say "bench exit ${PIPESTATUS[0]}; $(( $(wc -l < "$OUT/training_runs.jsonl") - before )) new records"
        tail -c 3000 /tmp/work/*/train.log > "$OUT/train_logs_tail.txt" 2>/dev/null
        ;;
    *) echo "unknown step $1"; exit 2 ;;
    esac
done
