"""An HTTP Cloud Function: publishes the `message` of a JSON body {"topic", "message"} to
that Pub/Sub topic and answers the message id. Anything else is a 400."""

import json
import os

import functions_framework
from google.cloud import pubsub_v1

publisher = pubsub_v1.PublisherClient()
PROJECT = os.environ.get("GOOGLE_CLOUD_PROJECT", "greetings-local")


@functions_framework.http
def publish(request):
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("topic"), str) or "message" not in body:
        return {"error": 'expected a JSON body {"topic": "...", "message": ...}'}, 400
    message = body["message"]
    data = message if isinstance(message, str) else json.dumps(message)
    future = publisher.publish(publisher.topic_path(PROJECT, body["topic"]), data.encode("utf-8"))
    return {"messageId": future.result(timeout=30)}, 200
