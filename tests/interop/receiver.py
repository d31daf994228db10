"""An independent receiver: plays the push service for `tocsin send`.

Keys come from Python's `cryptography`; bodies are decrypted by `http_ece`
(Mozilla's reference implementation); the VAPID JWT is checked with
`cryptography`'s ECDSA, not with anything Tocsin wrote.

Prints one JSON line with the subscriptions it minted, then one JSON line per
push received, and exits after --count pushes.
"""

import argparse
import base64
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import http_ece
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64d(s):
    s = s.strip()
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def param(header, name):
    for part in header.replace(";", ",").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            if k.strip().lower() == name:
                return v.strip().strip('"')
    return None


def check_vapid(headers, audience):
    auth = headers.get("Authorization")
    if not auth:
        return {"present": False}
    scheme, rest = auth.split(" ", 1)
    if scheme.lower() == "vapid":  # RFC 8292
        token, k = param(rest, "t"), param(rest, "k")
    else:  # the draft's scheme, which aesgcm senders use: the key in Crypto-Key
        assert scheme == "WebPush", scheme
        token, k = rest.strip(), param(headers.get("Crypto-Key", ""), "p256ecdsa")
    head, claims, sig = token.split(".")
    header = json.loads(b64d(head))
    claims = json.loads(b64d(claims))
    raw = b64d(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64d(k))
    key.verify(der, f"{head}.{token.split('.')[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    now = time.time()
    return {
        "present": True,
        "alg": header.get("alg"),
        "aud": claims.get("aud"),
        "audOk": claims.get("aud") == audience,
        "sub": claims.get("sub"),
        "expOk": now < claims["exp"] <= now + 24 * 3600,
        "k": k,
        "scheme": scheme,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1)
    args = ap.parse_args()

    keys = []
    for _ in range(args.count):
        priv = ec.generate_private_key(ec.SECP256R1())
        pub = priv.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        keys.append((priv, pub, os.urandom(16)))

    received = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            index = int(self.path.rsplit("/", 1)[1])
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            priv, pub, auth = keys[index]
            enc = self.headers.get("Content-Encoding")
            result = {"index": index, "encoding": enc, "ttl": self.headers.get("TTL"),
                      "urgency": self.headers.get("Urgency"), "topic": self.headers.get("Topic")}
            try:
                result["vapid"] = check_vapid(self.headers, audience)
                if enc == "aes128gcm":
                    plain = http_ece.decrypt(body, private_key=priv, auth_secret=auth, version="aes128gcm")
                elif enc == "aesgcm":
                    salt = b64d(param(self.headers["Encryption"], "salt"))
                    dh = b64d(param(self.headers["Crypto-Key"], "dh"))
                    plain = http_ece.decrypt(body, private_key=priv, dh=dh, auth_secret=auth, salt=salt,
                                             version="aesgcm")
                else:
                    plain = None
                result["plaintext"] = None if plain is None else plain.decode()
                result["ok"] = True
                status = 201
            except Exception as e:  # report, do not hide
                result["ok"] = False
                result["error"] = repr(e)
                status = 400
            received.append(result)
            print(json.dumps(result), flush=True)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.send_header("Location", f"{audience}/m/{len(received)}")
            self.end_headers()

    server = HTTPServer(("127.0.0.1", 0), Handler)
    audience = f"http://127.0.0.1:{server.server_address[1]}"
    subs = [
        {"endpoint": f"{audience}/push/{i}", "expirationTime": None, "keys": {"p256dh": b64e(pub), "auth": b64e(auth)}}
        for i, (_, pub, auth) in enumerate(keys)
    ]
    print(json.dumps({"audience": audience, "subscriptions": subs}), flush=True)
    while len(received) < args.count:
        server.handle_request()
    sys.exit(0)


if __name__ == "__main__":
    main()
