"""A Cloud Run service (Flask) receiving Pub/Sub push: each greeting is stored in
Firestore as greetings/{messageId} = {text, attributes, publishTime}."""

import base64

from flask import Flask, request
from google.cloud import firestore

app = Flask(__name__)
db = firestore.Client()


@app.post("/")
def receive():
    envelope = request.get_json(silent=True)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
        return "expected a Pub/Sub push envelope", 400
    message = envelope["message"]
    text = base64.b64decode(message.get("data", "")).decode("utf-8")
    db.collection("greetings").document(message["messageId"]).set(
        {"text": text, "attributes": message.get("attributes", {}), "publishTime": message.get("publishTime")})
    return "", 204
