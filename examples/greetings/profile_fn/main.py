"""A CloudEvent Cloud Function on a Firestore trigger (profiles/{id} written), written as
Google's sample is: the event data is a DocumentEventData protobuf."""

import functions_framework
from cloudevents.http import CloudEvent
from google.events.cloud import firestore


@functions_framework.cloud_event
def on_profile_written(cloud_event: CloudEvent) -> None:
    firestore_payload = firestore.DocumentEventData()
    firestore_payload._pb.ParseFromString(cloud_event.data)

    print(f"Function triggered by change to: {cloud_event['source']}")
    print("\nOld value:")
    print(firestore_payload.old_value)
    print("\nNew value:")
    print(firestore_payload.value)
