"""`make bench`: every benchmark in turn on the default models, then benchmarks/README.md.

Run alone on the machine: the numbers are timings. Serving ~18 min per embedder on 2 cores; training (training_bench, full
profile) is designed for <= 100 min.
    python -m benchmarks.run [--skip training_bench,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

ORDER = [  # a name, or a name and its arguments
    "routing",
    "embedders",
    ("gateway_overhead", "--embedder", "minilm"),
    ("gateway_overhead", "--embedder", "minilm", "--stub"),
    "gateway_overhead",  # the default embedder: static
    ("gateway_overhead", "--stub"),
    "serving",
    ("serving", "--embedder", "static"),
    "vllm_bench",
    "reload",
    "many_adapters",
    "replicas",
    "training_bench",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    skip = set(ap.parse_args().skip.split(","))
    for item in ORDER:
        name, *args = (item,) if isinstance(item, str) else item
        if name not in skip:
            print(f"=== benchmarks.{name} {' '.join(args)}", flush=True)
            subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args], check=True)
    subprocess.run([sys.executable, "-m", "benchmarks.report"], check=True)


if __name__ == "__main__":
    main()
