--[[
  Mark a batch of entries as started: entries just read with a blocking XREADGROUP (or
  reclaimed), or, with ARGV[5] = "read", up to ARGV[6] new entries this script reads itself
  (XREADGROUP without BLOCK), so a busy worker fetches and starts jobs in one round trip.

  KEYS[1] stream   KEYS[2] dlq stream
  ARGV[1] job key prefix  ARGV[2] group  ARGV[3] unused (times come from the server clock)  ARGV[4] worker id (consumer)
  ARGV[5..] pairs: entry id, job id ("" when the entry has no job id field);
            or "read", count

  For each pair returns {entry id, job id, code, task, payload, attempts, timeout,
  max_attempts, tick, created}; code 1 = run it, 0 = skipped (cancelled, or poison moved
  to the DLQ; the entry was acknowledged and deleted).
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

local pairs_ = {}
if ARGV[5] == "read" then
  local reply = redis.call("XREADGROUP", "GROUP", group, worker, "COUNT", ARGV[6],
    "STREAMS", KEYS[1], ">")
  if reply then
    for _, e in ipairs(reply[1][2]) do
      local id = ""
      local fields = e[2]
      for j = 1, #fields, 2 do
        if fields[j] == "j" then id = fields[j + 1] end
      end
      pairs_[#pairs_ + 1] = e[1]
      pairs_[#pairs_ + 1] = id
    end
  end
else
  for i = 5, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
end

for i = 1, #pairs_, 2 do
  local entry, id = pairs_[i], pairs_[i + 1]
  local jobKey = jobPrefix .. id
  local h = nil
  if id ~= "" then
    h = redis.call("HMGET", jobKey, "status", "task", "payload", "timeout", "max_attempts",
      "tick", "created")
  end
  if h == nil or not h[1] then
    -- A poison entry: no job id, or a job hash that does not exist. Keep the evidence.
    local reason = id == "" and "stream entry has no job id" or "job data missing"
    redis.call("XADD", KEYS[2], "*", "j", id, "entry", entry, "error", reason, "at", now)
    drop(entry)
    out[#out + 1] = {entry, id, 0}
  elseif h[1] == "cancelled" or h[1] == "completed" or h[1] == "failed" then
    drop(entry)
    out[#out + 1] = {entry, id, 0}
  else
    local attempts = redis.call("HINCRBY", jobKey, "attempts", 1)
    redis.call("HSET", jobKey, "status", "active", "processed", now, "worker", worker,
      "msg", entry)
    out[#out + 1] = {entry, id, 1, h[2], h[3], attempts, h[4] or "", h[5] or "", h[6] or "",
      h[7] or ""}
  end
end
return out
