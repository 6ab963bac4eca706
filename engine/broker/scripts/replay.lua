--[[
  Replay a dead-lettered (failed) job: a fresh run with its attempts reset, same id.

  KEYS[1] stream (of the default priority; a job of another goes to its lane's)  KEYS[2] dlq stream  KEYS[3] stats hash  KEYS[4] outbox stream
  KEYS[5] job-log flag  KEYS[6] the queue's index of waiting jobs (QueueKeys.waiting)
  ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] now (ms)  ARGV[4] queue name

  Returns (engine.core.errors.ScriptCode) 1 DONE: replayed, -3 NOT_FAILED: nothing done,
  -1 NO_SUCH_JOB: its data is gone.
]]
-- The job's lane (engine.core.priority): its priority's stream, KEYS[1] for the default.
local function laneStream(pr)
  return (pr and string.match(pr, "^[0-46-9]$")) and (KEYS[1] .. ":" .. pr) or KEYS[1]
end
local jobKey = ARGV[1] .. ARGV[2]
local status = redis.call("HGET", jobKey, "status")
if not status and redis.call("HEXISTS", KEYS[6], ARGV[2]) == 1 then return -3 end  -- NOT_FAILED: fresh
if not status then return -1 end  -- NO_SUCH_JOB
if status ~= "failed" then return -3 end  -- NOT_FAILED
local dlqEntry = redis.call("HGET", jobKey, "dlq")
if dlqEntry then redis.call("XDEL", KEYS[2], dlqEntry) end
local msg = redis.call("XADD", laneStream(redis.call("HGET", jobKey, "pr")), "*", "j", ARGV[2])
redis.call("PERSIST", jobKey)
redis.call("HSET", jobKey, "status", "waiting", "attempts", 0, "msg", msg, "replayed", ARGV[3])
redis.call("HDEL", jobKey, "dlq", "finished", "result")
redis.call("HINCRBY", KEYS[3], "replayed", 1)
if redis.call("EXISTS", KEYS[5]) == 1 then
  -- With the payload and creation time, as every state event after the enqueue (finish.lua).
  local job = redis.call("HMGET", jobKey, "task", "payload", "created")
  local v = redis.call("HINCRBY", jobKey, "v", 1)
  redis.call("XADD", KEYS[4], "*", "e", "replayed", "j", ARGV[2], "q", ARGV[4], "task", job[1] or "",
    "t", ARGV[3], "v", v, "payload", job[2] or "", "created", job[3] or "")
end
return 1
