-- wrk script for `make soak` (soak/traffic.py writes the data file and reads the result file).
--
-- Each wrk thread has exactly one connection, so requests and responses alternate strictly and every
-- response belongs to the request sent just before it: per-category status counts are exact. A thread
-- sends its quota and stops itself once the last response arrived, so nothing is in flight at the end
-- and Envoy's request counters can be compared with what was sent.
--
-- wrk's main thread sleeps for the whole -d duration even when every thread has stopped, so each thread
-- leaves a marker file when it is done and soak/traffic.py then ends wrk with SIGINT (which wrk handles: it
-- joins the threads and calls done()).
--
-- init args: <data file> <total requests> <threads> <result file> <marker directory> <fresh offset>
--   fresh offset: where each thread starts in the `fresh` pool, past what the previous pass used
--   data file: a Lua chunk returning {categories = {...}, requests = {...}, fresh = {...}}
--     categories[i] = {name, status, where ("body" or a response header name), contains = {...}, absent = {...}}
--     requests[j]   = {cat = i, raw = "<HTTP/1.1 request>"} or {cat = i, fresh = true} (takes the next
--                     request from the `fresh` pool: valid tokens used rarely enough to miss the token cache)

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local data, quota, pos, fresh_pos, current, marker
-- `issued`: request() calls. wrk calls request() once on the first thread before starting it, to check
-- what it returns; that call sends nothing, so it is the one issued request without a response.
issued, received, result_path = 0, 0, nil
counts = {}  -- "<category> <status> <ok|bad>" -> responses

function init(args)
  data = dofile(args[1])
  local total, nthreads = tonumber(args[2]), tonumber(args[3])
  result_path = args[4]
  marker = args[5] .. "/done-" .. tid
  quota = math.floor(total / nthreads)
  if tid < total % nthreads then
    quota = quota + 1
  end
  -- Threads start at different places in the cycle so that they do not send the same request in step.
  pos = math.floor(tid * #data.requests / nthreads) + 1
  fresh_pos = (math.floor(tid * #data.fresh / nthreads) + tonumber(args[6])) % #data.fresh + 1
end

function request()
  local entry = data.requests[pos]
  pos = pos % #data.requests + 1
  local raw = entry.raw
  if entry.fresh then
    raw = data.fresh[fresh_pos]
    fresh_pos = fresh_pos % #data.fresh + 1
  end
  current = entry.cat
  issued = issued + 1
  return raw
end

local function as_expected(cat, status, headers, body)
  if status ~= cat.status then
    return false
  end
  local text = body or ""
  if cat.where ~= "body" then
    text = headers[cat.where] or ""
  end
  for _, s in ipairs(cat.contains) do
    if not string.find(text, s, 1, true) then
      return false
    end
  end
  for _, s in ipairs(cat.absent) do
    if string.find(text, s, 1, true) then
      return false
    end
  end
  return true
end

function response(status, headers, body)
  received = received + 1
  local key
  if current == nil then
    key = "unknown " .. status .. " bad"
  else
    local cat = data.categories[current]
    key = cat.name .. " " .. status .. " " .. (as_expected(cat, status, headers, body) and "ok" or "bad")
  end
  current = nil
  counts[key] = (counts[key] or 0) + 1
  if received >= quota then
    wrk.thread:stop()
    assert(io.open(marker, "w")):close()
  end
end

function done(summary, latency, requests)
  local out = assert(io.open(threads[1]:get("result_path"), "w"))
  out:write(string.format("summary %d %d %d\n", summary.duration, summary.requests, summary.bytes))
  local e = summary.errors
  out:write(string.format("errors %d %d %d %d\n", e.connect, e.read, e.write, e.timeout))
  out:write(string.format("latency %d %d %d %d %d %d\n", latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
  for _, t in ipairs(threads) do
    out:write(string.format("thread %d %d %d\n", t:get("tid"), t:get("issued"), t:get("received")))
    for key, n in pairs(t:get("counts")) do
      out:write(string.format("count %s %d\n", key, n))
    end
  end
  out:close()
end
