"""An independent webhook receiver: a site's backend, for the tests.

Every delivery is verified with `standardwebhooks` (the Standard Webhooks
reference library, from PyPI), not with anything Tocsin wrote. It answers
200, or the status it was told to answer for the next N deliveries.

Control routes (loopback, for the test only):
  PUT /control/secret    body: the webhook's secret (whsec_…)
  PUT /control/fail      {"count": N, "status": 503, "retryAfter": "1"?}: answer that to the next N deliveries
  GET /control/received  every attempt: {"id","timestamp","verified","error","status","body"} in arrival order
  PUT /control/down      {"seconds": S}: answer nothing (close the connection) for S seconds

Prints `listening on http://127.0.0.1:PORT` first.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

state = {"secret": None, "fail": 0, "status": 503, "retry_after": None, "down_until": 0.0, "received": []}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self):
        if self.path == "/control/received":
            with lock:
                data = json.dumps(state["received"]).encode()
            self.reply(200, data, [("Content-Type", "application/json")])
        else:
            self.reply(404)

    def do_PUT(self):
        body = self.body()
        with lock:
            if self.path == "/control/secret":
                state["secret"] = body.decode().strip()
            elif self.path == "/control/fail":
                v = json.loads(body)
                state["fail"], state["status"] = v["count"], v.get("status", 503)
                state["retry_after"] = v.get("retryAfter")
            elif self.path == "/control/down":
                state["down_until"] = time.time() + json.loads(body)["seconds"]
            else:
                self.reply(404)
                return
        self.reply(204)

    def do_POST(self):
        body = self.body()
        with lock:
            if time.time() < state["down_until"]:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            entry = {"id": self.headers.get("webhook-id"), "timestamp": self.headers.get("webhook-timestamp"),
                     "path": self.path, "contentType": self.headers.get("Content-Type")}
            try:
                payload = Webhook(state["secret"]).verify(body, dict(self.headers.items()))
                entry["verified"], entry["body"] = True, payload
            except Exception as e:  # report, do not hide
                entry["verified"], entry["error"] = False, repr(e)
                entry["body"] = body.decode(errors="replace")
            if state["fail"] > 0:
                state["fail"] -= 1
                status = state["status"]
            else:
                status = 200
            entry["status"] = status
            state["received"].append(entry)
            retry_after = state["retry_after"]
        headers = [("Retry-After", retry_after)] if retry_after and status != 200 else []
        self.reply(status, b"{}", headers)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
