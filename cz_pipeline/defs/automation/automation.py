"""Sensors and schedules that drive the syncs. Built in the automation issue."""

from typing import Any

import dagster as dg


def build_sensors(jobs: dict[str, Any]) -> list[dg.SensorDefinition]:
    return []


def build_schedules(jobs: dict[str, Any]) -> list[dg.ScheduleDefinition]:
    return []
