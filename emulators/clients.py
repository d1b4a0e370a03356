"""Ready-made official Google Cloud clients pointed at the emulators.

Built from the same variables ``env_vars()`` exports, without needing them in
``os.environ``::

    clients = Clients.from_env()             # reads os.environ
    clients = stack.clients                  # from a Stack returned by up()/status()
    pub = clients.publisher(); sub = clients.subscriber()
    db = clients.firestore(); bq = clients.bigquery(); gcs = clients.storage()

Imports of the Google libraries are deferred to each method.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping

from .bigquery import BIGQUERY_EMULATOR_HOST
from .errors import EmulatorError
from .firestore import FIRESTORE_EMULATOR_HOST
from .pubsub import PUBSUB_EMULATOR_HOST
from .storage import STORAGE_EMULATOR_HOST

_env_lock = threading.Lock()


@contextlib.contextmanager
def _temporary_env(name: str, value: str) -> Iterator[None]:
    # The Firestore client reads FIRESTORE_EMULATOR_HOST only in its constructor and has
    # no public way to take an insecure endpoint otherwise.
    with _env_lock:
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


class Clients:
    def __init__(self, env: Mapping[str, str], project: str | None = None) -> None:
        self.env = dict(env)
        self.project = project or self.env.get("GOOGLE_CLOUD_PROJECT") or "surgesim-local"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Clients":
        return cls(os.environ if environ is None else environ)

    def _need(self, var: str) -> str:
        value = self.env.get(var)
        if not value:
            raise EmulatorError(f"{var} is not set: start that emulator first (`surgesim emulators up`)")
        return value

    # --- Pub/Sub (gRPC, insecure channel to the emulator) --------------------------------
    def publisher(self, **kwargs):
        """``pubsub_v1.PublisherClient``; kwargs (batch_settings, publisher_options) pass through."""
        import grpc
        from google.cloud import pubsub_v1
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        channel = grpc.insecure_channel(self._need(PUBSUB_EMULATOR_HOST))
        return pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channel), **kwargs)

    def subscriber(self, **kwargs):
        """``pubsub_v1.SubscriberClient`` (also the admin API for subscriptions)."""
        import grpc
        from google.cloud import pubsub_v1
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

        channel = grpc.insecure_channel(self._need(PUBSUB_EMULATOR_HOST))
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel), **kwargs)

    # --- Firestore --------------------------------------------------------------------------
    def firestore(self, database: str | None = None):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import firestore

        with _temporary_env(FIRESTORE_EMULATOR_HOST, self._need(FIRESTORE_EMULATOR_HOST)):
            return firestore.Client(project=self.project, credentials=AnonymousCredentials(), database=database)

    def firestore_async(self, database: str | None = None):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import firestore

        with _temporary_env(FIRESTORE_EMULATOR_HOST, self._need(FIRESTORE_EMULATOR_HOST)):
            return firestore.AsyncClient(project=self.project, credentials=AnonymousCredentials(), database=database)

    # --- BigQuery (REST, anonymous) -----------------------------------------------------------
    def bigquery(self):
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        endpoint = self._need(BIGQUERY_EMULATOR_HOST)
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=endpoint),
        )

    # --- Cloud Storage ------------------------------------------------------------------------
    def storage(self):
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        endpoint = self._need(STORAGE_EMULATOR_HOST)
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=endpoint),
        )
