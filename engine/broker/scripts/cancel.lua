--[[
  Cancel a job that has not finished.

  KEYS[1] stream (of the default priority; a job of another is in its lane's)  KEYS[2] delayed zset  KEYS[3] stats hash  KEYS[4] outbox stream
  KEYS[5] job-log flag  KEYS[6] the queue's index of waiting jobs (QueueKeys.waiting)
  KEYS[7] the running jobs asked to stop (QueueKeys.cancels; a week's TTL, renewed, so that
          a member no outcome came for goes in the end)
  ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] now (ms)  ARGV[4] retention (ms, 0 = keep)
  ARGV[5] notification channel prefix  ARGV[6] cancel-request channel
  ARGV[7] queue name
  ARGV[8] "1": publish with SPUBLISH (sharded pub/sub, Redis >= 7.0), "0": PUBLISH

  Returns (engine.core.errors.ScriptCode) 1 DONE: cancelled, 2 CANCEL_REQUESTED: the job
  is running and its worker stops it, -4 ALREADY_FINISHED, -1 NO_SUCH_JOB.
]]
local jobKey = ARGV[1] .. ARGV[2]
local publish = ARGV[8] == "1" and "SPUBLISH" or "PUBLISH"
local status = redis.call("HGET", jobKey, "status")
if not status then
  -- A fresh job (enqueue.lua): it gets the hash it would have had, from its entry, and is
  -- cancelled as any waiting job. Version 1 was its enqueued event's.
  local indexed = redis.call("HGET", KEYS[6], ARGV[2])
  if not indexed then return -1 end  -- NO_SUCH_JOB
  redis.call("HDEL", KEYS[6], ARGV[2])
  local msg, pr = string.match(indexed, "^(%S+) ?(%S*)$")
  local fields = {"status", "waiting", "attempts", "0", "v", "1", "msg", msg,
    "created", string.match(msg, "^%d+") or ""}
  if pr ~= "" then fields[#fields + 1] = "pr"; fields[#fields + 1] = pr end
  local e = redis.call("XRANGE", pr ~= "" and (KEYS[1] .. ":" .. pr) or KEYS[1], msg, msg)[1]
  local names = {t = "task", p = "payload", o = "timeout", m = "max_attempts", k = "tick", x = "exp", c = "ck"}
  for j = 1, #(e and e[2] or {}), 2 do
    local name = names[e[2][j]]
    if name then fields[#fields + 1] = name; fields[#fields + 1] = e[2][j + 1] end
  end
  redis.call("HSET", jobKey, unpack(fields))
  status = "waiting"
end
if status == "completed" or status == "failed" or status == "cancelled" then return -4 end  -- ALREADY_FINISHED
if status == "active" then
  redis.call("HSET", jobKey, "status", "cancelled")
  redis.call("SADD", KEYS[7], ARGV[2])
  redis.call("PEXPIRE", KEYS[7], 7 * 24 * 3600 * 1000)
  redis.call(publish, ARGV[6], ARGV[2])
  return 2  -- CANCEL_REQUESTED
end
if status == "delayed" then redis.call("ZREM", KEYS[2], ARGV[2]) end
-- The job's lane (engine.core.priority): its priority's stream, KEYS[1] for the default.
local function laneStream(pr)
  return (pr and string.match(pr, "^[0-46-9]$")) and (KEYS[1] .. ":" .. pr) or KEYS[1]
end
local h = redis.call("HMGET", jobKey, "msg", "pr")
local msg, stream = h[1], laneStream(h[2])
-- Deleting the entry keeps it from ever being delivered; if a worker read it already, its
-- start script sees the status and drops it.
if status == "waiting" and msg then
  -- A fresh job's payload lives in its entry until it starts: keep it for the record.
  local e = redis.call("XRANGE", stream, msg, msg)[1]
  if e and redis.call("HEXISTS", jobKey, "payload") == 0 then
    for j = 1, #e[2], 2 do
      if e[2][j] == "p" then redis.call("HSET", jobKey, "payload", e[2][j + 1]) end
    end
  end
  redis.call("XDEL", stream, msg)
end
redis.call("HSET", jobKey, "status", "cancelled", "finished", ARGV[3])
redis.call("HDEL", jobKey, "msg", "due")
if tonumber(ARGV[4]) > 0 then
  redis.call("PEXPIRE", jobKey, ARGV[4])
  redis.call("PEXPIRE", jobKey .. ":logs", ARGV[4])
end
redis.call("HINCRBY", KEYS[3], "cancelled", 1)
if redis.call("EXISTS", KEYS[5]) == 1 then
  -- With the payload and creation time, as every state event after the enqueue (finish.lua).
  local job = redis.call("HMGET", jobKey, "task", "attempts", "payload", "created")
  local v = redis.call("HINCRBY", jobKey, "v", 1)
  redis.call("XADD", KEYS[4], "*", "e", "cancelled", "j", ARGV[2], "q", ARGV[7], "task", job[1] or "",
    "t", ARGV[3], "v", v, "attempts", job[2] or "0", "error", "", "finished", ARGV[3],
    "payload", job[3] or "", "created", job[4] or "")
end
redis.call(publish, ARGV[5] .. ARGV[2], "cancelled")
return 1
