-- wrk script of the benchmark harness: POST the body in $BENCH_BODY_FILE (when set, with the headers in
-- $BENCH_HEADERS, "name: value" pairs separated by "\n"), and print one parseable JSON line when done.
--
-- With $BENCH_BY_STATUS set, each request also carries its own X-Request-ID (the service echoes it, shed 503s
-- too) and its start time, taken with clock_gettime through LuaJIT's FFI; the answer's id finds the start, so the
-- line adds the count and latency percentiles of every status (wrk's own histogram mixes 200s and 503s), over
-- the whole run and over the requests started $BENCH_STEADY_AFTER_US or more after the thread's first.

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local handle = assert(io.open(body_file, "rb"))
  wrk.body = handle:read("*a")
  handle:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local extra = os.getenv("BENCH_HEADERS")
if extra and extra ~= "" then
  for name, value in extra:gmatch("([^:\n]+):%s*([^\n]*)") do
    wrk.headers[name] = value
  end
end

local by_status = os.getenv("BENCH_BY_STATUS")
by_status = by_status ~= nil and by_status ~= ""
local steady_after_us = tonumber(os.getenv("BENCH_STEADY_AFTER_US") or "") or 0
local threads = {}

if by_status then
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock_id, bench_timespec *tp);
  ]])
  local CLOCK_MONOTONIC = 1
  local timespec = ffi.new("bench_timespec")
  local function now_us()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
    return tonumber(timespec.tv_sec) * 1000000 + tonumber(timespec.tv_nsec) / 1000
  end

  -- Globals of each thread's Lua state, read by done(): thread:get copies flat tables only (a nested one
  -- crashes wrk 4.1), so each answer is one index of three lists.
  sent = 0
  uncorrelated = {}  -- status -> answers without a known id (a connection refused before its request was read)
  statuses = {}  -- each correlated answer's status,
  latencies = {}  -- its latency in microseconds,
  offsets = {}  -- and when its request started, in microseconds after the thread's first
  local started = {}
  local first_us = nil

  function setup(thread)
    thread:set("prefix", "b" .. (#threads + 1) .. "-")
    table.insert(threads, thread)
  end

  function request()
    sent = sent + 1
    local id = prefix .. sent
    local now = now_us()
    first_us = first_us or now
    started[id] = now
    wrk.headers["X-Request-ID"] = id
    return wrk.format()
  end

  function response(status, headers, body)
    local id = headers["x-request-id"] or headers["X-Request-ID"]
    local began = id and started[id]
    if began == nil then
      uncorrelated[status] = (uncorrelated[status] or 0) + 1
      return
    end
    started[id] = nil
    local index = #latencies + 1
    latencies[index] = now_us() - began
    statuses[index] = status
    offsets[index] = began - first_us
  end
end

local function percentile(sorted, p)
  local index = math.ceil(#sorted * p / 100)
  if index < 1 then index = 1 end
  return sorted[index]
end

local function summaries(merged)
  local parts = {}
  for status, list in pairs(merged) do
    table.sort(list)
    local sum = 0
    for _, value in ipairs(list) do sum = sum + value end
    parts[#parts + 1] = string.format(
      '"%s":{"count":%d,"mean":%.3f,"min":%.3f,"p50":%.3f,"p90":%.3f,"p99":%.3f,"p99.9":%.3f,"max":%.3f}',
      status, #list, sum / #list, list[1], percentile(list, 50), percentile(list, 90), percentile(list, 99),
      percentile(list, 99.9), list[#list]
    )
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function status_json()
  local all, steady, sent_total, lost = {}, {}, 0, {}
  for _, thread in ipairs(threads) do
    sent_total = sent_total + (thread:get("sent") or 0)
    for status, count in pairs(thread:get("uncorrelated") or {}) do
      lost[status] = (lost[status] or 0) + count
    end
    local thread_statuses, thread_offsets = thread:get("statuses") or {}, thread:get("offsets") or {}
    for index, value in ipairs(thread:get("latencies") or {}) do
      local status = tostring(thread_statuses[index])
      all[status] = all[status] or {}
      table.insert(all[status], value)
      if thread_offsets[index] >= steady_after_us then
        steady[status] = steady[status] or {}
        table.insert(steady[status], value)
      end
    end
  end
  local lost_parts = {}
  for status, count in pairs(lost) do
    lost_parts[#lost_parts + 1] = string.format('"%d":%d', status, count)
  end
  return string.format(',"sent":%d,"uncorrelated":{%s},"by_status":%s,"steady_after_us":%d,"by_status_steady":%s',
    sent_total, table.concat(lost_parts, ","), summaries(all), steady_after_us, summaries(steady))
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.3f,"stdev":%.3f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p99.9":%d}%s}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    by_status and status_json() or ""
  ))
end
