--[[
  Record the outcomes of a batch of attempts and acknowledge their entries, atomically.
  An outcome whose entry is no longer pending (another worker reclaimed and finished it)
  changes nothing: the first recorded outcome wins.

  KEYS[1] stream  KEYS[2] delayed zset  KEYS[3] dlq stream  KEYS[4] stats hash
  KEYS[5] outbox stream  KEYS[6] job-log flag (exists while a shipper drains the outbox)
  KEYS[7] this minute's throughput hash (completed/failed counts, and c:<task>/f:<task> per
          task, kept two hours)
  KEYS[8] the outbox's count of events beyond one per entry (see engine/history/shipper.py)
  KEYS[9] the queue's concurrency slots (engine.core.flow): an outcome gives its slot back
  KEYS[10] exists while someone waits on a job of the queue (QueueKeys.waiters)
  KEYS[11] the running jobs asked to stop (QueueKeys.cancels)
  KEYS[12] the running jobs with log lines (QueueKeys.logged)
  ARGV[1] job key prefix  ARGV[2] group  ARGV[3] unused (times come from the server clock)
  ARGV[4] completed retention (ms, 0 = keep)  ARGV[5] failed retention (ms, 0 = keep)
  ARGV[6] notification channel prefix  ARGV[7] promoter wake-up channel
  ARGV[8] queue name
  ARGV[9] "1": publish with SPUBLISH (sharded pub/sub, Redis >= 7.0), "0": PUBLISH
  ARGV[10] the outcomes, one MessagePack array of 8 values per outcome (one argument
          instead of thousands: packing those was a tenth of a worker's time): entry id,
          job id, kind, value, traceback, due (ms), run time of the attempt (ms, for the
          duration histogram), task (for the per-task counters; "" counts under the queue only)
          kind: "completed" (value = result JSON), "retry" (value = error, due = when),
                "failed" (value = error), "cancelled" (value = reason)

  The stats hash holds the queue's counters (completed, failed, retried, cancelled), its
  duration histogram (d:<upper bound in s>, d:sum_ms) and the same per task (t:<task>:<kind>,
  td:<task>:<bound>, td:<task>:sum_ms), each summed over the batch and written once.
  The job hash keeps the worker that ran the last attempt ("worker"); a retried attempt's
  worker is appended to "ran" (one per line), so every attempt's worker stays known.

  Acknowledged entries are not deleted one by one (see tidy below): they linger in the
  stream, counted in KEYS[1]..":acked", until whole stream nodes of them can go.

  Returns an array with 1 per recorded outcome and 0 per ignored one.
]]
-- Timestamps come from the Redis server's clock, one clock for every machine, so a job's
-- created, started and finished times are ordered as Redis executed those steps.
local clock = redis.call("TIME")
local now = string.format("%.0f", clock[1] * 1000 + math.floor(clock[2] / 1000))
local jobPrefix, group = ARGV[1], ARGV[2]
local keepDone, keepFailed = tonumber(ARGV[4]), tonumber(ARGV[5])
local channel = ARGV[6]
local publish = ARGV[9] == "1" and "SPUBLISH" or "PUBLISH"
local out, nOut = {}, 0
local retried = false
-- Counters are summed over the batch and written once: HINCRBY per job is what costs.
local counts = {completed = 0, failed = 0, retried = 0, cancelled = 0}
local buckets = {}
local durationSum = 0
local perTask = {}  -- task -> {kind -> n, buckets = {label -> n}, sum = ms}
-- Upper bounds (seconds) of the job duration histogram; the last catches the rest.
local BOUNDS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
-- Their labels, made once (a tostring per job formats a float: it showed in a profile).
local LABELS = {}
for k, bound in ipairs(BOUNDS) do LABELS[k] = tostring(bound) end

local function observe(ms, task)
  local seconds = ms / 1000
  local label = "+Inf"
  for k, bound in ipairs(BOUNDS) do
    if seconds <= bound then
      label = LABELS[k]
      break
    end
  end
  buckets[label] = (buckets[label] or 0) + 1
  durationSum = durationSum + ms
  if task ~= "" then
    local t = perTask[task]
    if not t then
      t = {buckets = {}, sum = 0}
      perTask[task] = t
    end
    t.buckets[label] = (t.buckets[label] or 0) + 1
    t.sum = t.sum + ms
  end
