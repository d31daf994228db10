#!/usr/bin/env python3
"""Broadcast benchmark: Tocsin three ways against Node's web-push, one sink.

Sets up everything itself: an nginx sink answering 201 over HTTPS + HTTP/2
(self-signed), N subscriptions with real P-256 keys pointing at it, a
PostgreSQL database of its own. Then, in the same run:

  send      `tocsin send` with the N subscriptions in a file (no server, no database)
  sqlite    `tocsin serve` on SQLite, one POST /v1/messages to all, until done
  postgres  the same on PostgreSQL
  sqlite-declarative  the sqlite way with a Declarative Web Push message (format declarative)
  sqlite-webhook, postgres-webhook  the sqlite and postgres ways with a webhook for every event type registered
            (pointed at the same nginx sink)
  web-push  Node's web-push, 100 requests in flight
  sqlite-segment, postgres-segment  a broadcast to `bucket == 3`, a segment of 10 % of the N subscriptions
            (every subscription carries tags, language and time zone in every tocsin way); the time
            of POST /v1/audience/count of that expression, and of one with `&&`, `||` and `in`, is reported beside it
  sqlite-personal, postgres-personal  the all-broadcast with a personal message: title by language (en, fr, pt)
            and a Liquid template over a tag in the body, rendered per delivery
  sqlite-capped, postgres-capped  the all-broadcast under one frequency cap rule (100 a day: nobody is over it,
            so every delivery is checked against its subscription's history and the history written back)
  sqlite-throttled, postgres-throttled  the all-broadcast with `ratePerMinute` (--rate): the rate reached
            against the one asked
  sqlite-ab, postgres-ab  the all-broadcast as an A/B test of four variants over the whole audience
            (samplePercent 100): four messages, each paging the audience for its share; timed until
            the four are done (the decision, 30 days on, is not waited for)

and reports deliveries/s, CPU seconds per 1,000 deliveries (sender, and the
sink apart), and peak RSS. Results: bench/results/*.json and a table.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TOCSIN = ROOT / "target" / "release" / "tocsin"
BENCH_TOKEN = "bench-admin-token-0123456789abcdef"
PAYLOAD = '{"title":"Benchmark","body":"A message of ordinary size for a notification."}'
# The same notification as a Declarative Web Push message (the way sqlite-declarative).
DECLARATIVE = {"web_push": 8030, "notification": {"title": "Benchmark", "navigate": "https://bench.tocsin-tests.org/",
                                                  "body": "A message of ordinary size for a notification."}}
TICK = os.sysconf("SC_CLK_TCK")
# What the audience ways aim at and send.
SEGMENT = "bucket == 3"
COUNTED = ['bucket == 3', 'plan == "pro" && (score >= 50 || language == "fr") && city in ["Lyon", "Porto"]']
PERSONAL = {"title": {"en": "Benchmark", "fr": "Banc d'essai", "pt": "Referência"},
            "body": "Hi {{ tags.first_name | default: \"there\" }}, a message of ordinary size for a notification.",
            "defaultLanguage": "en"}


def cpu_of(pids):
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


def hwm_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_measured(cmd, env=None):
    """Runs cmd to the end; returns (stdout, wall s, cpu s, peak RSS MB)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed: {out[-2000:]!r}")
    return out.decode(), wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


