--[[
  Renew the leases of a worker's in-flight entries: reset their idle time so no other
  worker reclaims them while this one is alive. An entry another worker has already
  reclaimed (or that is no longer pending) is left alone and reported as lost.

  KEYS[1] stream
  ARGV[1] group  ARGV[2] this worker's consumer name  ARGV[3..] entry ids

  Returns the entry ids whose lease was lost.
]]
local group, me = ARGV[1], ARGV[2]
local lost = {}
for i = 3, #ARGV do
  local entry = ARGV[i]
  local p = redis.call("XPENDING", KEYS[1], group, entry, entry, 1)
  if p[1] and p[1][2] == me then
    redis.call("XCLAIM", KEYS[1], group, me, 0, entry, "JUSTID")
  else
    lost[#lost + 1] = entry
  end
end
return lost
