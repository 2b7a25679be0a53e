"""Property-based run of the OpenAPI document (schemathesis): no input makes the service answer 5xx."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import hypothesis
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from service_helpers import TOKEN

from service.api.app import create_app
from service.queue.db import migrate
from service.settings import Settings

# Built at collection: schemathesis' fixture loader does not support this pytest; the state dir is throw-away.
_ROOT = Path(tempfile.mkdtemp(prefix="rdvae-fuzz-"))
atexit.register(shutil.rmtree, _ROOT, True)
_SETTINGS = Settings(state_dir=_ROOT / "state", data_root=_ROOT, api_tokens=[TOKEN], max_active_sweeps_per_token=10**6)
_APP = create_app(_SETTINGS, start_runner=False)  # sweeps stay queued: this run is about the HTTP layer
migrate(_APP.state.engine)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@schema.parametrize()
@hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_makes_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
    )
