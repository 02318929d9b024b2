"""Entry point of the fleet starter: the schedule's event names the fleets (no settings, no environment)."""

from __future__ import annotations

from typing import Any

from functions.fleet.starter import FleetRef, size_fleets


def _client(service: str) -> Any:
    import botocore.session  # the runtime's botocore; region from Lambda's own environment

    return botocore.session.get_session().create_client(service)


def lambda_handler(event: dict[str, Any], _context: object) -> dict[str, Any]:
    fleets = [FleetRef.from_event(item) for item in event.get("fleets", [])]
    sizings = size_fleets(_client("sqs"), _client("autoscaling"), fleets)
    return {
        "fleets": [
            {"group": s.group_name, "backlog": s.backlog, "desired": s.desired, "wanted": s.wanted} for s in sizings
        ]
    }
