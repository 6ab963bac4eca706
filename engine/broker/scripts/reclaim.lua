--[[
  Take over entries whose lease lapsed (their worker died or hung): XAUTOCLAIM entries idle
  for longer than the visibility timeout, up to the number this worker can start now.
  Entries deleted while pending (a waiting job cancelled after delivery) are dropped from
  the pending list by XAUTOCLAIM itself.

  KEYS[1] stream  KEYS[2] stats hash
  ARGV[1] group  ARGV[2] consumer  ARGV[3] min idle (ms)  ARGV[4] count

  Returns a flat array: entry id, job id ("" when the entry has no job id field), times
  the entry has been delivered (this claim included), ...
  A delivery count above one means the entry's earlier holders died (or stalled) running
  it: the worker dead-letters a job that has killed too many (engine.limits).
]]
local claimed = redis.call("XAUTOCLAIM", KEYS[1], ARGV[1], ARGV[2], ARGV[3], "0-0",
  "COUNT", ARGV[4])
local out = {}
for _, e in ipairs(claimed[2]) do
  local id = ""
  local fields = e[2]
  if type(fields) == "table" then
    for j = 1, #fields, 2 do
      if fields[j] == "j" then id = fields[j + 1] end
    end
  end
  local pending = redis.call("XPENDING", KEYS[1], ARGV[1], e[1], e[1], 1)[1]
  out[#out + 1] = e[1]
  out[#out + 1] = id
  out[#out + 1] = pending and pending[4] or 1
end
if #claimed[2] > 0 then redis.call("HINCRBY", KEYS[2], "reclaimed", #claimed[2]) end
return out
