"""Tests of the `rdvae` command line, run as real subprocesses (and `main(argv)` in-process for usage errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rdvae.cli import main

TINY = ["--dataset", "digits", "--epochs", "2", "--hidden", "32", "--latent-dim", "4", "--batch-size", "64"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m rdvae ARGS` with one intra-op thread, as the tiny models here run fastest that way."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rdvae", *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_train_prints_progress_and_the_held_out_table() -> None:
    done = run_cli("train", *TINY, "--iwae-samples", "5", "--beta", "0.5")
    assert done.returncode == 0, done.stderr
    assert "epoch 1/2 [" in done.stderr and "epoch 2/2 [====================] elbo -" in done.stderr
    header, rule, *rows = done.stdout.strip().splitlines()
    assert header.split() == ["metric", "validation", "test"]
    assert set(rule) == {"-"}
    names = [row.rsplit(maxsplit=2)[0] for row in rows]
    for expected in ("rate R (nats)", "distortion D (nats)", "ELBO (nats)", "active units", "collapsed"):
        assert expected in names
    assert any(row.startswith("IWAE NLL (nats)") and "(k=5)" in row for row in rows)
    assert any(row.startswith("marginal KL") for row in rows) and any("mutual info" in row for row in rows)


def test_train_json_and_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.pt"
    first = run_cli("train", *TINY, "--C", "3", "--gamma", "50", "--iwae-samples", "0", "--json",
                    "--checkpoint", str(checkpoint), "--quiet")  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # --quiet: no progress bar
    report = json.loads(first.stdout)
    assert report["config"]["objective"]["kind"] == "capacity"  # implied by --C
    assert report["config"]["objective"]["capacity"] == 3.0
    assert report["epochs_run"] == 2
    assert report["checkpoint"] == str(checkpoint) and checkpoint.is_file()
    for split in ("validation", "test"):
        metrics = report[split]
        assert metrics["elbo"] == pytest.approx(-(metrics["rate"] + metrics["distortion"]))
        assert len(metrics["kl_per_dim"]) == 4
        assert "nll" not in metrics  # --iwae-samples 0


def test_resume_continues_from_the_checkpoint_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "run.pt"
    assert main(["train", *TINY, "--iwae-samples", "0", "--checkpoint", str(checkpoint), "--quiet"]) == 0
    capsys.readouterr()
    resumed = ["train", *TINY[:2], "--epochs", "3", *TINY[4:], "--iwae-samples", "0", "--json"]
    assert main([*resumed, "--resume", str(checkpoint)]) == 0
    captured = capsys.readouterr()
    assert "epoch 3/3" in captured.err and "epoch 1/3" not in captured.err
    assert json.loads(captured.out)["epochs_run"] == 3
    assert main([*resumed, "--resume", str(tmp_path / "absent.pt")]) == 2
    assert "absent.pt" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--beta", "-1"], "argument --beta: must be > 0, got -1"),
        (["--dataset", "nope"], "argument --dataset: invalid choice: 'nope'"),
        (["--epochs", "0"], "argument --epochs: must be >= 1"),
        (["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
        (["--decoder", "pixelcnn"], "argument --decoder: invalid choice"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *args]) == 2
    captured = capsys.readouterr()
    assert named in captured.err
    assert "usage: rdvae" in captured.err
    assert captured.out == ""


def test_a_usage_error_in_a_subprocess_exits_2_without_a_traceback() -> None:
    done = run_cli("train", "--dataset", "nope", "--beta", "1")
    assert done.returncode == 2
    assert "argument --dataset: invalid choice: 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_config_validation_errors_are_one_clean_line_per_field(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["train", "--objective", "elbo", "--beta", "2", "--decoder", "made", "--likelihood", "gaussian",
                   "--batch-size", "100000"])  # fmt: skip
    assert status == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rdvae train: error:")]
    assert len(errors) == 3
    assert any("argument --batch-size (train.batch_size)" in line for line in errors)
    assert any("objective: objective 'elbo' has beta = 1" in line for line in errors)
    assert any("decoder 'made'" in line and "bernoulli" in line for line in errors)
    assert main(["train", "--latent-dim", "600"]) == 2
    assert "argument --latent-dim (model.latent_dim): Input should be less than or equal to 512" in (
        capsys.readouterr().err
    )


def test_bad_data_files_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RDVAE_DATA_ROOT", str(tmp_path))
    assert main(["train", "--data-path", "../secrets.npy", "--epochs", "1"]) == 2
    assert "data path '../secrets.npy': '..' is not allowed" in capsys.readouterr().err
    assert main(["train", "--data-path", "absent.npy", "--epochs", "1"]) == 2
    assert "no such file under the data root" in capsys.readouterr().err
    np.save(tmp_path / "nan.npy", np.full((20, 4), np.nan))
    assert main(["train", "--data-path", "nan.npy", "--epochs", "1"]) == 2
    assert "(data.path): data file 'nan.npy': contains NaN or inf" in capsys.readouterr().err
    np.save(tmp_path / "grey.npy", np.full((20, 4), 0.5))
    assert main(["train", "--data-path", "grey.npy", "--epochs", "1"]) == 2
    assert "argument --likelihood (model.likelihood): likelihood 'bernoulli' needs" in capsys.readouterr().err
    np.save(tmp_path / "counts.npy", np.random.default_rng(0).poisson(3.0, size=(20, 4)))
    assert main(["train", "--data-path", "counts.npy", "--likelihood", "zinb", "--epochs", "1", "--quiet"]) == 0


def test_main_is_callable_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--help"]) == 0
    assert "--iwae-samples" in capsys.readouterr().out
    assert main([]) == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "rdvae"
    if not script.exists():
        pytest.skip("the rdvae console script is not installed in this environment")
    done = subprocess.run(
        [str(script), "train", "--beta", "0"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "argument --beta: must be > 0, got 0" in done.stderr


def test_cuda_graph_flag_on_cpu_trains_eagerly_and_says_why() -> None:
    done = run_cli("train", *TINY, "--device", "cpu", "--cuda-graph", "--iwae-samples", "0", "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "train.cuda_graph: CUDA graphs need a CUDA device, this run trains on cpu; training eagerly" in done.stderr
    assert json.loads(done.stdout)["config"]["train"]["cuda_graph"] is True
