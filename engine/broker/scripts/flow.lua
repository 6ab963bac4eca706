--[[
  Change a queue's flow control (engine.core.flow): set or delete fields of its flow hash,
  and when something changed, tell its workers on the wake channel, so that those holding
  back (paused, throttled) look again at once.

  KEYS[1] flow hash
  ARGV[1] wake channel  ARGV[2] "1": SPUBLISH, "0": PUBLISH  ARGV[3] the notice
  ARGV[4..] pairs: field, value ("" deletes the field)

  Returns the previous values, in order ("" for a field that was not set).
]]
local before = {}
local changed = false
for i = 4, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  local old = redis.call("HGET", KEYS[1], field) or ""
  before[#before + 1] = old
  if old ~= value then
    changed = true
    if value == "" then
      redis.call("HDEL", KEYS[1], field)
    else
      redis.call("HSET", KEYS[1], field, value)
    end
  end
end
if changed then redis.call(ARGV[2] == "1" and "SPUBLISH" or "PUBLISH", ARGV[1], ARGV[3]) end
return before
