-- wrk script for scripts/bench-edge: POST /ingest with batches of 100 mixed
-- events (~250 bytes each). Several distinct bodies, one session per batch.
local tenant = os.getenv("BENCH_TENANT") or "00000000-0000-0000-0000-000000000000"
local auth = os.getenv("BENCH_AUTH") or ("Bearer " .. tenant .. ":secret")
local per_batch = tonumber(os.getenv("BENCH_EVENTS_PER_BATCH") or "100")
-- BENCH_CLOSE=1: one request per connection (wrk connects again after each
-- answer), to measure connection setup (the TLS handshake with HTTPS).
local close = os.getenv("BENCH_CLOSE") == "1"

local function uuid()
  return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function(c)
    local v = (c == "x") and math.random(0, 15) or math.random(8, 11)
    return string.format("%x", v)
  end))
end

local function batch()
  local now = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local session = uuid()
  local out = {}
  for i = 0, per_batch - 1 do
    local common = string.format(
      '"id":"%s","tenant_id":"%s","session_id":"%s","timestamp":"%s","url":"https://shop.example.com/p/%d","user_agent":"Mozilla/5.0 (X11; Linux x86_64)"',
      uuid(), tenant, session, now, i)
    local k = i % 5
    local ev
    if k == 0 then
      ev = '{' .. common .. ',"type":"pageview","path":"/p/' .. i .. '","title":"Product page ' .. i .. '"}'
    elseif k == 1 then
      ev = '{' .. common .. ',"type":"click","selector":"button#buy-now","text":"Buy now","x":120,"y":480}'
    elseif k == 2 then
      ev = '{' .. common .. ',"type":"scroll","depth_pct":' .. (i % 101) .. '}'
    elseif k == 3 then
      ev = '{' .. common .. ',"type":"performance","lcp":1234.5,"fcp":810.2,"cls":0.05,"ttfb":120}'
    else
      ev = '{' .. common .. ',"type":"custom","name":"add_to_cart","properties":{"sku":"A-' .. i .. '","qty":2}}'
    end
    out[#out + 1] = ev
  end
  return '{"events":[' .. table.concat(out, ",") .. ']}'
end

local requests = {}
local n = 0

function init(args)
  math.randomseed(os.time() + math.random(1, 100000))
  for i = 1, 16 do
    local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = auth,
    }
    if close then headers["Connection"] = "close" end
    requests[i] = wrk.format("POST", "/ingest", headers, batch())
  end
end

function request()
  n = n + 1
  return requests[(n % #requests) + 1]
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local ok = summary.requests - summary.errors.status - summary.errors.connect - summary.errors.read - summary.errors.write - summary.errors.timeout
  io.write(string.format("requests/s: %.0f\n", summary.requests / secs))
  io.write(string.format("events/s (2xx only): %.0f\n", ok * per_batch / secs))
  io.write(string.format("non-2xx: %d, socket errors: %d\n", summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("latency p%s: %.2f ms\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("latency max: %.2f ms\n", latency.max / 1000))
end
