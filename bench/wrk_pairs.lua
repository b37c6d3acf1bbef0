-- wrk script for bench/bench_http.py: POST /v1/calls, then DELETE of that call, again and again.
--
-- Run with as many threads as connections (-t N -c N): a thread's one connection then sends
-- its requests strictly in turn, so every DELETE follows its own POST's answer. Every POST
-- must be answered 200 "admitted" and every DELETE 200; `done` prints one JSON line.
--   wrk -t8 -c8 -d3s -s bench/wrk_pairs.lua http://127.0.0.1:PORT -- TAG +14155550100,...

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("index", #threads)
end

function init(args)
  tag = args[1] or "wrk"
  numbers = {}
  for number in string.gmatch(args[2] or "+14155550100", "[^,]+") do
    table.insert(numbers, number)
  end
  sent, completed, bad, last_bad = 0, 0, 0, ""
  pending = nil -- the call id whose DELETE is next, or nil when a POST is next
  posted = false -- whether the answer awaited is a POST's
end

function request()
  if pending == nil then
    sent = sent + 1
    pending = string.format("%s-%d-%d", tag, index, sent)
    posted = true
    local body = string.format('{"call_id":"%s","direction":"inbound","number":"%s"}',
                               pending, numbers[(sent % #numbers) + 1])
    return wrk.format("POST", "/v1/calls", {["Content-Type"] = "application/json"}, body)
  end
  local call_id = pending
  pending = nil
  posted = false
  return wrk.format("DELETE", "/v1/calls/" .. call_id)
end

function response(status, headers, body)
  if status ~= 200 or (posted and not string.find(body, '"admitted"', 1, true)) then
    bad = bad + 1
    last_bad = string.format("%s %d %s", posted and "POST" or "DELETE", status,
                             string.sub(body, 1, 200))
  elseif not posted then
    completed = completed + 1
  end
end

local function json_string(text)
  return '"' .. string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

function done(summary, latency, requests)
  local total_pairs, total_bad, example = 0, 0, ""
  for _, thread in ipairs(threads) do
    total_pairs = total_pairs + thread:get("completed")
    total_bad = total_bad + thread:get("bad")
    if thread:get("bad") > 0 then example = thread:get("last_bad") end
  end
  local errors = summary.errors
  io.write(string.format(
    '{"pairs":%d,"bad":%d,"seconds":%f,"socket_errors":%d,"p50_ms":%f,"p99_ms":%f,' ..
    '"example_bad":%s}\n',
    total_pairs, total_bad, summary.duration / 1e6,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, json_string(example)))
end
