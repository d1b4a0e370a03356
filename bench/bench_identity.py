"""CPU per call of the run's ID tokens (emulators/identity.py): signing one, handing out a
cached one, and the fronts' run.invoker check, first on a token never seen (the RS256
verification) and then on one already verified (what a push subscription's reused token
costs). Quoted in emulators/identity.py and docs/bridges.md.

    .venv/bin/python bench/bench_identity.py
"""

from __future__ import annotations

import time

from surgesim.emulators.identity import Issuer

AUD = "http://127.0.0.1:9000/pubsub"
SA = "relay-push@bench-local.iam.gserviceaccount.com"
MEMBERS = frozenset({f"serviceAccount:{SA}"})
SERVICE = ["http://127.0.0.1:9000"]


def per_call(fn, n: int) -> float:
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n * 1e6


def main() -> None:
    issuer = Issuer()

    def sign():
        issuer._cache.clear()  # noqa: SLF001 -- force a fresh signature
        issuer.token(AUD, SA)

    tok = "Bearer " + issuer.token(AUD, SA)

    def check_fresh():
        issuer._verified.clear()  # noqa: SLF001 -- force the signature check
        assert issuer.check_invoker(tok, MEMBERS, SERVICE).status == 200

    def check_known():
        assert issuer.check_invoker(tok, MEMBERS, SERVICE).status == 200

    print(f"sign a token           {per_call(sign, 200):8.1f} us CPU")
    print(f"cached token           {per_call(lambda: issuer.token(AUD, SA), 20000):8.1f} us CPU")
    print(f"invoker check, new     {per_call(check_fresh, 2000):8.1f} us CPU")
    print(f"invoker check, known   {per_call(check_known, 20000):8.1f} us CPU")


if __name__ == "__main__":
    main()
