"""A small asyncio client for the Pub/Sub emulator's REST adapter (same port as gRPC).

The bridges use REST rather than the gRPC client because one ``httpx.AsyncClient`` serves
many subscriptions from one event loop, sync ``pull`` in batches is the emulator's fastest
consume path (DESIGN.md), and nothing here needs streaming pull.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, Iterable

import httpx

log = logging.getLogger(__name__)


class PubSubRestError(RuntimeError):
    pass


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


class PubSubRest:
    def __init__(self, endpoint: str, project: str, *, timeout: float = 30.0, max_connections: int = 64) -> None:
        self.endpoint = endpoint
        self.project = project
        self.base = f"http://{endpoint}/v1/projects/{project}"
        self.http = httpx.AsyncClient(
            timeout=timeout,
            trust_env=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, sub: str) -> str:
        return f"projects/{self.project}/subscriptions/{sub}"

    async def _call(self, method: str, url: str, body: Any = None, ok: Iterable[int] = (200,)) -> dict:
        r = await self.http.request(method, url, json=body)
        if r.status_code not in ok:
            raise PubSubRestError(f"{method} {url}: {r.status_code} {r.text[:300]}")
        try:
            return r.json() if r.content else {}
        except ValueError:
            return {}

    # ---- admin ------------------------------------------------------------------------
    async def ensure_topic(self, topic: str) -> None:
        await self._call("PUT", f"{self.base}/topics/{topic}", {}, ok=(200, 409))

    async def create_subscription(
        self,
        name: str,
        topic: str,
        *,
        ack_deadline: float = 10,
        dead_letter: tuple[str, int] | None = None,
        filter: str | None = None,
        push_endpoint: str | None = None,
        exists_ok: bool = True,
    ) -> dict:
        body: dict[str, Any] = {"topic": self.topic_path(topic), "ackDeadlineSeconds": int(round(ack_deadline))}
        if dead_letter is not None:
            body["deadLetterPolicy"] = {"deadLetterTopic": self.topic_path(dead_letter[0]), "maxDeliveryAttempts": dead_letter[1]}
        if filter:
            body["filter"] = filter
        if push_endpoint:
            body["pushConfig"] = {"pushEndpoint": push_endpoint}
        return await self._call("PUT", f"{self.base}/subscriptions/{name}", body, ok=(200, 409) if exists_ok else (200,))

    async def get_subscription(self, name: str) -> dict | None:
        r = await self.http.get(f"{self.base}/subscriptions/{name}")
        return r.json() if r.status_code == 200 else None

    async def delete_subscription(self, name: str) -> None:
        await self._call("DELETE", f"{self.base}/subscriptions/{name}", ok=(200, 404))

    async def delete_topic(self, topic: str) -> None:
        await self._call("DELETE", f"{self.base}/topics/{topic}", ok=(200, 404))

    # ---- data -------------------------------------------------------------------------
    async def publish(self, topic: str, messages: list[dict]) -> list[str]:
        """``messages``: [{"data": base64 str, "attributes": {...}, "orderingKey": ...}]."""
        out = await self._call("POST", f"{self.base}/topics/{topic}:publish", {"messages": messages})
        return out.get("messageIds", [])

    async def pull(self, sub: str, max_messages: int, *, return_immediately: bool = True,
                   timeout: float | None = None) -> list[dict]:
        body = {"maxMessages": max_messages, "returnImmediately": return_immediately}
        r = await self.http.post(f"{self.base}/subscriptions/{sub}:pull", json=body,
                                 timeout=timeout if timeout is not None else self.http.timeout)
        if r.status_code != 200:
            raise PubSubRestError(f"pull {sub}: {r.status_code} {r.text[:300]}")
        return r.json().get("receivedMessages", [])

    async def ack(self, sub: str, ack_ids: list[str]) -> None:
        if ack_ids:
            await self._call("POST", f"{self.base}/subscriptions/{sub}:acknowledge", {"ackIds": ack_ids})

    async def modify_ack_deadline(self, sub: str, ack_ids: list[str], seconds: int) -> None:
        if ack_ids:
            await self._call("POST", f"{self.base}/subscriptions/{sub}:modifyAckDeadline",
                             {"ackIds": ack_ids, "ackDeadlineSeconds": int(seconds)})


async def stoppable_sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when `stop` is set, so bridges shut down promptly."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
