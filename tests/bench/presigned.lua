-- wrk script for tests/bench/ingest.py: replay pre-signed raw HTTP requests.
-- usage: wrk -t N ... -s presigned.lua URL -- REQUESTS_BASE [RATE_PER_THREAD]
-- Thread k (0-based) reads REQUESTS_BASE.k: complete HTTP/1.1 requests, each followed by a NUL
-- byte, so no two threads send the same webhook-id and init() only splits a string. A thread that
-- runs out starts over (counted in `wraps`: to the broker those repeats are duplicates).
-- With RATE_PER_THREAD (requests/s) each thread paces its connections to that rate (open loop, as
-- long as enough connections are free); without it every connection sends as fast as it can.
-- done() prints "BENCH key value" lines that ingest.py parses (latencies in microseconds).

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path = args[1] .. "." .. id
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  requests, idx, wraps, statuses = {}, 0, 0, {}
  local pos = 1
  while true do
    local stop = string.find(data, "\0", pos, true)
    if not stop then
      break
    end
    requests[#requests + 1] = string.sub(data, pos, stop - 1)
    pos = stop + 1
  end
  if #requests == 0 then
    error("no requests in " .. path)
  end
  interval = args[2] and 1000 / tonumber(args[2]) or nil
  slots = 0
end

function delay()
  if not interval then
    return 0
  end
  started = started or now_ms()
  slots = slots + 1
  local wait = started + slots * interval - now_ms()
  return wait > 0 and math.floor(wait) or 0
end

function request()
  idx = idx + 1
  if idx > #requests then
    idx, wraps = 1, wraps + 1
  end
  return requests[idx]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local out = io.write
  out(string.format("BENCH requests %d\n", summary.requests))
  out(string.format("BENCH duration_us %d\n", summary.duration))
  out(string.format("BENCH bytes %d\n", summary.bytes))
  out(string.format("BENCH errors_connect %d\n", summary.errors.connect))
  out(string.format("BENCH errors_read %d\n", summary.errors.read))
  out(string.format("BENCH errors_write %d\n", summary.errors.write))
  out(string.format("BENCH errors_status %d\n", summary.errors.status))
  out(string.format("BENCH errors_timeout %d\n", summary.errors.timeout))
  for _, p in ipairs({50, 90, 95, 99, 99.9}) do
    out(string.format("BENCH p%s %d\n", tostring(p), latency:percentile(p)))
  end
  out(string.format("BENCH mean %d\n", latency.mean))
  out(string.format("BENCH max %d\n", latency.max))
  local total = {}
  for _, thread in ipairs(threads) do
    out(string.format("BENCH wraps_%d %d\n", thread:get("id"), thread:get("wraps")))
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  for status, n in pairs(total) do
    out(string.format("BENCH status_%d %d\n", status, n))
  end
end
