--[[
  Mark a batch of entries just read with XREADGROUP (or reclaimed) as started.

  KEYS[1] stream   KEYS[2] dlq stream
  ARGV[1] job key prefix  ARGV[2] group  ARGV[3] now (ms)  ARGV[4] worker id
  ARGV[5..] pairs: entry id, job id ("" when the entry has no job id field)

  For each pair returns {entry id, job id, code, task, payload, attempts, timeout,
  max_attempts, tick, created}; code 1 = run it, 0 = skipped (cancelled, or poison moved
  to the DLQ; the entry was acknowledged and deleted).
]]
local jobPrefix, group, now, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}

local function drop(entry)
  redis.call("XACK", KEYS[1], group, entry)
  redis.call("XDEL", KEYS[1], entry)
end

for i = 5, #ARGV, 2 do
  local entry, id = ARGV[i], ARGV[i + 1]
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
