"""Executions submitted the way clients submit them: over HTTP to the API (here the local gateway)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = secrets.token_urlsafe(16)  # a fresh user per run


@dataclass
class ApiUser:
    api: httpx.Client
    headers: dict[str, str]

    @classmethod
    def register(cls, api: httpx.Client) -> ApiUser:
        email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
        api.post("/auth/register", json={"email": email, "password": PASSWORD}).raise_for_status()
        tokens = api.post("/auth/login", json={"email": email, "password": PASSWORD})
        tokens.raise_for_status()
        return cls(api, {"Authorization": f"Bearer {tokens.json()['accessToken']}"})

    def create_pipeline(self, stages: list[dict[str, Any]]) -> str:
        body = {"name": "bench", "description": "benchmark", "stages": stages}
        created = self.api.post("/pipelines", json=body, headers=self.headers)
        created.raise_for_status()
        return str(created.json()["pipelineId"])

    def submit(self, pipeline_id: str, variables: dict[str, str] | None = None) -> str:
        body = {"variables": variables or {}}
        response = self.api.post(f"/pipelines/{pipeline_id}/executions", json=body, headers=self.headers)
        response.raise_for_status()
        return str(response.json()["executionId"])


def txt2img_stage(size: int, steps: int) -> dict[str, Any]:
    parameters = {"width": size, "height": size, "steps": steps, "guidanceScale": 7.5}
    return {"type": "txt2img", "inline": True, "body": "a watercolour of {{subject}}", "parameters": parameters}


def subjects(count: int) -> list[str]:
    return [f"subject number {n}" for n in range(count)]
