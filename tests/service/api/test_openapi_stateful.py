"""Second schemathesis profile: the stateful phase, with the auth header, over the OpenAPI links (create a sweep or
a schedule, then read, change, pause, cancel or delete it): no sequence of calls makes the service answer 5xx, and
every answer conforms to the document."""

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

_ROOT = Path(tempfile.mkdtemp(prefix="rdvae-stateful-"))
atexit.register(shutil.rmtree, _ROOT, True)
_SETTINGS = Settings(state_dir=_ROOT / "state", data_root=_ROOT, api_tokens=[TOKEN], cluster_cpus=256.0,
                     cluster_gpus=1.0, max_active_sweeps_per_token=10**6, max_schedules_per_token=10**6)  # fmt: skip
_APP = create_app(_SETTINGS, start_runner=False)  # sweeps stay queued: this run is about the HTTP layer
migrate(_APP.state.engine)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


class _Authenticated(schema.as_state_machine()):
    def get_call_kwargs(self, case: schemathesis.Case) -> dict:
        return {"headers": {"Authorization": f"Bearer {TOKEN}"}}

    def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:  # noqa: ANN001
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                 response_schema_conformance])  # fmt: skip


def test_the_document_links_created_objects_to_their_operations() -> None:
    links = schema.raw_schema["paths"]["/v1/sweeps"]["post"]["responses"]["202"]["links"]
    assert any(link["parameters"] == {"sweep_id": "$response.body#/id"} for link in links.values())
    assert len(links) >= 5  # get, delete, cancel, trials, pareto: transitions for the state machine to walk


TestStatefulWithAuth = _Authenticated.TestCase
TestStatefulWithAuth.settings = hypothesis.settings(
    max_examples=100, stateful_step_count=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
