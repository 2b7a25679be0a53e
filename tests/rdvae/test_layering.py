"""House rule 1: dependencies point one way, so rdvae imports neither Ray, MLflow nor FastAPI."""

from __future__ import annotations

import subprocess
import sys


def test_importing_rdvae_and_training_pulls_in_no_orchestration_package() -> None:
    # A fresh interpreter: the test process itself has Ray and MLflow loaded by other test modules.
    code = (
        "import sys, rdvae, rdvae.cli\n"
        "found = sorted(m for m in ('ray', 'mlflow', 'fastapi') if m in sys.modules)\n"
        "print(','.join(found))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == ""
