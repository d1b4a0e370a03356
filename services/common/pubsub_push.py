"""Pub/Sub push envelopes: parse, decode and classify one delivery.

Pub/Sub POSTs `{"message": {"data": base64, "attributes", "messageId", "publishTime"},
"subscription", "deliveryAttempt"}`; a 2xx answer acks it, anything else nacks it and,
after the subscription's max attempts, sends it to the dead-letter topic.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError


class PushMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    data: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    message_id: str = Field(validation_alias=AliasChoices("messageId", "message_id"), min_length=1)
    publish_time: str | None = Field(None, validation_alias=AliasChoices("publishTime", "publish_time"))
    ordering_key: str | None = Field(None, validation_alias=AliasChoices("orderingKey", "ordering_key"))


class PushEnvelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: PushMessage
    subscription: str = ""
    delivery_attempt: int | None = Field(None, validation_alias=AliasChoices("deliveryAttempt", "delivery_attempt"))


class PoisonMessage(ValueError):
    """A delivery no retry can fix: refused the same way every time, so it dead-letters."""


@dataclass
class PushEvent:
    message_id: str
    attributes: dict[str, str]
    data: dict[str, Any]
    raw: bytes
    subscription: str = ""
    delivery_attempt: int | None = None
    publish_time: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def event_type(self) -> str:
        return self.attributes.get("eventType") or str(self.data.get("eventType") or "")

    @property
    def event_id(self) -> str:
        """The business event's id: the publisher may publish one event twice (a retried
        CloudEvent gives a new messageId), so dedupe on this, falling back to messageId."""
        return self.attributes.get("eventId") or str(self.data.get("eventId") or "") or self.message_id

    @property
    def traceparent(self) -> str | None:
        return self.attributes.get("traceparent")


def parse_envelope(body: bytes) -> PushEvent:
    """Bytes of a push request -> PushEvent, or PoisonMessage saying why not."""
    try:
        env = PushEnvelope.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise PoisonMessage(f"not a Pub/Sub push envelope ({where}: {first.get('msg')})") from None
    msg = env.message
    if msg.attributes.get("poison", "").lower() == "true":
        raise PoisonMessage("message marked poison=true")
    raw = b""
    if msg.data:
        try:
            raw = base64.b64decode(msg.data, validate=True)
        except (binascii.Error, ValueError):
            raise PoisonMessage("message.data is not valid base64") from None
    data: dict[str, Any] = {}
    if raw:
        try:
            decoded = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PoisonMessage(f"message.data is not JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise PoisonMessage(f"message.data must be a JSON object, got {type(decoded).__name__}")
        data = decoded
    return PushEvent(
        message_id=msg.message_id,
        attributes=dict(msg.attributes),
        data=data,
        raw=raw,
        subscription=env.subscription,
        delivery_attempt=env.delivery_attempt,
        publish_time=msg.publish_time,
    )


def make_envelope(data: dict | bytes, attributes: dict[str, str] | None = None, message_id: str = "1",
                  subscription: str = "projects/p/subscriptions/s", delivery_attempt: int | None = 1) -> dict:
    """A push envelope as Pub/Sub sends it (for tests and tools)."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    env = {
        "message": {
            "data": base64.b64encode(raw).decode(),
            "attributes": attributes or {},
            "messageId": message_id,
            "publishTime": "2024-01-01T00:00:00Z",
        },
        "subscription": subscription,
    }
    if delivery_attempt is not None:
        env["deliveryAttempt"] = delivery_attempt
    return env
