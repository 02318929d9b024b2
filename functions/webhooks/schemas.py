"""The webhooks API's shapes (API.md, "Events: wait, webhooks, backends"): camelCase on the wire."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Api(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class WebhookSecret(_Api):
    secret: str = Field(description="whsec_<base64>: the key of every webhook signature of this user")


class WebhookDelivery(_Api):
    webhook_id: str = Field(alias="webhookId")
    type: str
    attempt: int
    status: int | None = Field(default=None, description="The receiver's HTTP status; null when none came")
    error: str | None = None
    at: str


class WebhookDeliveryPage(_Api):
    items: list[WebhookDelivery]
    next_cursor: str | None = Field(default=None, alias="nextCursor")
