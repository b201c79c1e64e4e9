"""The agent's heartbeat row: the same table as the file rows (one table for a SOC to query
and alert on), with ScanSource "heartbeat" and the agent's health in AgentStatus as a JSON
object. Its file columns are null; Timestamp and ReportId are stamped as every row's are.

A heartbeat goes to every sink whatever its emission policy, and ahead of inventory rows in an
outbox: a SOC alerts when a device's heartbeats stop, so they must not wait behind a backlog.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .columns import NAMES

HEARTBEAT = "heartbeat"  # its ScanSource


def heartbeat_row(device_id: str, device_name: str, status: Mapping) -> dict:
    """A heartbeat row; ``status`` is the agent's health, as plain JSON values."""
    row = dict.fromkeys(NAMES)
    row.update(
        DeviceId=device_id,
        DeviceName=device_name,
        ScanSource=HEARTBEAT,
        AgentStatus=json.dumps(status, ensure_ascii=False, separators=(",", ":"), sort_keys=True),
    )
    return row


def is_heartbeat(row: Mapping) -> bool:
    return row.get("ScanSource") == HEARTBEAT