end
local function count(task, kind)
  counts[kind] = counts[kind] + 1
  local t = perTask[task]
  if t then t[kind] = (t[kind] or 0) + 1 end
end
local queue, outbox = ARGV[8], redis.call("EXISTS", KEYS[6]) == 1
local slots = redis.call("EXISTS", KEYS[9]) == 1
-- Someone waits for a job of this queue (job.result(): engine.client.handle): only then is a
-- job's end announced on its done channel.
local notify = redis.call("EXISTS", KEYS[10]) == 1
local keyed = redis.call("EXISTS", KEYS[9] .. ":keys") == 1  -- concurrency keys' slots (start.lua)
-- A job's own state is not read: whether it was asked to stop and whether it has log lines
-- are in two sets, which exist only while some job is in them (reading each job's hash was
-- a fifth of this script's cost).
local cancels = redis.call("EXISTS", KEYS[11]) == 1
local logged = redis.call("EXISTS", KEYS[12]) == 1

-- The job-log events of the batch, written as one outbox entry at the end of this script
-- (so in the same atomic step as the outcomes): one entry per batch rather than per job is
-- what keeps the job log cheap for Redis and for the shipper (see engine/history/shipper.py).
-- Like every state event after the enqueue, each carries the job's payload and creation
-- time: the shipper may then skip an enqueued event the job has moved on from.
-- One table constructor per event (fields that do not apply are nil): filling a table field
-- by field rehashes it as it grows, and cost Redis twice as much.
local events = {}
-- ``job``: the fields the event carries, read before the outcome's write (which writes the
-- event's version ``v`` with the job's new state: no HINCRBY of its own).
local function event(job, v, id, kind, result, err, tb, due, finished)
  if not outbox then return end
  events[#events + 1] = {e = kind, j = id, task = job[1] or "",
    v = v, attempts = job[2] or "0",
    processed = job[3] or "", payload = job[4] or nil, created = job[5] or nil, result = result,
    error = err, traceback = tb, due = due, finished = finished, worker = job[6] or nil}
end

-- The outcome's write of the job's state (with its event's version, if any), through pcall:
-- a job key of another type must not fail the batch (the outcomes before it would stay
-- recorded, those after it not, and the batch would be retried). The fields come as
-- arguments, not in a table: no table per job.
local function write(jobKey, v, ...)
  if v then return redis.pcall("HSET", jobKey, "v", v, ...) end
  return redis.pcall("HSET", jobKey, ...)
end

-- A job's log lines live beside its hash and go when it goes (it is in KEYS[12] if it has
-- some, see log.lua; most jobs have none, and a PEXPIRE each would cost them).
local function expire(jobKey, ms, hasLogs)
  redis.call("PEXPIRE", jobKey, ms)
  if hasLogs then redis.call("PEXPIRE", jobKey .. ":logs", ms) end
end

