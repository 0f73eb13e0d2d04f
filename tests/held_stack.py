"""The inner run of ``tests/test_cleanup.py``: a session's stack, its processes listed, held until
the run is killed.

Not collected on its own (its name does not start with ``test_``): ``test_cleanup`` runs it by
path in a pytest of its own, with :data:`MARKER` naming the file to write once everything is up.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.helpers import recorder
from tests.stack import procs
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.restate import RestateServer
from tests.stack.services import HandlerServer

MARKER = "RESTATE_BRIDGE_CLEANUP_MARKER"
"""The environment variable naming the file listing the started processes (JSON)."""


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_hold_the_stack(
    broker: Broker, restate: RestateServer, handlers: HandlerServer, bridges: BridgeFactory
) -> None:
    marker = os.environ.get(MARKER)
    if not marker:
        pytest.skip(f"run by tests/test_cleanup.py, which sets {MARKER}")
    listed: dict[str, object] = {"pytest": os.getpid()}
    try:
        bridges.start(recorder("held-stack"), group_id="held-stack", wait_ready=False)
    except procs.StackError as exc:  # a checkout whose bridge cannot start still proves the rest
        listed["bridge_failed"] = str(exc).splitlines()[0]
    listed["groups"] = procs.tracked()
    written = Path(marker + ".part")
    written.write_text(json.dumps(listed))
    written.rename(marker)  # whole or absent for the reader
    time.sleep(240)  # until the SIGTERM
