-- wrk script for the POST /api/subscription load: every request a new
-- endpoint (so every request is a real insert), with a valid P-256 key.
-- Set P256DH and AUTH in the environment (base64url), and RUN for a unique prefix.
local counter = 0
local threads = {}
local p256dh = os.getenv("P256DH")
local auth = os.getenv("AUTH")
local run = os.getenv("RUN") or "r"

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = '{"endpoint":"https://fcm.googleapis.com/fcm/send/' .. run .. '-' .. tid .. '-' .. counter ..
    '","expirationTime":null,"keys":{"p256dh":"' .. p256dh .. '","auth":"' .. auth .. '"}}'
  return wrk.format(nil, "/api/subscription", nil, body)
end

function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format('{"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, errors))
end
