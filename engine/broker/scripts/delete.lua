--[[
  Delete a job that is not running: its hash, log lines, stream entry, delayed entry and
  dead letter, and, while the job log is on, its history in PostgreSQL: a "deleted" event
  in the outbox has the shipper delete the job's rows (see engine/history/store.py, JobLog.write).

  KEYS[1] stream (of the default priority; a job of another is in its lane's)  KEYS[2] delayed zset  KEYS[3] dlq stream
  KEYS[4] the queue's index of waiting jobs (QueueKeys.waiting: a fresh job has no hash)
  KEYS[5] outbox stream  KEYS[6] job-log flag (exists while a shipper drains the outbox)
  ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] queue name

  KEYS[5], KEYS[6] and ARGV[3] may be left out: the job is then deleted from Redis only.

  Returns (engine.core.errors.ScriptCode) 1 DONE: deleted, -2 JOB_RUNNING: refused (cancel
  it first), -1 NO_SUCH_JOB.
]]
local jobKey = ARGV[1] .. ARGV[2]
-- The job's lane (engine.core.priority): its priority's stream, KEYS[1] for the default.
local function laneStream(pr)
  return (pr and string.match(pr, "^[0-46-9]$")) and (KEYS[1] .. ":" .. pr) or KEYS[1]
end
local h = redis.call("HMGET", jobKey, "status", "msg", "dlq", "pr")
if not h[1] then
  -- A fresh job: its index field holds its entry id, and its lane's priority after a space.
  local indexed = redis.call("HGET", KEYS[4], ARGV[2])
  if not indexed then return -1 end  -- NO_SUCH_JOB
  redis.call("HDEL", KEYS[4], ARGV[2])
  local msg, pr = string.match(indexed, "^(%S+) ?(%S*)$")
  h = {"waiting", msg, false, pr ~= "" and pr or false}
end
if h[1] == "active" then return -2 end  -- JOB_RUNNING
if h[2] then
  local stream = laneStream(h[4])
  -- A finished job's entry may still linger (finish.lua's tidy): one fewer to count.
  if redis.call("XDEL", stream, h[2]) == 1 and h[1] ~= "waiting" and (tonumber(redis.call("GET", stream .. ":acked")) or 0) > 0 then
    redis.call("DECR", stream .. ":acked")
  end
end
if h[3] then redis.call("XDEL", KEYS[3], h[3]) end
redis.call("ZREM", KEYS[2], ARGV[2])
redis.call("DEL", jobKey, jobKey .. ":logs")
if KEYS[6] and redis.call("EXISTS", KEYS[6]) == 1 then
  -- Server time, as the other scripts' events. The entry's place in the outbox, after every
  -- event the job has had, is what makes the deletion win over those shipped after it.
  local clock = redis.call("TIME")
  local now = string.format("%.0f", clock[1] * 1000 + math.floor(clock[2] / 1000))
  redis.call("XADD", KEYS[5], "*", "e", "deleted", "j", ARGV[2], "q", ARGV[3], "t", now)
end
return 1
