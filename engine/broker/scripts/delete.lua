--[[
  Delete a job that is not running: its hash, log lines, stream entry, delayed entry and
  dead letter, and, while the job log is on, its history in PostgreSQL: a "deleted" event
  in the outbox has the shipper delete the job's rows (see engine/history/store.py, JobLog.write).

  KEYS[1] stream (of the default priority; a job of another is in its lane's)  KEYS[2] delayed zset  KEYS[3] dlq stream  KEYS[4] outbox stream
  KEYS[5] job-log flag (exists while a shipper drains the outbox)
  ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] queue name

  KEYS[4], KEYS[5] and ARGV[3] may be left out: the job is then deleted from Redis only.

  Returns (engine.core.errors.ScriptCode) 1 DONE: deleted, -2 JOB_RUNNING: refused (cancel
  it first), -1 NO_SUCH_JOB.
]]
local jobKey = ARGV[1] .. ARGV[2]
-- The job's lane (engine.core.priority): its priority's stream, KEYS[1] for the default.
local function laneStream(pr)
  return (pr and string.match(pr, "^[0-46-9]$")) and (KEYS[1] .. ":" .. pr) or KEYS[1]
end
local h = redis.call("HMGET", jobKey, "status", "msg", "dlq", "pr")
if not h[1] then return -1 end  -- NO_SUCH_JOB
if h[1] == "active" then return -2 end  -- JOB_RUNNING
if h[2] then redis.call("XDEL", laneStream(h[4]), h[2]) end
if h[3] then redis.call("XDEL", KEYS[3], h[3]) end
redis.call("ZREM", KEYS[2], ARGV[2])
redis.call("DEL", jobKey, jobKey .. ":logs")
if KEYS[5] and redis.call("EXISTS", KEYS[5]) == 1 then
  -- Server time, as the other scripts' events. The entry's place in the outbox, after every
  -- event the job has had, is what makes the deletion win over those shipped after it.
  local clock = redis.call("TIME")
  local now = string.format("%.0f", clock[1] * 1000 + math.floor(clock[2] / 1000))
  redis.call("XADD", KEYS[4], "*", "e", "deleted", "j", ARGV[2], "q", ARGV[3], "t", now)
end
return 1
