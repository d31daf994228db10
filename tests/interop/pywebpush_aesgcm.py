"""pywebpush sends one aesgcm push the way its documentation says to
(a Vapid01 key: the draft's `WebPush` scheme), with a given VAPID key.

Usage: pywebpush_aesgcm.py BASE_URL PRIVATE_KEY
Mints a subscription on `tocsin dev push-service` for that key, pushes to it
with pywebpush and prints one JSON line: {"subscription", "status"}.
"""

import json
import sys
import urllib.request

from py_vapid import Vapid01
from pywebpush import webpush


def main():
    base, private_key = sys.argv[1], sys.argv[2]
    vapid = Vapid01.from_string(private_key)
    from cryptography.hazmat.primitives import serialization
    import base64

    raw = vapid.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    app_key = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    req = urllib.request.Request(f"{base}/subscriptions", data=json.dumps({"applicationServerKey": app_key}).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        sub = json.loads(r.read())
    resp = webpush(subscription_info=sub, data="from pywebpush, aesgcm", vapid_private_key=vapid,
                   vapid_claims={"sub": "mailto:interop@example.com"}, content_encoding="aesgcm", ttl=60)
    print(json.dumps({"subscription": sub, "status": resp.status_code}))


if __name__ == "__main__":
    main()
