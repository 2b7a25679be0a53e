"""One-command GPU check of issue 9's figures, for a machine with Python 3.12 and torch but no network.

From the project root (standard library + torch only until the bundle is unpacked):

    ../shared/tools/gpu-bundle.sh      # once, on a machine with network: writes .gpu-bundle/ (Ray, Optuna, MLflow…)
    python3 bench/gpu_check.py         # on the GPU machine: ~10 min; --quick: ~4 min; --cpu-smoke: this script's test

It unpacks `.gpu-bundle/` (as gpu-bundle.sh describes) into a scratch site directory, then runs
bench/graph_agreement.py (graphs and cohorts change speed, not held-out R and D), bench/cohort_throughput.py
(single trial eager / CUDA graph / naive loop, cohorts K = 1..1024 eager and graphed) and bench/sweep_gpu.py (an
N-trial beta x C sweep: cohorts vs Ray Tune one trial per process, 0.25 GPU each), and prints each figure against
the issue's target. Without the bundle (and without Ray importable) the sweep
comparison is skipped with a message; the throughput figures need only torch, pydantic, numpy and mlxtend.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"graph_vs_naive": 10.0, "cohort128_vs_fit": 100.0, "sweep_ratio": 30.0}


def unpack_bundle(bundle: Path, site: Path) -> None:
    """Ray's repacked tree and the wheels of .gpu-bundle/ into `site`, without network or an index."""
    marker = site / ".rdvae-bundle"
    if marker.exists():
        return
    site.mkdir(parents=True, exist_ok=True)
    with tarfile.open(bundle / "ray.tar.xz") as archive:
        archive.extractall(site, filter="tar")
    wheels = sorted(str(path) for path in bundle.glob("*.whl"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), *wheels]
    subprocess.run(pip, check=True)
    marker.write_text(str(time.time()))


