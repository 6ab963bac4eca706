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
-- finish.lua leaves acknowledged entries in the stream until whole nodes of them can go (its
-- tidy, which this mirrors): when nothing is pending and nothing waits, they all go at once
-- (whole nodes, no walk). Needed where an entry leaves the pending list other than
-- by an outcome: else the ones an outcome left would stay until the next job's.
-- The id of the entry the group last handed out; whether entry id a is after entry id b.
-- (finish.lua, bury.lua and start.lua each hold these: scripts share no code.)
local function lastDelivered(stream, group)
  for _, g in ipairs(redis.call("XINFO", "GROUPS", stream)) do
    local name, last = nil, nil
    for k = 1, #g, 2 do
      if g[k] == "name" then name = g[k + 1] elseif g[k] == "last-delivered-id" then last = g[k + 1] end
    end
    if name == group then return last end
  end
end
local function newer(a, b)
  local am, as = string.match(a, "^(%d+)-(%d+)$")
  local bm, bs = string.match(b, "^(%d+)-(%d+)$")
  if am ~= bm then return tonumber(am) > tonumber(bm) end
  return tonumber(as) > tonumber(bs)
end
local function clearIfIdle(stream, group)
  local countKey = stream .. ":acked"
  if redis.call("EXISTS", countKey) == 0 or redis.call("XPENDING", stream, group)[1] > 0 then return end
  local delivered = lastDelivered(stream, group)
  local newest = redis.call("XREVRANGE", stream, "+", "-", "COUNT", 1)[1]
  if not newest or (delivered and not newer(newest[1], delivered)) then
    redis.call("XTRIM", stream, "MAXLEN", 0)
    redis.call("DEL", countKey)
  end
end
local clock = redis.call("TIME")
local now = string.format("%.0f", clock[1] * 1000 + math.floor(clock[2] / 1000))
local entry, id, reason = ARGV[3], ARGV[4], ARGV[5]
if redis.call("XACK", KEYS[1], ARGV[2], entry) == 0 then return -8 end  -- NOT_PENDING
redis.call("XDEL", KEYS[1], entry)
clearIfIdle(KEYS[1], ARGV[2])
local dead = redis.call("XADD", KEYS[2], "*", "j", id, "entry", entry, "error", reason, "at", now)
redis.call("HINCRBY", KEYS[3], "failed", 1)
if id ~= "" then
  redis.pcall("HDEL", KEYS[4], id)
  redis.pcall("HSET", ARGV[1] .. id, "status", "failed", "error", reason, "finished", now,
    "dlq", dead)
end
return 1
