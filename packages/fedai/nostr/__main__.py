"""`python -m fedai.nostr`: run the embedded relay (see `fedai.nostr.relay_server`)."""

from __future__ import annotations

from fedai.nostr.relay_server import main

if __name__ == "__main__":
    raise SystemExit(main())
