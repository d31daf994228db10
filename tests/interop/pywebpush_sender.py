"""An independent sender: pywebpush pushes to `tocsin dev push-service`.

Usage: pywebpush_sender.py BASE_URL
Mints subscriptions on the dev push service (with the applicationServerKey of
a py_vapid key), sends with pywebpush in both encodings and without payload,
and prints one JSON line: what pywebpush was answered, and what the dev push
service recorded.
"""

import json
import sys
import urllib.request

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from pywebpush import WebPushException, webpush


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else None


def main():
    base = sys.argv[1]
    vapid = Vapid()
    vapid.generate_keys()
    raw = vapid.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    import base64

    app_key = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    out = {"applicationServerKey": app_key, "sends": []}
    cases = [("aes128gcm", "from pywebpush, aes128gcm"), ("aesgcm", "from pywebpush, aesgcm"), ("aes128gcm", None)]
    for encoding, payload in cases:
        sub = call("POST", f"{base}/subscriptions", {"applicationServerKey": app_key})
        resp = webpush(
            subscription_info=sub,
            data=payload,
            vapid_private_key=vapid,
            vapid_claims={"sub": "mailto:interop@example.com"},
            content_encoding=encoding,
            ttl=120,
        )
        out["sends"].append({"endpoint": sub["endpoint"], "encoding": encoding, "payload": payload,
                             "status": resp.status_code})
    # A key that is not the one the subscription was made with.
    other = Vapid()
    other.generate_keys()
    sub = call("POST", f"{base}/subscriptions", {"applicationServerKey": app_key})
    try:
        webpush(subscription_info=sub, data="x", vapid_private_key=other,
                vapid_claims={"sub": "mailto:interop@example.com"}, ttl=60)
        out["mismatchStatus"] = 201
    except WebPushException as e:
        out["mismatchStatus"] = e.response.status_code
    out["messages"] = call("GET", f"{base}/messages")["items"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
