--[[
  Renew or release a lock held with a random token (the cron leader lock).

  KEYS[1] lock
  ARGV[1] token  ARGV[2] lease (ms) to renew for, or 0 to release

  Returns (engine.core.errors.ScriptCode) 1 DONE: the caller held the lock (renewed or
  released), -7 LOCK_NOT_HELD: it did not.
]]
if redis.call("GET", KEYS[1]) ~= ARGV[1] then return -7 end  -- LOCK_NOT_HELD
if tonumber(ARGV[2]) > 0 then
  redis.call("PEXPIRE", KEYS[1], ARGV[2])
else
  redis.call("DEL", KEYS[1])
end
return 1