class Sink:
    """nginx answering 201 to everything over HTTPS with HTTP/2."""

    def __init__(self, work):
        self.dir = Path(work) / "nginx"
        self.dir.mkdir()
        (self.dir / "logs").mkdir()
        self.cert, key = self.dir / "cert.pem", self.dir / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", self.cert, "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             # An end-entity certificate: rustls refuses a CA certificate as a server's.
             "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "keyUsage=critical,digitalSignature",
             "-addext", "extendedKeyUsage=serverAuth"],
            check=True, capture_output=True)
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        conf = self.dir / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  http2_max_concurrent_streams 1000;
  client_body_buffer_size 16k;
  server {{
    listen 127.0.0.1:{self.port} ssl http2;
    ssl_certificate {self.cert};
    ssl_certificate_key {key};
    location / {{ return 201; }}
  }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(self.dir), "-g", "daemon off;"])
        time.sleep(0.5)
        self.url = f"https://127.0.0.1:{self.port}/push/"

    def pids(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return [self.proc.pid] + [int(p) for p in out]

    def cpu(self):
        return cpu_of(self.pids())

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def tocsin_send(subs, sink, concurrency, vapid):
    c0 = sink.cpu()
    out, wall, cpu, rss = run_measured(
        [str(TOCSIN), "send", "--subscription", str(subs), "--payload", PAYLOAD, "--vapid-subject",
         "mailto:bench@tocsin-tests.org", f"--vapid-pvtkey={vapid['privateKey']}", "--ca-cert", str(sink.cert),
         "--concurrency", str(concurrency), "--json"])
    summary = json.loads(out)
    return {"delivered": summary["delivered"], "failed": summary["failed"], "seconds": wall, "cpu": cpu,
            "sink_cpu": sink.cpu() - c0, "peak_rss_mb": rss}


def api(base, method, path, body=None):
    req = urllib.request.Request(f"{base}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {BENCH_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


ALL_EVENTS = ["message.created", "message.done", "message.cancelled", "subscription.created", "subscription.updated",
              "subscription.removed", "delivery.failed", "notification.shown", "notification.clicked"]


def with_attributes(subs, tagged):
    """The subscriptions of `subs` with tags, language and time zone: bucket = i % 10 (10 % each), a plan, a
    score, a city, a first name."""
    langs, zones, cities = ["en", "fr", "pt-BR", "de"], ["UTC", "Europe/Paris", "America/Sao_Paulo"], ["Lyon", "Porto", "Oslo"]
    with open(subs) as src, open(tagged, "w") as out:
        for i, line in enumerate(src):
            s = json.loads(line)
            s["tags"] = {"bucket": i % 10, "plan": "pro" if i % 3 == 0 else "basic", "score": i % 100,
                         "city": cities[i % 3], "first_name": f"user{i}"}
            s["language"], s["timeZone"] = langs[i % 4], zones[i % 3]
            out.write(json.dumps(s) + "\n")


def counted(base):
    """Seconds each expression of COUNTED takes to count (the median of 3), and its count."""
    out = []
    for expr in COUNTED:
        times, n = [], None
        for _ in range(3):
            t = time.monotonic()
            n = api(base, "POST", "/v1/audience/count", {"where": expr})["count"]
            times.append(time.monotonic() - t)
        out.append({"where": expr, "count": n, "seconds": round(sorted(times)[1], 3)})
    return out


def tocsin_serve(subs, sink, concurrency, database, binary=TOCSIN, message=None, webhook=False, count=False,
                 rules=None):
    """One broadcast from `binary serve` (the subscriptions imported by the same binary, whose migrations own the
    database)."""
    out = subprocess.run([str(binary), "subscriptions", "import", str(subs), "--database", database],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    env = dict(os.environ, TOCSIN_ADMIN_TOKEN=BENCH_TOKEN, TOCSIN_VAPID_SUBJECT="mailto:bench@tocsin-tests.org",
               TOCSIN_LOG="warn")
    # This build's server ways index the tags the segment ways compare (what a site would do for
    # the tags it segments by); an earlier build knows no such flag.
    indexed = ["--indexed-tags", "bucket,plan,city"] if binary == TOCSIN and "tagged" in str(subs) else []
    p = subprocess.Popen([str(binary), "serve", "--listen", "127.0.0.1:0", "--database", database,
                          "--endpoint-policy", "any", "--ca-cert", str(sink.cert), "--concurrency", str(concurrency),
                          "--per-origin-concurrency", str(concurrency), *indexed],
                         stdout=subprocess.PIPE, env=env, text=True)
    base = p.stdout.readline().strip().removeprefix("listening on ")
    try:
        if webhook:
            # Every event type, to the same nginx sink (which answers 201).
            api(base, "POST", "/v1/webhooks", {"url": f"https://127.0.0.1:{sink.port}/webhook", "events": ALL_EVENTS})
        if rules:
            api(base, "PUT", "/v1/rules", rules)
        counts = counted(base) if count else None
        c0, s0 = cpu_of([p.pid]), sink.cpu()
        start = time.monotonic()
        mid = api(base, "POST", "/v1/messages", message or {"payload": PAYLOAD, "target": {"all": True}})["id"]
        while True:
            m = api(base, "GET", f"/v1/messages/{mid}")
            if m["state"] == "done":
                break
            # An A/B test: its variants sent (its decision is not waited for).
            parts = (m.get("abTest") or {}).get("variants") or []
            if parts and all(v["state"] == "done" for v in parts):
                break
            time.sleep(0.02)
        wall = time.monotonic() - start
        r = {"delivered": m["counts"]["delivered"], "failed": m["counts"]["failed"], "seconds": wall,
             "cpu": cpu_of([p.pid]) - c0, "sink_cpu": sink.cpu() - s0, "peak_rss_mb": hwm_mb(p.pid)}
        if counts:
            r["counts"] = counts
        return r
    finally:
        p.terminate()
        p.wait()


def web_push(subs, sink, concurrency):
    if not (BENCH / "node_modules" / "web-push").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BENCH, check=True)
    c0 = sink.cpu()
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(sink.cert))
    out, wall, cpu, rss = run_measured(["node", str(BENCH / "webpush.mjs"), str(subs), PAYLOAD, str(concurrency)], env)
    r = json.loads(out)
    return {"delivered": r["delivered"], "failed": r["failed"], "seconds": wall, "cpu": cpu,
            "sink_cpu": sink.cpu() - c0, "peak_rss_mb": rss}


def subscribe_load(work, database, connections, seconds, binary=TOCSIN, exempt=True):
    """POST /api/subscription under wrk: a new endpoint per request (a real insert each)."""
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    one = json.loads(subprocess.run([str(binary), "dev", "gen-subscriptions", "--count", "1", "--endpoint-prefix",
                                     "https://fcm.googleapis.com/fcm/send/"], capture_output=True, text=True,
                                    check=True).stdout)
    env = dict(os.environ, TOCSIN_LOG="warn", TOCSIN_VAPID_SUBJECT="mailto:bench@tocsin-tests.org",
               TOCSIN_ADMIN_TOKEN=BENCH_TOKEN)
    # The default endpoint policy (public): FCM's host is known, so no DNS lookup per request.
    # wrk is one address sending thousands of requests a second: exempt it from the per-address limits.
    # (A baseline build from before the limits has no such flag.)
    p = subprocess.Popen([str(binary), "serve", "--listen", "127.0.0.1:0", "--database", database]
                         + (["--rate-limit-exempt", "127.0.0.1/32"] if exempt else []),
                         stdout=subprocess.PIPE, env=env, text=True)
    base = p.stdout.readline().strip().removeprefix("listening on ")
    try:
        c0 = cpu_of([p.pid])
        wrk_env = dict(os.environ, P256DH=one["keys"]["p256dh"], AUTH=one["keys"]["auth"], RUN=f"{os.getpid()}")
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(BENCH / "subscribe.lua"),
                              base], capture_output=True, text=True, env=wrk_env, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        r["cpu_us_per_request"] = round(1e6 * (cpu_of([p.pid]) - c0) / max(r["requests"], 1), 1)
        stored = api(base, "GET", "/v1/stats")["subscriptions"]
        r["stored"] = stored
        if stored < r["requests"]:
            sys.exit(f"wrk counted {r['requests']} answers but only {stored} subscriptions are stored")
        return r
    finally:
        p.terminate()
        p.wait()


