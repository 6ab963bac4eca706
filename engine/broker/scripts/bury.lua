--[[
  The last resort for an entry whose start or outcome could not be recorded (start.lua or
  finish.lua failed on it alone: data no check foresaw): acknowledge it and leave a dead
  letter with the reason, touching the job's hash only through pcall. So the worker goes on
  and the entry does not come back to fail every worker in turn.

  KEYS[1] stream  KEYS[2] dlq stream  KEYS[3] stats hash
  KEYS[4] the queue's index of waiting jobs (QueueKeys.waiting; a fresh job leaves it here)
  ARGV[1] job key prefix  ARGV[2] group  ARGV[3] entry id  ARGV[4] job id  ARGV[5] reason

  Returns (engine.core.errors.ScriptCode) 1 DONE: buried, -8 NOT_PENDING: the entry was
  no longer pending (another worker recorded it).
]]
local clock = redis.call("TIME")
local now = string.format("%.0f", clock[1] * 1000 + math.floor(clock[2] / 1000))
local entry, id, reason = ARGV[3], ARGV[4], ARGV[5]
if redis.call("XACK", KEYS[1], ARGV[2], entry) == 0 then return -8 end  -- NOT_PENDING
redis.call("XDEL", KEYS[1], entry)
local dead = redis.call("XADD", KEYS[2], "*", "j", id, "entry", entry, "error", reason, "at", now)
redis.call("HINCRBY", KEYS[3], "failed", 1)
if id ~= "" then
  redis.pcall("HDEL", KEYS[4], id)
  redis.pcall("HSET", ARGV[1] .. id, "status", "failed", "error", reason, "finished", now,
    "dlq", dead)
end
return 1
