"""One import identity: every module of the project exists once, under `fedrouter.*`.

The design's folders (router/, serving/, training/) sit at the top of the repository, whose root
pytest puts on sys.path; importing them by their folder names would load every module a second
time, with its own copy of each class."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import fedrouter

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("router", "serving", "training")


def test_every_module_imports_under_fedrouter_only():
    for sub in FOLDERS:
        package = importlib.import_module(f"fedrouter.{sub}")
        for info in pkgutil.walk_packages(package.__path__, f"fedrouter.{sub}."):
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as e:  # an optional extra (flwr, peft) absent: not this test's subject
                if (e.name or "").split(".")[0] in ("fedrouter", *FOLDERS):
                    raise
    stray = sorted(m for m in sys.modules if m.split(".")[0] in FOLDERS)
    assert stray == [], f"modules imported outside fedrouter.*: {stray}"
    assert fedrouter.__name__ == "fedrouter"


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_folder_name_is_not_a_second_module(folder):
    """`serving.errors.GatewayError` must not be a second class beside fedrouter.serving.errors's."""
    module = {"serving": "errors", "router": "release", "training": "config"}[folder]
    r = subprocess.run([sys.executable, "-c", f"import {folder}.{module}"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and f"import fedrouter.{folder}, not '{folder}'" in r.stderr
