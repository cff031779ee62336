"""Fixtures for the automation tests: a persistent (sqlite) Dagster instance in a temp folder,
created once per session (about a second each) and wiped before every test."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest


@pytest.fixture(scope="session")
def _dagster_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def instance(_dagster_instance: dg.DagsterInstance) -> dg.DagsterInstance:
    _dagster_instance.wipe()  # runs and event logs: each test starts from an empty history
    return _dagster_instance
