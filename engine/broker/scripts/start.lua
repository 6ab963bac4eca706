--[[
  Mark a batch of entries as started, moving a fresh job's payload from its stream entry
  into its hash: entries just read with a blocking XREADGROUP (or reclaimed), or, with
  ARGV[5] = "read", up to ARGV[6] new entries this script reads itself (XREADGROUP without
  BLOCK), so a busy worker fetches and starts jobs in one round trip.

  An idle worker runs a fresh job from the entry it read before this script confirms it
  (see Worker._start_now): so it must not matter which of the two happens first.

  KEYS[1] stream   KEYS[2] dlq stream
  ARGV[1] job key prefix  ARGV[2] group  ARGV[3] unused (times come from the server clock)  ARGV[4] worker id (consumer)
  ARGV[5..] pairs: entry id, job id ("" when the entry has no job id field);
            or "read", count

  For each pair returns {entry id, job id, code, task, payload, attempts, timeout,
  max_attempts, tick, created}; code 1 = run it, 0 = skipped (cancelled, or poison moved
  to the DLQ; the entry was acknowledged and deleted).

  No entry or job hash, whatever it holds, makes this script fail (its writes so far would
  stay, and the entries it read would be stuck pending): reads of a job's key that can fail
  on its type or contents go through redis.pcall, and such a job is dead-lettered here.
]]
-- Timestamps come from the Redis server's clock, one clock for every machine, so a job's
-- created, started and finished times are ordered as Redis executed those steps.
local clock = redis.call("TIME")
local now = string.format("%.0f", clock[1] * 1000 + math.floor(clock[2] / 1000))
local jobPrefix, group, worker = ARGV[1], ARGV[2], ARGV[4]
local out = {}

local function drop(entry)
  redis.call("XACK", KEYS[1], group, entry)
  redis.call("XDEL", KEYS[1], entry)
end

-- (entry id, job id, the entry's payload or false) per entry to start.
local todo = {}
if ARGV[5] == "read" then
  local reply = redis.call("XREADGROUP", "GROUP", group, worker, "COUNT", ARGV[6],
    "STREAMS", KEYS[1], ">")
  if reply then
    for _, e in ipairs(reply[1][2]) do
      local id, payload = "", false
      local fields = e[2]
      for j = 1, #fields, 2 do
        if fields[j] == "j" then id = fields[j + 1] elseif fields[j] == "p" then payload = fields[j + 1] end
      end
      todo[#todo + 1] = {e[1], id, payload}
    end
  end
else
  for i = 5, #ARGV, 2 do todo[#todo + 1] = {ARGV[i], ARGV[i + 1], false} end
end

-- A fresh job's payload is in its stream entry until it starts (see enqueue.lua).
local function entryPayload(entry)
  local e = redis.call("XRANGE", KEYS[1], entry, entry)[1]
  if not e then return false end
  for j = 1, #e[2], 2 do
    if e[2][j] == "p" then return e[2][j + 1] end
  end
  return false
end

local function poison(entry, id, reason)
  redis.call("XADD", KEYS[2], "*", "j", id, "entry", entry, "error", reason, "at", now)
  drop(entry)
  out[#out + 1] = {entry, id, 0}
end

for _, t in ipairs(todo) do
  local entry, id = t[1], t[2]
  local jobKey = jobPrefix .. id
  local h = nil
  if id ~= "" then
    h = redis.pcall("HMGET", jobKey, "status", "task", "payload", "timeout", "max_attempts",
      "tick", "created")
  end
  local attempts = nil
  if h ~= nil and h.err == nil and h[1] and h[1] ~= "cancelled" and h[1] ~= "completed"
      and h[1] ~= "failed" then
    attempts = redis.pcall("HINCRBY", jobKey, "attempts", 1)
  end
  if h ~= nil and h.err ~= nil then
    poison(entry, id, "job data unreadable: " .. h.err)
  elseif h == nil or not h[1] then
    -- A poison entry: no job id, or a job hash that does not exist. Keep the evidence.
    poison(entry, id, id == "" and "stream entry has no job id" or "job data missing")
  elseif h[1] == "cancelled" or h[1] == "completed" or h[1] == "failed" then
    drop(entry)
    out[#out + 1] = {entry, id, 0}
  elseif type(attempts) ~= "number" then
    local reason = "job data unreadable: attempts: " .. tostring(attempts.err)
    redis.pcall("HSET", jobKey, "status", "failed", "error", reason, "finished", now)
    poison(entry, id, reason)
  else
    local payload = h[3]
    if payload then
      redis.call("HSET", jobKey, "status", "active", "processed", now, "worker", worker,
        "msg", entry)
    else
      payload = t[3] or entryPayload(entry) or ""
      redis.call("HSET", jobKey, "status", "active", "processed", now, "worker", worker,
        "msg", entry, "payload", payload)
    end
    out[#out + 1] = {entry, id, 1, h[2], payload, attempts, h[4] or "", h[5] or "", h[6] or "",
      h[7] or ""}
  end
end
return out