-- Entries acknowledged by this call (see tidy).
local acked = {}
local outcomes = cmsgpack.unpack(ARGV[10])
for i = 1, #outcomes, 8 do
  local entry, id, kind, value, tb = outcomes[i], outcomes[i + 1], outcomes[i + 2],
    outcomes[i + 3], outcomes[i + 4]
  -- Formatted only for a retry, the one outcome with a due time (a string.format per job
  -- showed in a profile of this script: 2-3 % of Valkey's time).
  local due = kind == "retry" and string.format("%d", outcomes[i + 5]) or nil
  local ran = tonumber(outcomes[i + 6])
  local task = type(outcomes[i + 7]) == "string" and outcomes[i + 7] or ""
  local jobKey = jobPrefix .. id
  local acknowledged = redis.call("XACK", KEYS[1], group, entry) == 1
  local hasLogs, written, job, v = false, nil, nil, nil
  if acknowledged then
    acked[#acked + 1] = entry
    if slots then redis.call("ZREM", KEYS[9], entry) end
    if keyed then
      local key = redis.call("HGET", KEYS[9] .. ":keys", entry)
      if key then
        redis.call("ZREM", KEYS[9] .. ":" .. key, entry)
        redis.call("HDEL", KEYS[9] .. ":keys", entry)
      end
    end
    -- A cancel that arrived while the attempt ran wins over its outcome.
    if cancels and redis.call("SREM", KEYS[11], id) == 1 then kind = "cancelled" end
    hasLogs = logged and redis.call("SREM", KEYS[12], id) == 1
    if outbox then
      job = redis.pcall("HMGET", jobKey, "task", "attempts", "processed", "payload", "created",
        "worker", "v")
      -- A version someone overwrote with garbage starts again at 1.
      if not job.err then v = string.format("%d", (tonumber(job[7]) or 0) + 1) end
    end
    if job and job.err then
      written = job
    elseif kind == "completed" then
      written = write(jobKey, v, "status", "completed", "result", value, "finished", now)
    elseif kind == "retry" then
      written = write(jobKey, v, "status", "delayed", "error", value, "traceback", tb, "due", due)
    elseif kind == "failed" then
      written = write(jobKey, v, "status", "failed", "error", value, "traceback", tb, "finished", now)
    else
      written = write(jobKey, v, "status", "cancelled", "finished", now)
    end
  end
  if not acknowledged then
    nOut = nOut + 1; out[nOut] = 0
  elseif type(written) == "table" and written.err then
    redis.call("XADD", KEYS[3], "*", "j", id, "entry", entry,
      "error", "could not record the outcome (" .. kind .. "): job data unreadable: " .. written.err,
      "at", now)
    counts.failed = counts.failed + 1
    nOut = nOut + 1; out[nOut] = 1
  else
    observe(ran, task)
    if kind == "completed" then
      event(job, v, id, "completed", value, nil, nil, nil, now)
      if keepDone > 0 then expire(jobKey, keepDone, hasLogs) end
      count(task, "completed")
      if notify then redis.call(publish, channel .. id, "completed") end
    elseif kind == "retry" then
      local ranBy = redis.call("HMGET", jobKey, "worker", "ran")
      if ranBy[1] then redis.call("HSET", jobKey, "ran", (ranBy[2] or "") .. ranBy[1] .. "\n") end
      redis.call("ZADD", KEYS[2], due, id)
      event(job, v, id, "retry", nil, value, tb, due, nil)
      count(task, "retried")
      retried = true
    elseif kind == "failed" then
      -- The dead letter is self-contained: it outlives the job's hash if a retention
      -- policy expires that.
      -- With the job log on, the event's read has them already (the write changed neither).
      local last = job and {job[2], job[1]} or redis.call("HMGET", jobKey, "attempts", "task")
      local dead = redis.call("XADD", KEYS[3], "*", "j", id, "task", last[2] or "", "error", value,
        "traceback", tb, "attempts", last[1] or "0", "at", now)
      redis.call("HSET", jobKey, "dlq", dead)
      event(job, v, id, "failed", nil, value, tb, nil, now)
      if keepFailed > 0 then expire(jobKey, keepFailed, hasLogs) end
      count(task, "failed")
      if notify then redis.call(publish, channel .. id, "failed") end
    else
      if value ~= "" then redis.call("HSET", jobKey, "error", value) end
      event(job, v, id, "cancelled", nil, value, nil, nil, now)
      if keepDone > 0 then expire(jobKey, keepDone, hasLogs) end
      count(task, "cancelled")
      if notify then redis.call(publish, channel .. id, "cancelled") end
    end
    nOut = nOut + 1; out[nOut] = 1
  end
end
-- Acknowledged entries are not deleted one by one: an XDEL walks the entry's stream node
-- from its first entry (a third of this script's instructions with a backlog). They linger
-- until whole nodes of them can go with an approximate trim, which frees a node without
-- reading it. A group hands entries out in order, so every entry older than the oldest
-- pending one (with none pending: up to the last one handed out) is done. Their count
-- (KEYS[1]..":acked") keeps the waiting jobs countable: the stream's length minus the pending
-- and the lingering entries. Behind a job that runs for hours, at most LINGER_MAX linger;
-- beyond, entries are deleted one by one again.
local LINGER_MAX = 10000
-- The id of the entry the group last handed out; whether entry id a is after entry id b.
-- (finish.lua, bury.lua and start.lua each hold these: scripts share no code.)
local function lastDelivered(stream, group)
  for _, g in ipairs(redis.call("XINFO", "GROUPS", stream)) do
    local name, last = nil, nil
    for k = 1, #g, 2 do
      if g[k] == "name" then name = g[k + 1] elseif g[k] == "last-delivered-id" then last = g[k + 1] end
    end
    if name == group then return last end
  end
end
local function newer(a, b)
  local am, as = string.match(a, "^(%d+)-(%d+)$")
  local bm, bs = string.match(b, "^(%d+)-(%d+)$")
  if am ~= bm then return tonumber(am) > tonumber(bm) end
  return tonumber(as) > tonumber(bs)
end
local function tidy(stream)
  local countKey = stream .. ":acked"
  local lingering = tonumber(redis.call("GET", countKey)) or 0
  if lingering + #acked > LINGER_MAX then
    for first = 1, #acked, 500 do
      redis.call("XDEL", stream, unpack(acked, first, math.min(first + 499, #acked)))
    end
  else
    lingering = lingering + #acked
  end
  local pending, trimmed = redis.call("XPENDING", stream, group), 0
  if pending[1] > 0 then
    trimmed = redis.call("XTRIM", stream, "MINID", "~", pending[2])
  else
    local delivered = lastDelivered(stream, group)
    local newest = redis.call("XREVRANGE", stream, "+", "-", "COUNT", 1)[1]
    if not newest then
      trimmed = lingering  -- an empty stream: nothing lingers
    elseif delivered and not newer(newest[1], delivered) then
      -- Nothing waits and nothing runs: the stream goes back to empty (whole nodes).
      redis.call("XTRIM", stream, "MAXLEN", 0)
      trimmed, lingering = lingering, 0
    elseif delivered then
      trimmed = redis.call("XTRIM", stream, "MINID", "~", delivered)
    end
  end
  lingering = lingering - trimmed
  if lingering > 0 then redis.call("SET", countKey, lingering) else redis.call("DEL", countKey) end
end
if #acked > 0 then tidy(KEYS[1]) end
if #events > 0 then
  redis.call("XADD", KEYS[5], "*", "q", queue, "t", now, "n", #events, "b", cjson.encode(events))
  if #events > 1 then redis.call("INCRBY", KEYS[8], #events - 1) end
end
for name, n in pairs(counts) do
  if n > 0 then redis.call("HINCRBY", KEYS[4], name, n) end
end
for label, n in pairs(buckets) do redis.call("HINCRBY", KEYS[4], "d:" .. label, n) end
if durationSum > 0 then redis.call("HINCRBY", KEYS[4], "d:sum_ms", durationSum) end
for task, t in pairs(perTask) do
  for _, kind in ipairs({"completed", "failed", "retried", "cancelled"}) do
    if t[kind] then redis.call("HINCRBY", KEYS[4], "t:" .. task .. ":" .. kind, t[kind]) end
  end
  if t.completed then redis.call("HINCRBY", KEYS[7], "c:" .. task, t.completed) end
  if t.failed then redis.call("HINCRBY", KEYS[7], "f:" .. task, t.failed) end
  for label, n in pairs(t.buckets) do redis.call("HINCRBY", KEYS[4], "td:" .. task .. ":" .. label, n) end
  if t.sum > 0 then redis.call("HINCRBY", KEYS[4], "td:" .. task .. ":sum_ms", t.sum) end
end
if counts.completed + counts.failed > 0 then
  redis.call("HINCRBY", KEYS[7], "completed", counts.completed)
  redis.call("HINCRBY", KEYS[7], "failed", counts.failed)
  redis.call("EXPIRE", KEYS[7], 7200)
end
-- Promoters sleep until the next due time; tell them an earlier one may exist now.
if retried then redis.call(publish, ARGV[7], KEYS[2]) end
return out
