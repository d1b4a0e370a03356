"""A Firestore-triggered CloudEvent function written for Cloud Run functions, as Google's
samples write it (python-docs-samples, functions/v2/firebase/hello-firestore): it reads
DocumentEventData from the protobuf body with google-events. It knows nothing of surgesim;
it prints one JSON line per event so a test can read what it understood."""

import json

import functions_framework
from cloudevents.http import CloudEvent
from google.events.cloud import firestore


@functions_framework.cloud_event
def hello_firestore(cloud_event: CloudEvent) -> None:
    firestore_payload = firestore.DocumentEventData()
    firestore_payload._pb.ParseFromString(cloud_event.data)

    print(json.dumps({
        "type": cloud_event["type"],
        "source": cloud_event["source"],
        "subject": cloud_event["subject"],
        "document": cloud_event["document"],
        "value": firestore_payload.value.name,
        "status": firestore_payload.value.fields["status"].string_value if firestore_payload.value else None,
        "old_status": (firestore_payload.old_value.fields["status"].string_value
                       if firestore_payload.old_value else None),
        "update_mask": list(firestore_payload.update_mask.field_paths),
    }), flush=True)
