"""Official Google Cloud clients built from the environment, as on Cloud Run: the
libraries themselves honour PUBSUB_EMULATOR_HOST, FIRESTORE_EMULATOR_HOST and
STORAGE_EMULATOR_HOST, so the same code runs against the emulators or the cloud."""

from __future__ import annotations

import asyncio
import os

from .runtime import project


def firestore_async():
    from google.cloud import firestore

    return firestore.AsyncClient(project=project(), database=os.environ.get("FIRESTORE_DATABASE") or None)


def publisher():
    from google.cloud import pubsub_v1

    # Small batches: a command's event should leave within milliseconds, not 10 ms later.
    batch = pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.002)
    return pubsub_v1.PublisherClient(batch_settings=batch)


def subscriber():
    from google.cloud import pubsub_v1

    return pubsub_v1.SubscriberClient()


def storage():
    from google.cloud import storage as gcs

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        endpoint = os.environ["STORAGE_EMULATOR_HOST"]
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        return gcs.Client(project=project(), credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint))
    return gcs.Client(project=project())


def topic_path(topic: str) -> str:
    return topic if topic.startswith("projects/") else f"projects/{project()}/topics/{topic}"


def subscription_path(sub: str) -> str:
    return sub if sub.startswith("projects/") else f"projects/{project()}/subscriptions/{sub}"


async def publish(client, topic: str, data: bytes, **attributes: str) -> str:
    """Publish and wait for the server's message id without blocking the event loop."""
    future = client.publish(topic_path(topic), data, **{k: str(v) for k, v in attributes.items() if v is not None})
    return await asyncio.wrap_future(future)
