"""A Cloud Storage-triggered CloudEvent function as Google's samples write it
(python-docs-samples, functions/v2/storage): the object's metadata is cloud_event.data.
Knows nothing of surgesim; prints one JSON line per event."""

import json

import functions_framework
from cloudevents.http import CloudEvent


@functions_framework.cloud_event
def hello_gcs(cloud_event: CloudEvent) -> None:
    data = cloud_event.data
    print(json.dumps({
        "type": cloud_event["type"],
        "source": cloud_event["source"],
        "subject": cloud_event["subject"],
        "bucket": data["bucket"],
        "name": data["name"],
        "generation": data["generation"],
        "metageneration": data["metageneration"],
        "size": data["size"],
        "contentType": data.get("contentType"),
        "timeCreated": data["timeCreated"],
        "updated": data["updated"],
    }), flush=True)
