"""`python -m surgesim.services module:attr` serves that ASGI app on $PORT (default 8080)."""

import sys

from surgesim.services.common.runtime import serve

if __name__ == "__main__":
    if len(sys.argv) != 2 or ":" not in sys.argv[1]:
        sys.exit("usage: python -m surgesim.services package.module:app   (listens on $PORT, default 8080)")
    serve(sys.argv[1])
