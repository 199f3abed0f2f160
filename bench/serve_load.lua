-- wrk script for bench/serve_load.sh: POST /recommend for random known
-- users, with a share of malformed requests mixed in, and a tally of the
-- response statuses per request kind.
--
--   wrk -t 4 -c 4 -d 20s --latency -s bench/serve_load.lua http://127.0.0.1:PORT -- users.txt 0.1 [0.2]
--
-- Arguments after --: a file of known user ids (one per line), the share
-- of malformed requests (default 0.1) and the share of answers whose first
-- item the user then clicks (default 0: no clicks; the server needs
-- --events-log for them). Run it with as many wrk threads as
-- connections (-t N -c N): each thread then has one connection, whose
-- requests and responses alternate, so the kind of the last request sent is
-- the kind of the next response (wrk's callbacks do not name the connection).
--
-- Kinds and the status each must get (docs/serving.md):
--   valid          {"user": <known>, "k": 10}             200
--   bad_json       truncated JSON                          400
--   unknown_field  {"user": <known>, "kk": 5}              400
--   wrong_type     {"user": <known>, "k": "10"}            400
--   unknown_item   {"history": ["no-such-item-<n>"]}       404
--   wrong_method   DELETE /recommend                       405
--   click          POST /events {"user": <the user>, "item": <the answer's first item>, "type": "click"}
--                  (the request after a valid answer, at the click share)    200
-- done() prints one line per kind and then "unexpected: N", the number of
-- responses whose status is not the one their kind must get.

local expected = {valid = 200, bad_json = 400, unknown_field = 400, wrong_type = 400, unknown_item = 404,
                  wrong_method = 405, click = 200}
local kinds = {"valid", "bad_json", "unknown_field", "wrong_type", "unknown_item", "wrong_method", "click"}
local json_headers = {["Content-Type"] = "application/json"}

local threads = {}
local next_id = 1

-- Main state: one call per wrk thread, before it starts.
function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- Per-thread state from here on.
local users = {}
local malformed_share = 0.1
local click_share = 0
local last_kind = nil
local last_user = nil
local pending_click = nil  -- the event body to send next
tallies = {}  -- global: done() reads it with thread:get

function init(args)
  local path = args[1]
  if path == nil then error("serve_load.lua: give the users file after --") end
  for line in io.lines(path) do
    if line ~= "" then users[#users + 1] = line end
  end
  if #users == 0 then error("serve_load.lua: no user ids in " .. path) end
  if args[2] ~= nil then malformed_share = tonumber(args[2]) end
  if args[3] ~= nil then click_share = tonumber(args[3]) end
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

local function malformed(user)
  local pick = math.random(5)
  if pick == 1 then
    return "bad_json", wrk.format("POST", "/recommend", json_headers, '{"user": "' .. user .. '", "k": ')
  elseif pick == 2 then
    return "unknown_field", wrk.format("POST", "/recommend", json_headers, '{"user": "' .. user .. '", "kk": 5}')
  elseif pick == 3 then
    return "wrong_type", wrk.format("POST", "/recommend", json_headers, '{"user": "' .. user .. '", "k": "10"}')
  elseif pick == 4 then
    return "unknown_item", wrk.format("POST", "/recommend", json_headers,
                                      '{"history": ["no-such-item-' .. math.random(1000000) .. '"]}')
  end
  return "wrong_method", wrk.format("DELETE", "/recommend")
end

function request()
  if pending_click ~= nil then
    local body = pending_click
    pending_click = nil
    last_kind = "click"
    return wrk.format("POST", "/events", json_headers, body)
  end
  local user = users[math.random(#users)]
  last_user = user
  local req
  if math.random() < malformed_share then
    last_kind, req = malformed(user)
  else
    last_kind = "valid"
    req = wrk.format("POST", "/recommend", json_headers, '{"user": "' .. user .. '", "k": 10}')
  end
  return req
end

function response(status, headers, body)
  local key = (last_kind or "unknown") .. " " .. status
  tallies[key] = (tallies[key] or 0) + 1
  if last_kind == "valid" and status == 200 and click_share > 0 and math.random() < click_share then
    -- The response's keys are sorted: the first "id" is the first item's.
    local item = body:match('"id":"([^"]+)"')
    if item ~= nil then
      pending_click = '{"user": "' .. last_user .. '", "item": "' .. item .. '", "type": "click"}'
    end
  end
  last_kind = nil
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for key, n in pairs(t:get("tallies") or {}) do total[key] = (total[key] or 0) + n end
  end
  local unexpected = 0
  local function report(kind)
    local n, good, statuses = 0, 0, {}
    for key, count in pairs(total) do
      local k, status = key:match("^(%S+) (%d+)$")
      if k == kind then
        n = n + count
        if tonumber(status) == expected[kind] then good = good + count end
        statuses[#statuses + 1] = status .. "=" .. count
      end
    end
    table.sort(statuses)
    unexpected = unexpected + (n - good)
    io.write(string.format("kind %-13s %8d requests, %8d with the expected %s, %d unexpected (%s)\n", kind, n, good,
                           tostring(expected[kind] or "?"), n - good, table.concat(statuses, " ")))
  end
  for _, kind in ipairs(kinds) do report(kind) end
  report("unknown")  -- responses without a request kind: must not happen
  local e = summary.errors
  io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n", e.connect, e.read, e.write,
                         e.timeout))
  io.write(string.format("non-2xx/3xx (wrk): %d\n", e.status))
  io.write(string.format("requests: %d in %.2f s = %.1f requests/s\n", summary.requests, summary.duration / 1e6,
                         summary.requests / (summary.duration / 1e6)))
  io.write(string.format("latency_ms: p50 %.3f, p90 %.3f, p99 %.3f, max %.3f\n", latency:percentile(50) / 1000,
                         latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("unexpected: %d\n", unexpected + e.connect + e.read + e.write + e.timeout))
end