def environment(site: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(site)] if site is not None else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run(command: list[str], env: dict[str, str], timeout: float) -> bool:
    print(f"\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, cwd=ROOT, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(f"timed out after {timeout:.0f} s", flush=True)
        return False
    print(f"({time.perf_counter() - started:.0f} s, exit {completed.returncode})", flush=True)
    return completed.returncode == 0


def verdict(name: str, value: float | None, target: float) -> str:
    if value is None:
        return f"{name:58s}      n/a   (target >= {target:g}x)"
    return f"{name:58s} {value:8.1f}x  (target >= {target:g}x: {'met' if value >= target else 'NOT met'})"


def summary(throughput: dict | None, sweep: dict | None) -> list[str]:
    lines = [f"device: {(throughput or sweep or {}).get('device', 'unknown')}"]
    graph = naive_ratio = None
    if throughput is not None and "fit_graph" in throughput:
        graph = throughput["fit_graph"]
        naive_ratio = graph["step"] / throughput["naive"]
        lines.append(
            f"single trial: naive loop {throughput['naive']:.0f} ex/s, fit {throughput['fit']['step']:.0f}, "
            f"fit + CUDA graph {graph['step']:.0f} (epoch loop) / {graph['run']:.0f} (whole run)"
        )
    lines.append(
        verdict("single trial with CUDA graphs vs the naive loop (step)", naive_ratio, TARGETS["graph_vs_naive"])
    )
    best: float | None = None
    for cohort in (throughput or {}).get("cohorts", []):
        lines.append(
            f"  K = {cohort['k']:5d} {cohort['mode'][:7]:7s}: {cohort['rates']['step']:12.0f} member-ex/s, "
            f"{cohort['vs_fit']['step']:7.1f}x separate fits (step), {cohort['vs_fit']['run']:7.1f}x (run), "
            f"peak {cohort['peak_gib']:.1f} GiB"
        )
        if cohort["k"] == 128:
            best = max(best or 0.0, cohort["vs_fit"]["step"])
    lines.append(verdict("cohort K = 128 vs separate fits (member-ex/s, best mode)", best, TARGETS["cohort128_vs_fit"]))
    ratio = None if sweep is None else sweep.get("ratio")
    if sweep is not None and ratio is not None:
        lines.append(
            f"sweep of {sweep['trials']} trials: cohorts {sweep['cohort_seconds']:.1f} s, one trial per process "
            f"{sweep['ray_seconds']:.1f} s"
        )
    lines.append(verdict("sweep: one trial per process / cohorts (wall time)", ratio, TARGETS["sweep_ratio"]))
    if sweep is not None and sweep.get("sweep_ratio") is not None:
        lines.append(f"  the real cohort sweep (cohorts as Tune trials): {sweep['cohort_sweep_seconds']:.1f} s")
        cohort_sweep = sweep["sweep_ratio"]
        lines.append(verdict("sweep: one trial per process / cohort sweep", cohort_sweep, TARGETS["sweep_ratio"]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sweep (64 trials, 5 epochs), K up to 512")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run that checks this script end to end")
    parser.add_argument("--bundle", type=Path, default=ROOT / ".gpu-bundle")
    parser.add_argument("--site", type=Path, default=Path(tempfile.gettempdir()) / "rdvae-site")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", tempfile.gettempdir())))
    args = parser.parse_args()
    site = None
    if args.bundle.is_dir():
        unpack_bundle(args.bundle, args.site)
        site = args.site
    env = environment(site)
    sys.path[:0] = [p for p in env["PYTHONPATH"].split(os.pathsep) if p]
    has_ray = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("mlflow") is not None
    if not has_ray:
        print(f"no {args.bundle} and no Ray/MLflow importable: the sweep comparison is skipped "
              "(build the bundle with ../shared/tools/gpu-bundle.sh on a machine with network)")  # fmt: skip
    py = sys.executable
    throughput_json, sweep_json = args.out / "gpu_throughput.json", args.out / "gpu_sweep.json"
    for stale in (throughput_json, sweep_json):
        stale.unlink(missing_ok=True)
    if args.cpu_smoke:
        throughput = [py, "bench/cohort_throughput.py", "--device", "cpu", "--sizes", "1,2", "--epochs", "1",
                      "--repeats", "1", "--hidden", "64", "--latent-dim", "8"]  # fmt: skip
        sweep = [py, "bench/sweep_gpu.py", "--dataset", "digits", "--trials", "4", "--epochs", "1", "--gpus", "0",
                 "--concurrency", "2", "--cohort-size", "4", "--hidden", "64", "--latent-dim", "8",
                 "--iwae-samples", "5"]  # fmt: skip
    else:
        sizes = "1,8,32,128,512" if args.quick else "1,8,32,128,512,1024"
        throughput = [py, "bench/cohort_throughput.py", "--dataset", "mnist5k", "--device", "cuda", "--sizes", sizes,
                      "--epochs", "3", "--repeats", "2"]  # fmt: skip
        trials, epochs = ("64", "5") if args.quick else ("256", "10")
        sweep = [py, "bench/sweep_gpu.py", "--dataset", "mnist5k", "--trials", trials, "--epochs", epochs, "--gpus",
                 "0.25", "--concurrency", "4", "--cohort-size", "128", "--cuda-graph"]  # fmt: skip
    agreement = [py, "bench/graph_agreement.py"]
    agreement += ["--device", "cpu", "--dataset", "digits", "--epochs", "1"] if args.cpu_smoke else []
    agreed = run(agreement, env, timeout=300)
    run([*throughput, "--json", str(throughput_json)], env, timeout=420 if args.quick else 900)
    if has_ray:
        run([*sweep, "--json", str(sweep_json)], env, timeout=420 if args.quick else 1800)
    loaded = [json.loads(path.read_text()) if path.exists() else None for path in (throughput_json, sweep_json)]
    print("\n== issue 9 figures ==")
    print(f"results agree (cohort graphed vs eager, members vs separate fits, fit graphed vs eager): "
          f"{'yes' if agreed else 'NO: see bench/graph_agreement.py above'}")  # fmt: skip
    print("\n".join(summary(*loaded)))


if __name__ == "__main__":
    main()
