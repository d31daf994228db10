"""Fuzzes `tocsin serve`'s API from its own OpenAPI description.

Schemathesis (pinned in requirements.txt) reads `/openapi.json` from a
server on SQLite and calls every operation in it, with the admin token
(which every scope allows), checking that no answer is a 5xx and that every
answer conforms to the schema. The budget is bounded (`--max-time`).

Run it in a network namespace of its own with only loopback up
(`scripts/test` does: `unshare --net`), so that nothing the fuzzer makes the
server store (a push endpoint, a webhook URL) can reach past this machine.

Usage: python fuzz_api.py TOCSIN_BINARY [SECONDS]
"""

import os
import secrets
import subprocess
import sys
import tempfile
import urllib.request

binary = sys.argv[1]
budget = sys.argv[2] if len(sys.argv) > 2 else "150"
st = os.path.join(os.path.dirname(sys.executable), "st")
token = "fuzz-admin-" + secrets.token_hex(16)

with tempfile.TemporaryDirectory() as data:
    log_path = os.path.join(data, "server.log")
    env = dict(os.environ)
    env.update({
        "TOCSIN_ADMIN_TOKEN": token,
        "TOCSIN_VAPID_SUBJECT": "mailto:fuzz@tocsin-tests.org",
        "TOCSIN_USER_SIGNING_SECRET": "fuzz-signing-secret",
        # The fuzzer calls far faster than a browser; the limits themselves
        # are tested in crates/cli/tests/it/adversarial.rs and trust.rs.
        "TOCSIN_RATE_LIMIT_EXEMPT": "127.0.0.0/8",
    })
    env.pop("TOCSIN_CONFIG", None)
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--database", f"sqlite://{data}/tocsin.db",
             "--endpoint-policy", "any", "--stream-max-seconds", "1", "--wait-timeout", "2"],
            stdout=subprocess.PIPE, stderr=log, env=env, text=True)
        first = server.stdout.readline().strip()
        if not first.startswith("listening on "):
            print(f"the server did not start: {first!r}", file=sys.stderr)
            sys.exit(2)
        base = first.removeprefix("listening on ")
        print(f"== schemathesis against {base} (SQLite), {budget} s at most", flush=True)
        code = subprocess.call([
            st, "run", f"{base}/openapi.json",
            "--checks", "not_a_server_error,response_schema_conformance",
            "-H", f"Authorization: Bearer {token}",
            "--max-time", budget,
            "--request-timeout", "10",
            "--generation-database", "none",
            "--workers", "2",
            "--no-color",
            "--output-truncate", "true",
        ])
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
                alive = r.status == 200
        except OSError:
            alive = False
        server.terminate()
        server.wait(timeout=35)
    with open(log_path) as f:
        logged = f.read()
    panicked = [line for line in logged.splitlines() if "panicked" in line]
    if panicked or not alive:
        print("the server panicked or stopped answering:", *panicked[:10], sep="\n", file=sys.stderr)
        code = code or 1
    print(f"schemathesis: {'passed' if code == 0 else 'failed'} (exit {code})")
    sys.exit(code)
