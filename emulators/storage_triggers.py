"""Cloud Storage trigger bridge: object changes in a bucket -> Eventarc CloudEvents.

The Storage emulator (``gcp-storage-emulator``) has no Pub/Sub notifications and no
Eventarc, so this bridge polls the bucket's object listing (the JSON API, ``GET
/storage/v1/b/{bucket}/o``: every object's full resource in one answer) and compares it
with the last one:

* a new name, or a new ``generation`` of a name: ``google.cloud.storage.object.v1.finalized``;
* the same generation with a higher ``metageneration``: ``...metadataUpdated``;
* a name gone: ``...deleted`` (data: the object's last resource).

Each is POSTed as Eventarc sends it: binary mode, ``ce-source
//storage.googleapis.com/projects/_/buckets/<bucket>``, ``ce-subject objects/<name>``,
``ce-bucket``, and the object resource (StorageObjectData) as JSON. Limits of polling:
changes reach the bridge up to one poll interval (default 0.2 s) late, an object
overwritten twice between two polls is one ``finalized``, and one created and deleted
between two polls is not seen. Objects present at start are the baseline (no events).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from urllib.parse import quote

from . import service_http
from .identity import Issuer, identity_headers
from .pubsub_rest import stoppable_sleep
from .triggers import RETRY_FIRST_S, RETRY_MAX_S, TriggerCounters, deliver

log = logging.getLogger(__name__)

EVENT_PREFIX = "google.cloud.storage.object.v1."
#: StorageObjectData's fields (google-events storage/v1/data.proto), in the JSON API's names.
OBJECT_FIELDS = ("bucket", "cacheControl", "componentCount", "contentDisposition", "contentEncoding",
                 "contentLanguage", "contentType", "crc32c", "customerEncryption", "etag", "eventBasedHold",
                 "generation", "id", "kind", "kmsKeyName", "md5Hash", "mediaLink", "metadata", "metageneration",
                 "name", "retentionExpirationTime", "selfLink", "size", "storageClass", "temporaryHold",
                 "timeCreated", "timeDeleted", "timeStorageClassUpdated", "updated")


def diff(before: dict[str, dict], after: dict[str, dict]) -> list[tuple[str, dict]]:
    """(event kind, object resource) for every change between two listings (name -> resource)."""
    out = []
    for name, obj in after.items():
        old = before.get(name)
        if old is None or str(old.get("generation")) != str(obj.get("generation")):
            out.append(("finalized", obj))
        elif int(obj.get("metageneration") or 0) > int(old.get("metageneration") or 0):
            out.append(("metadataUpdated", obj))
    out += [("deleted", obj) for name, obj in before.items() if name not in after]
    return out


def object_data(obj: dict, *, deleted: bool = False) -> dict:
    """The StorageObjectData JSON of an object resource, with the links Cloud Storage gives."""
    data = {k: obj[k] for k in OBJECT_FIELDS if obj.get(k) is not None}
    bucket, name, gen = obj["bucket"], obj["name"], obj.get("generation")
    data["selfLink"] = f"https://www.googleapis.com/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
    data["mediaLink"] = (f"https://storage.googleapis.com/download/storage/v1/b/{bucket}/o/"
                         f"{quote(name, safe='')}?generation={gen}&alt=media")
    data["id"] = f"{bucket}/{name}/{gen}"
    data.setdefault("metadata", {})
    if deleted:
        data["timeDeleted"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return data


def build_event(kind: str, obj: dict) -> tuple[dict, bytes]:
    """(headers, body) of one Cloud Storage CloudEvent in binary mode."""
    data = object_data(obj, deleted=kind == "deleted")
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": str(uuid.uuid4()),
        "ce-type": EVENT_PREFIX + kind,
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{obj['bucket']}",
        "ce-subject": f"objects/{obj['name']}",
        "ce-time": data.get("timeDeleted") or data.get("updated") or data.get("timeCreated"),
        "ce-bucket": obj["bucket"],
    }
    return headers, json.dumps(data).encode()


class StorageTriggerBridge:
    def __init__(self, endpoint: str, *, bucket: str, url: str, events: list[str] | None = None,
                 issuer: Issuer | None = None, service_account: str | None = None, http=None,
                 poll_interval: float = 0.2, max_attempts: int = 10, name: str | None = None,
                 backoff: tuple[float, float] = (RETRY_FIRST_S, RETRY_MAX_S)) -> None:
        """``endpoint``: the Storage emulator's base URL (``STORAGE_EMULATOR_HOST``)."""
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.url = url
        self.events = list(events or ["finalized"])
        self.issuer = issuer  # signs the trigger's service account's ID tokens (Eventarc's identity)
        self.service_account = service_account
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.name = name or bucket
        self.counters = TriggerCounters()
        self._http = http
        self._own_http = http is None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sends: set[asyncio.Task] = set()

    async def _list(self) -> dict[str, dict]:
        async with self._http.get(f"{self.endpoint}/storage/v1/b/{quote(self.bucket, safe='')}/o") as r:
            if r.status != 200:
                raise RuntimeError(f"storage trigger {self.name}: listing {self.bucket} gave {r.status}")
            body = await r.json(content_type=None)
        return {o["name"]: o for o in body.get("items") or ()}

    async def run(self, ready: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._http is None:
            self._http = service_http.session(30.0)
        try:
            seen = await self._list()  # the baseline
            if ready is not None:
                ready.set()
            while not self._stop.is_set():
                await stoppable_sleep(self._stop, self.poll_interval)
                try:
                    now = await self._list()
                except (*service_http.FAILURES, RuntimeError) as exc:
                    log.warning("%s", exc)
                    continue
                self.counters.polls += 1
                for kind, obj in diff(seen, now):
                    self.counters.changes += 1
                    if kind not in self.events:
                        self.counters.skipped += 1
                        continue
                    headers, body = build_event(kind, obj)
                    headers.update(identity_headers(self.issuer, self.url, self.service_account))
                    # no ordering, as in Eventarc: each event is sent (and retried) on its own
                    task = asyncio.create_task(deliver(self._http, self.url, headers, body, self.counters,
                                                       self.max_attempts, self.name, self.backoff))
                    self._sends.add(task)
                    task.add_done_callback(self._sends.discard)
                seen = now
            if self._sends:  # what was already seen goes out before stopping
                await asyncio.wait(list(self._sends), timeout=10)
        finally:
            for t in list(self._sends):
                t.cancel()
            if self._own_http:
                await self._http.close()

    def stop(self) -> None:
        """Thread-safe."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._set_stop)

    def _set_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
