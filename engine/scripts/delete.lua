--[[
  Delete a job that is not running: its hash, log lines, stream entry, delayed entry and
  dead letter.

  KEYS[1] stream  KEYS[2] delayed zset  KEYS[3] dlq stream
  ARGV[1] job key prefix  ARGV[2] job id

  Returns 1 deleted, 0 refused (the job is running: cancel it first), -1 no such job.
]]
local jobKey = ARGV[1] .. ARGV[2]
local h = redis.call("HMGET", jobKey, "status", "msg", "dlq")
if not h[1] then return -1 end
if h[1] == "active" then return 0 end
if h[2] then redis.call("XDEL", KEYS[1], h[2]) end
if h[3] then redis.call("XDEL", KEYS[3], h[3]) end
redis.call("ZREM", KEYS[2], ARGV[2])
redis.call("DEL", jobKey, jobKey .. ":logs")
return 1
