--[[
  Acknowledge and delete outbox entries the shipper has committed to PostgreSQL, and take
  the events they held beyond one per entry off the outbox's count of those, atomically.

  KEYS[1] outbox stream  KEYS[2] its count of events beyond one per entry (engine.keys.outbox_extra)
  ARGV[1] consumer group  ARGV[2..] pairs: entry id, events it holds beyond the first

  Only the entries this call deletes count, so acknowledging twice (a retry after a lost
  reply) takes nothing off twice. An empty outbox resets the count: whatever drift an
  outside XDEL or DEL caused ends there. Returns the number of entries acknowledged.
]]
local gone, acked, ids = 0, 0, {}
for i = 2, #ARGV, 2 do
  if redis.call("XDEL", KEYS[1], ARGV[i]) == 1 then gone = gone + tonumber(ARGV[i + 1]) end
  ids[#ids + 1] = ARGV[i]
  -- In chunks: unpack() of thousands of ids overflows Lua's stack.
  if #ids == 500 or i + 1 >= #ARGV then
    acked = acked + redis.call("XACK", KEYS[1], ARGV[1], unpack(ids))
    ids = {}
  end
end
if redis.call("XLEN", KEYS[1]) == 0 then
  redis.call("DEL", KEYS[2])
elseif gone > 0 and redis.call("DECRBY", KEYS[2], gone) <= 0 then
  redis.call("DEL", KEYS[2])
end
return acked