def crypto_ceiling():
    """One core's keygen + ECDH rate, the floor of any sender's CPU per message."""
    example = ROOT / "target" / "release" / "examples" / "per_message"
    n = 20000
    _, wall, cpu, _ = run_measured([str(example), "floor", str(n)])
    _, wall0, cpu0, _ = run_measured([str(example), "floor", "1"])
    return n / max(cpu - cpu0, 1e-9)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[10_000], help="sizes (the full run: 10000 100000 1000000)")
    ap.add_argument("--full", action="store_true", help="N = 10,000, 100,000 and 1,000,000")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--rate", type=int, default=300_000,
                    help="ratePerMinute of the throttled ways (300,000: 5,000 a second)")
    ap.add_argument("--ways", nargs="+", default=["send", "sqlite", "postgres", "web-push"],
                    help="send sqlite postgres web-push sqlite-declarative (a declarative message) sqlite-webhook postgres-webhook "
                         "(a webhook registered), sqlite-segment postgres-segment (a 10 %% segment, and counts), "
                         "sqlite-personal postgres-personal (by language, templated), sqlite-capped postgres-capped (one cap rule), "
                         "sqlite-throttled postgres-throttled (--rate), sqlite-ab postgres-ab (four variants), and with --baseline "
                         "sqlite-baseline postgres-baseline")
    ap.add_argument("--baseline", type=Path, metavar="BIN",
                    help="another tocsin binary (an earlier build) for the ways sqlite-baseline and postgres-baseline: "
                         "A/B within one run")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the ways K times, interleaved, and report the median of each (the machine is shared)")
    ap.add_argument("--plain", action="store_true",
                    help="the sqlite and postgres ways import subscriptions without tags, language or time zone "
                         "(as a build before them must): an A/B of the path every message takes")
    ap.add_argument("--web-push-any-n", action="store_true", help="run web-push above N = 100,000 too")
    ap.add_argument("--subscribe", action="store_true",
                    help="also load POST /api/subscription with wrk (SQLite and PostgreSQL, 10 s each)")
    ap.add_argument("--subscribe-only", action="store_true", help="only the POST /api/subscription load")
    args = ap.parse_args()
    sizes = [10_000, 100_000, 1_000_000] if args.full else args.n

    if not shutil.which("nginx"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "tocsin", "-p", "tocsin-protocol", "--examples", "--bins"],
                   cwd=ROOT, check=True)
    vapid = json.loads(subprocess.run([str(TOCSIN), "vapid", "generate", "--json"], capture_output=True, text=True,
                                      check=True).stdout)
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
               "concurrency": args.concurrency, "payload_bytes": len(PAYLOAD),
               "crypto_ceiling_per_core": round(crypto_ceiling()), "runs": []}
    if args.subscribe_only:
        sizes, args.subscribe = [], True
    with tempfile.TemporaryDirectory() as work:
        if args.subscribe:
            results["subscribe"] = []
            # With --baseline, the same loads against the earlier build, interleaved (a build that
            # predates the rate limits gets no exemption flag).
            def has_exempt(binary):
                help_text = subprocess.run([str(binary), "serve", "--help"], capture_output=True, text=True).stdout
                return "--rate-limit-exempt" in help_text
            builds = [("this", TOCSIN, True)] + (
                [("baseline", args.baseline, has_exempt(args.baseline))] if args.baseline else [])
            runs = [(b, c, x) for b in ["sqlite", "postgres"] for c in [32, 64] for x in builds]
            for backend, connections, (build, binary, exempt) in runs:
                if backend == "sqlite":
                    db, dbname = f"sqlite://{work}/subscribe-{connections}-{build}.db", None
                else:
                    dbname = f"tocsin_bench_sub_{os.getpid()}_{connections}_{build}"
                    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", dbname], check=True)
                    db = f"postgres://postgres@127.0.0.1/{dbname}"
                try:
                    r = subscribe_load(work, db, connections, 10, binary, exempt)
                finally:
                    if dbname:
                        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", dbname])
                r.update(backend=backend, connections=connections, build=build)
                results["subscribe"].append(r)
                print(f"subscribe {backend:>8} {build:>8} c={connections}: {r['rps']:.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                      f"p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.2f} ms  server CPU {r['cpu_us_per_request']} us/req  "
                      f"errors {r['errors']}  stored {r['stored']}", flush=True)
        sink = Sink(work)
        try:
            for n in sizes:
                subs = Path(work) / f"subs-{n}.jsonl"
                with open(subs, "w") as f:
                    subprocess.run([str(TOCSIN), "dev", "gen-subscriptions", "--count", str(n), "--endpoint-prefix",
                                    sink.url], stdout=f, check=True)
                # The server's ways import subscriptions with attributes (as a site's would have), so
                # that the all-broadcast and the segment's read the same rows.
                tagged = Path(work) / f"subs-{n}-tagged.jsonl"
                with_attributes(subs, tagged)
                for way in [w for _ in range(args.repeat) for w in args.ways]:
                    if way == "web-push" and n > 100_000 and not args.web_push_any_n:
                        # ~800/s: a million would take twenty minutes; its rate is flat in N.
                        print(f" web-push N={n:>8}: skipped (above 100,000; --web-push-any-n runs it)", flush=True)
                        continue
                    if way == "send":
                        r = tocsin_send(subs, sink, args.concurrency, vapid)
                    elif way in ("sqlite", "sqlite-baseline", "postgres", "postgres-baseline"):
                        binary = TOCSIN
                        if way.endswith("-baseline"):
                            if not args.baseline or not args.baseline.exists():
                                sys.exit(f"{way} needs --baseline BIN")
                            binary = args.baseline
                        # An earlier build may not know tags: it imports the plain file.
                        source = subs if way.endswith("-baseline") or args.plain else tagged
                        if way.startswith("sqlite"):
                            r = tocsin_serve(source, sink, args.concurrency, f"sqlite://{work}/bench-{n}-{way}.db", binary)
                        else:
                            db = f"tocsin_bench_{os.getpid()}_{n}"
                            subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
                            try:
                                r = tocsin_serve(source, sink, args.concurrency, f"postgres://postgres@127.0.0.1/{db}",
                                                 binary)
                            finally:
                                subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", db])
                    elif way.split("-", 1)[-1] in ("segment", "personal", "capped", "throttled", "ab"):
                        kind = way.split("-", 1)[-1]
                        message = {"payload": PAYLOAD, "target": {"all": True}}
                        if kind == "segment":
                            message["target"] = {"where": SEGMENT}
                        elif kind == "personal":
                            message["payload"] = PERSONAL
                        elif kind == "throttled":
                            message["ratePerMinute"] = args.rate
                        elif kind == "ab":
                            del message["payload"]
                            message["variants"] = [PAYLOAD.replace("Benchmark", f"Variant {v}") for v in "ABCD"]
                            message["abTest"] = {"samplePercent": 100, "decideAfter": "30d", "metric": "clicked",
                                                 "ifNoWinner": "stop"}
                        rules = {"frequencyCaps": [{"max": 100, "per": "1d"}]} if kind == "capped" else None
                        if way.startswith("sqlite"):
                            r = tocsin_serve(tagged, sink, args.concurrency, f"sqlite://{work}/bench-{n}-{way}.db",
                                             message=message, count=kind == "segment", rules=rules)
                        else:
                            db = f"tocsin_bench_{os.getpid()}_{n}_{way}"
                            subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
                            try:
                                r = tocsin_serve(tagged, sink, args.concurrency, f"postgres://postgres@127.0.0.1/{db}",
                                                 message=message, count=kind == "segment", rules=rules)
                            finally:
                                subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", db])
                    elif way == "sqlite-webhook":
                        r = tocsin_serve(subs, sink, args.concurrency, f"sqlite://{work}/bench-{n}-{way}.db",
                                         webhook=True)
                    elif way == "postgres-webhook":
                        db = f"tocsin_bench_{os.getpid()}_{n}_wh"
                        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
                        try:
                            r = tocsin_serve(subs, sink, args.concurrency, f"postgres://postgres@127.0.0.1/{db}",
                                             webhook=True)
                        finally:
                            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", db])
                    elif way == "sqlite-declarative":
                        r = tocsin_serve(subs, sink, args.concurrency, f"sqlite://{work}/bench-{n}-{way}.db",
                                         message={"format": "declarative", "payload": DECLARATIVE,
                                                  "target": {"all": True}})
                    elif way == "web-push":
                        r = web_push(subs, sink, args.concurrency)
                    else:
                        sys.exit(f"unknown way {way}")
                    r.update(way=way, n=n, per_second=round(r["delivered"] / r["seconds"]),
                             cpu_s_per_1000=round(1000 * r["cpu"] / max(r["delivered"], 1), 3),
                             sink_cpu_s_per_1000=round(1000 * r["sink_cpu"] / max(r["delivered"], 1), 3))
                    results["runs"].append(r)
                    print(f"{way:>9} N={n:>8}: {r['per_second']:>7}/s  {r['cpu_s_per_1000']:.3f} CPU s/1000 "
                          f"(sink {r['sink_cpu_s_per_1000']:.3f})  peak RSS {r['peak_rss_mb']:.0f} MB  "
                          f"delivered {r['delivered']} failed {r['failed']}", flush=True)
                    for c in r.get("counts", []):
                        print(f"{'':>9} count of {c['where']!r}: {c['count']} in {c['seconds']} s", flush=True)
        finally:
            sink.stop()
    if args.repeat > 1:
        import statistics
        runs = results["runs"]
        results["all_runs"] = runs
        results["runs"] = []
        for key in dict.fromkeys((r["way"], r["n"]) for r in runs):
            group = [r for r in runs if (r["way"], r["n"]) == key]
            med = dict(sorted(group, key=lambda r: r["per_second"])[len(group) // 2])
            med["per_second_all"] = [r["per_second"] for r in group]
            med["cpu_s_per_1000_all"] = [r["cpu_s_per_1000"] for r in group]
            results["runs"].append(med)
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"results-{'-'.join(map(str, sizes)) or 'subscribe'}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    web = {r["n"]: r["per_second"] for r in results["runs"] if r["way"] == "web-push"}
    bare = {r["n"]: r["per_second"] for r in results["runs"] if r["way"] == "send"}
    print(f"\ncrypto ceiling: {results['crypto_ceiling_per_core']}/s per core")
    print("| way | N | deliveries/s | vs web-push | of send | CPU s / 1000 | sink CPU s / 1000 | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        ratio = f"{r['per_second'] / web[r['n']]:.1f}×" if web.get(r["n"]) else ""
        of_send = f"{100 * r['per_second'] / bare[r['n']]:.0f} %" if bare.get(r["n"]) and r["way"] != "send" else ""
        print(f"| {r['way']} | {r['n']} | {r['per_second']} | {ratio} | {of_send} | {r['cpu_s_per_1000']} | "
              f"{r['sink_cpu_s_per_1000']} | {r['peak_rss_mb']:.0f} |")
    print(f"\nwritten to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
