"""A Cloud Run service (Flask) receiving Pub/Sub push: each greeting is checked by the
moderation API, then stored in Firestore as greetings/{messageId} = {text, attributes,
publishTime, moderation}.

The moderation API is at $MODERATION_API_URL (POST /v1/moderate {"text"} -> a JSON
verdict). When it fails (an error, no answer within MODERATION_TIMEOUT_S) the push is
answered 503 and nothing is stored, so Pub/Sub delivers the greeting again later."""

import base64
import json
import os
import urllib.request

from flask import Flask, request
from google.cloud import firestore

app = Flask(__name__)
db = firestore.Client()
MODERATION_URL = os.environ["MODERATION_API_URL"].rstrip("/") + "/v1/moderate"
MODERATION_TIMEOUT_S = float(os.environ.get("MODERATION_TIMEOUT_S", "5"))


def moderate(text: str) -> dict:
    """The moderation API's verdict on `text` (raises OSError or ValueError when it fails)."""
    req = urllib.request.Request(MODERATION_URL, data=json.dumps({"text": text}).encode("utf-8"),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=MODERATION_TIMEOUT_S) as resp:
        return json.loads(resp.read() or b"{}")


@app.post("/")
def receive():
    envelope = request.get_json(silent=True)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
        return "expected a Pub/Sub push envelope", 400
    message = envelope["message"]
    text = base64.b64decode(message.get("data", "")).decode("utf-8")
    try:
        verdict = moderate(text)
    except (OSError, ValueError) as exc:  # urllib's HTTPError/URLError and timeouts are OSErrors
        app.logger.warning("moderation API failed for %s: %s", message.get("messageId"), exc)
        return "moderation API unavailable", 503
    db.collection("greetings").document(message["messageId"]).set(
        {"text": text, "attributes": message.get("attributes", {}), "publishTime": message.get("publishTime"),
         "moderation": verdict})
    return "", 204
