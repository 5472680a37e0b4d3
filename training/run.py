"""`fedrouter train`: the Flower app under the simulation engine, with a progress display."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fedrouter.router.release import Release
from fedrouter.training.config import TrainConfig


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send this process's stderr (file descriptor 2: Flower's and Ray's banners, the weight-loading
    bars, warnings) to a log file while the progress display keeps stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


RAY_COLD_START = "Timed out waiting for file"  # Ray's head waits a fixed 30 s for its GCS server


def start_ray(init_args: dict, say, attempts: int = 2) -> None:
    """Start Ray's head node before Flower does, trying once more if it misses Ray's fixed 30 s limit.

    The GCS server can die before it starts (the gRPC fork crash that `fedrouter.cli` sets
    GRPC_ENABLE_FORK_SUPPORT=0 against); Ray then waits 30 s for its port file and gives up. The next
    start takes ~1 s. Flower reuses a running Ray and shuts it down at the end."""
    import ray

    # as Flower does: Ray's workers must import what this process imports
    pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    for attempt in range(1, attempts + 1):
        try:
            with _pythonpath_for_ray(pythonpath) as runtime_env:
                ray.init(runtime_env=runtime_env, **init_args)
            return
        except RuntimeError as e:
            if RAY_COLD_START not in str(e) or attempt == attempts:
                raise
            ray.shutdown()
            say(f"Ray's head node did not start within Ray's 30 s limit (attempt {attempt}); starting it again")


@contextlib.contextmanager
def _pythonpath_for_ray(pythonpath: str) -> Iterator[dict | None]:
    """How Ray's workers get `pythonpath`. A head this process starts inherits its environment, and
    so do the workers that head starts ahead of any task (one per CPU): PYTHONPATH is set in the
    environment while Ray starts (then restored), so Flower's actors take those workers, already
    started, instead of new ones (a second each, measured on 2 cores). A runtime environment
    (`env_vars`) would make Ray start workers of their own for it. An existing cluster (RAY_ADDRESS)
    does not inherit this environment: there the runtime environment carries it (yielded)."""
    if os.environ.get("RAY_ADDRESS"):
        yield {"env_vars": {"PYTHONPATH": pythonpath}}
        return
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = pythonpath
    try:
        yield None
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def client_memory_bytes(base_model: str) -> int | None:
    """What one client training `base_model` on the CPU may hold, counted high: four times its weight
    files (loaded in float32 from bf16 files, activations, gradients) and 1 GiB for the libraries
    (torch, transformers, the embedder). None where the folder has no weight files to count."""
    files = [f for f in Path(base_model).glob("*") if f.suffix in (".safetensors", ".bin")]
    return 4 * sum(f.stat().st_size for f in files) + 2**30 if files else None


def available_memory_bytes() -> int | None:
    """The memory this machine can give without swapping (Linux's MemAvailable), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def ray_backend(
    num_clients: int,
    cores: int | None = None,
    gpu: bool | None = None,
    client_bytes: int | None = None,
    available_bytes: int | None = None,
) -> dict:
    """Flower's Ray backend settings: up to 8 clients at once, the cores split between them (on a
    CPU a client's torch threads are its share of the cores; on a CUDA GPU they share the GPU too).

    On the CPU, a client per core on one thread each trains faster than one client on every core
    (benchmarks/training_threads.py: a small model's operators split poorly across threads); each
    holds its own copy of the model, so no more run at once than half the available memory holds
    (`client_bytes` each, `available_bytes` in all, where both are known). Each client's training is
    seeded on its own, so what it computes does not depend on which others run beside it."""
    cores = cores or os.cpu_count() or 2
    if gpu is None:
        from fedrouter.training.model import device  # imports torch

        gpu = device().type == "cuda"
    at_once = max(1, min(num_clients, 8, cores))
    if not gpu and client_bytes and available_bytes:
        at_once = max(1, min(at_once, available_bytes // 2 // client_bytes))
    return {
        "client_resources": {"num_cpus": cores / at_once, "num_gpus": 1.0 / at_once if gpu else 0.0},
        "init_args": {
            "num_cpus": cores,
            **({"num_gpus": 1} if gpu else {}),
            "include_dashboard": False,
            "log_to_driver": False,
        },
    }


def no_cuda_device() -> bool:
    """True where torch cannot be using a CUDA GPU, known without importing torch (a second and a
    half): FEDROUTER_DEVICE names another device, or this is a Mac, or a Linux machine with no GPU
    device file (NVIDIA's /dev/nvidia*, ROCm's /dev/kfd, WSL's /dev/dxg). False where it cannot
    tell: torch then decides (training/model.py `device`)."""
    name = os.environ.get("FEDROUTER_DEVICE")
    if name:
        return not name.startswith("cuda")
    if sys.platform == "darwin":
        return True
    if sys.platform.startswith("linux"):
        dev = Path("/dev")
        return not any(dev.glob("nvidia*")) and not (dev / "kfd").exists() and not (dev / "dxg").exists()
    return False


def _apps():
    """The ClientApp and the ServerApp's factory, their modules imported."""
    from fedrouter.training.client_app import app as client_app
    from fedrouter.training.server_app import server_app_for

    return client_app, server_app_for


def _prepare(cfg: TrainConfig) -> None:
    from fedrouter.training.server_app import prepare

    prepare(cfg)


def train(cfg: TrainConfig, quiet: bool = False) -> Release:
    """Run the federation in-process (Flower simulation, Ray) and return the written release."""
    from concurrent.futures import ThreadPoolExecutor

    # Ray and Flower imported on this thread before the thread below imports the apps' modules
    from flwr.simulation import run_simulation
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fedrouter.training.base_model import prepare_base_model

    if not cfg.base_model:
        cfg.base_model = str(prepare_base_model())
    console = Console(quiet=quiet)
    result: dict = {}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task(f"{cfg.strategy}: query", total=cfg.rounds + 2)

    def report(event: str, data: dict) -> None:
        if event == "query":
            progress.update(
                task,
                advance=1,
                description=f"{cfg.strategy}: {data['clients']} clients, {data['local_clusters']} local clusters",
            )
        elif event == "plan":
            progress.console.print(f"  clusters: {data['clusters']}; client -> {{local: global}}: {data['assign']}")
        elif event == "round":
            progress.update(
                task,
                advance=1,
                description=f"{cfg.strategy}: round {data['round']}/{cfg.rounds} "
                f"loss {data['loss']:.3f} ({data['seconds']:.0f} s)",
            )
        elif event == "release":
            progress.update(task, advance=1, description=f"{cfg.strategy}: release {data['id']}")
            result["path"] = data["path"]

    backend = ray_backend(  # where no CUDA GPU can be, torch is imported by the apps' thread below, not here
        cfg.num_clients,
        gpu=False if no_cuda_device() else None,
        client_bytes=client_memory_bytes(cfg.base_model),
        available_bytes=available_memory_bytes(),
    )
    logging.getLogger("flwr").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no weight-loading bar per client per round
    log = Path(cfg.out) / "train.log"
    console.print(f"[dim]Flower and Ray logs: {log}[/]")
    started = time.monotonic()
    with progress, stderr_to(log), ThreadPoolExecutor(max_workers=1) as pool:
        # Ray's head takes seconds to start, mostly waiting for its own processes: meanwhile, the apps'
        # modules are imported (torch among them), then the fresh LoRA every cluster starts from is
        # made. The federation starts once Ray and the modules are ready; the ServerApp waits for the
        # LoRA only after the clients' query, and meets any failure of it again there.
        ready = pool.submit(_apps)
        pool.submit(_prepare, cfg)  # after `_apps`, on the same thread
        try:
            start_ray(backend["init_args"], progress.console.print)
            client_app, server_app_for = ready.result()
        except BaseException:
            import ray

            ray.shutdown()  # Flower shuts Ray down at the end of a run; none ran
            raise
        run_simulation(
            server_app=server_app_for(cfg, report),
            client_app=client_app,
            num_supernodes=cfg.num_clients,
            backend_config=backend,
            verbose_logging=False,
        )
    if "path" not in result:
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise RuntimeError(f"the federation ended without writing a release; the end of {log}:\n{tail}")
    from fedrouter.router.release import load_release

    release = load_release(result["path"])
    console.print(f"wrote release {release.id} to {release.path} in {time.monotonic() - started:.0f} s")
    return release
