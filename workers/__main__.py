"""CLI: `python -m workers run --spec SPEC --sweep-id ID ...` — one sweep driver process (what the service spawns).

Exit codes: 0 success, 1 failure, 2 invalid spec or arguments, 3 cancelled (SIGTERM: the sweep ends gracefully,
running trials are stopped, the selection of what finished is still recorded).
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType

from workers.datasets import checked_or_spec_error
from workers.results import SweepProgress
from workers.spec import SpecError, check_sweep_id, load_spec

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers", description="rdvae sweep engine")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run or resume one sweep")
    run.add_argument("--spec", required=True, type=Path, help="sweep spec, .yaml/.yml or .json")
    run.add_argument("--sweep-id", required=True, help="names the sweep's directory; an existing one is resumed")
    run.add_argument("--storage-root", type=Path, help="default: $RDVAE_STORAGE_ROOT or .rdvae/sweeps")
    run.add_argument("--ray-address", help="default: $RAY_ADDRESS, else a local Ray")
    run.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///.rdvae/mlflow.db")
    run.add_argument("--progress-file", type=Path, help="one JSON SweepProgress appended per trial event")
    run.add_argument("--result-file", type=Path, help="the SweepResult as JSON, written at the end")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        spec = load_spec(args.spec)
        check_sweep_id(args.sweep_id)
        checked_or_spec_error(spec)  # the data set against the model: shape, size, values, before Ray starts
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    # Ray and MLflow load only for a valid spec: a refused spec answers in about a second.
    import ray

    from workers.sweep import connect_ray, run_sweep

    cancelled: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        cancelled.append(signum)

    def on_progress(progress: SweepProgress) -> None:
        if args.progress_file is not None:
            with args.progress_file.open("a") as handle:
                handle.write(progress.model_dump_json() + "\n")

    try:
        # ray.init installs its own SIGTERM handler (exit at once); connect first, then take SIGTERM back.
        owns_ray = connect_ray(args.ray_address)
        signal.signal(signal.SIGTERM, on_sigterm)
        try:
            result = run_sweep(
                spec,
                sweep_id=args.sweep_id,
                storage_root=args.storage_root,
                tracking_uri=args.tracking_uri,
                on_progress=on_progress,
                should_stop=lambda: bool(cancelled),
            )
        finally:
            if owns_ray:
                ray.shutdown()
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except Exception:
        traceback.print_exc()
        return EXIT_FAILED
    if args.result_file is not None:
        args.result_file.write_text(result.model_dump_json(indent=2))
    failed = sum(t.status == "failed" for t in result.trials)
    print(
        f"sweep {result.sweep_id}: {len(result.trials)} trials ({failed} failed); {result.selection.reason}",
        file=sys.stderr,
    )
    return EXIT_CANCELLED if result.cancelled else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
