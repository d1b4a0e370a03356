"""A Pub/Sub-triggered CloudEvent function as Google's samples write it
(python-docs-samples, functions/v2/pubsub): the message is base64 in
cloud_event.data["message"]["data"]. Knows nothing of surgesim; prints one JSON line per event."""

import base64
import json

import functions_framework
from cloudevents.http import CloudEvent


@functions_framework.cloud_event
def subscribe(cloud_event: CloudEvent) -> None:
    message = cloud_event.data["message"]
    print(json.dumps({
        "type": cloud_event["type"],
        "source": cloud_event["source"],
        "id": cloud_event["id"],
        "data": base64.b64decode(message["data"]).decode(),
        "attributes": message.get("attributes", {}),
        "messageId": message["messageId"],
        "subscription": cloud_event.data["subscription"],
    }), flush=True)
