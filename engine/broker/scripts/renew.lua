--[[
  Renew the leases of a worker's in-flight entries: reset their idle time so no other
  worker reclaims them while this one is alive, and move the deadline of the concurrency
  slots they hold (engine.core.flow) with them. An entry another worker has reclaimed is
  left alone and reported as lost. One no longer pending at all is skipped silently: it was
  acknowledged with its outcome, most often by this worker's own finish call racing this
  one (which must not read as a lost lease).

  KEYS[1] stream  KEYS[2] concurrency slots zset (none for the job-log outboxes)
  ARGV[1] group  ARGV[2] this worker's consumer name  ARGV[3] lease (ms)  ARGV[4..] entry ids

  Returns the entry ids whose lease was lost.
]]
local group, me = ARGV[1], ARGV[2]
local slots = KEYS[2] ~= nil and redis.call("EXISTS", KEYS[2]) == 1
-- Entries holding a slot of their concurrency key: entry -> key (see start.lua).
local keyed = KEYS[2] ~= nil and redis.call("EXISTS", KEYS[2] .. ":keys") == 1
local deadline = nil
if slots or keyed then
  local clock = redis.call("TIME")
  deadline = clock[1] * 1000 + math.floor(clock[2] / 1000) + tonumber(ARGV[3])
end
local lost = {}
for i = 4, #ARGV do
  local entry = ARGV[i]
  local p = redis.call("XPENDING", KEYS[1], group, entry, entry, 1)
  if p[1] and p[1][2] == me then
    redis.call("XCLAIM", KEYS[1], group, me, 0, entry, "JUSTID")
    if slots then redis.call("ZADD", KEYS[2], "XX", deadline, entry) end
    if keyed then
      local key = redis.call("HGET", KEYS[2] .. ":keys", entry)
      if key then redis.call("ZADD", KEYS[2] .. ":" .. key, "XX", deadline, entry) end
    end
  elseif p[1] then
    lost[#lost + 1] = entry
  end
end
return lost
