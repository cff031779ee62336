"""Salesforce fixtures: the fake org on loopback (factory and a small default), its control
client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.salesforce import SalesforceSandbox
from cz_pipeline.sandbox.server import RunningSandbox


@pytest.fixture
def make_sf() -> Iterator:
    """`make_sf(**sandbox kwargs)` → (app, running server, control)."""
    running: list[RunningSandbox] = []

    def make(**kwargs: Any) -> tuple[SalesforceSandbox, RunningSandbox, SandboxControl]:
        app = SalesforceSandbox(**kwargs)
        server = RunningSandbox(app)
        running.append(server)
        return app, server, SandboxControl(server.url)

    yield make
    for server in running:
        server.stop()


@pytest.fixture
def sf(make_sf) -> tuple[SalesforceSandbox, RunningSandbox, SandboxControl]:
    return make_sf()
