"""``examples/client.py`` (each Go ingress-client call in Python) runs as written against Restate
with the demo's handlers (``examples/handlers.py``) registered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def test_the_client_example_runs_against_the_demos_services(
    demo_services: RestateServer,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.client"],
        cwd=ROOT,
        env={**os.environ, "RESTATE_URL": demo_services.ingress_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
    assert lines["request"].strip() == "sent welcome to ada@example.com"
    assert lines["send (delayed 1s)"].strip().startswith("inv_")
    assert lines["attach by id"].strip() == "order number 1"
    assert lines["output by idempotency key"].strip() == "order number 1"
    assert lines["request (shared handler)"].strip() == "[{'sku': 'a', 'qty': 1}]"
    assert lines["workflow submitted"].strip().startswith("inv_")
    assert lines["workflow attach"].strip() == "authorised 12.50 EUR"
    assert lines["workflow output"].strip() == "authorised 12.50 EUR"
    assert lines["sync request"].strip() == "sent bye to bob"
