--[[
  Append a log line to a job (ctx.log): kept beside the job in Redis (the newest
  ARGV[6] lines) and, while a shipper drains the outbox, sent on to job_logs.

  KEYS[1] the job's log list  KEYS[2] outbox stream  KEYS[3] job-log flag
  KEYS[4] the running jobs with log lines (QueueKeys.logged: a week's TTL, renewed, so that
          a member no outcome came for goes in the end)
  ARGV[1] job id  ARGV[2] queue name  ARGV[3] now (ms)  ARGV[4] level  ARGV[5] message
  ARGV[6] lines kept in Redis  ARGV[7] the line as JSON (for the Redis list)
]]
redis.call("RPUSH", KEYS[1], ARGV[7])
redis.call("LTRIM", KEYS[1], -tonumber(ARGV[6]), -1)
-- Tell finish.lua the job has log lines to expire with it (the list is the job key + ":logs").
local jobKey = string.sub(KEYS[1], 1, -6)
if redis.pcall("HGET", jobKey, "status") == "active" then
  redis.call("SADD", KEYS[4], ARGV[1])
  redis.call("PEXPIRE", KEYS[4], 7 * 24 * 3600 * 1000)
else
  -- Logged once it had ended (work the task left running): the lines go when the job goes.
  local ttl = redis.call("PTTL", jobKey)
  if ttl > 0 then redis.call("PEXPIRE", KEYS[1], ttl) end
end
if redis.call("EXISTS", KEYS[3]) == 1 then
  redis.call("XADD", KEYS[2], "*", "e", "log", "j", ARGV[1], "q", ARGV[2], "t", ARGV[3],
    "level", ARGV[4], "message", ARGV[5])
end
return 1
