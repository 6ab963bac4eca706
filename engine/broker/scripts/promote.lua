--[[
  Move delayed jobs that are due back to their stream, in one batch. Safe with many
  promoters: a job is moved by whichever call removes it from the set first.

  KEYS[1] delayed zset  KEYS[2] stream (of the default priority: a job of another goes to
  its lane's stream, engine.core.priority)
  ARGV[1] job key prefix  ARGV[2] now (ms)  ARGV[3] batch size

  Returns {number moved, due time (ms) of the next delayed job or -1}.
]]
local function laneStream(pr)
  return (pr and string.match(pr, "^[0-46-9]$")) and (KEYS[2] .. ":" .. pr) or KEYS[2]
end
local jobPrefix, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, limit)
local moved = 0
for _, id in ipairs(due) do
  redis.call("ZREM", KEYS[1], id)
  local jobKey = jobPrefix .. id
  local h = redis.call("HMGET", jobKey, "status", "pr")
  if h[1] == "delayed" then
    local msg = redis.call("XADD", laneStream(h[2]), "*", "j", id)
    redis.call("HSET", jobKey, "status", "waiting", "msg", msg)
    redis.call("HDEL", jobKey, "due")
    moved = moved + 1
  end
end
local nextDue = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
if nextDue[2] then return {moved, tonumber(nextDue[2])} end
return {moved, -1}
