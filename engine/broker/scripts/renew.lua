--[[
  Renew the leases of a worker's in-flight entries: reset their idle time so no other
  worker reclaims them while this one is alive. An entry another worker has reclaimed is
  left alone and reported as lost. One no longer pending at all is skipped silently: it was
  acknowledged with its outcome, most often by this worker's own finish call racing this
  one (which must not read as a lost lease).

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
  elseif p[1] then
    lost[#lost + 1] = entry
  end
end
return lost
