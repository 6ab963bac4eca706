--[[
  Which of a queue's jobs have had a state event newer than a given version, for the
  shipper: an enqueued event of a job that has had a newer one need not be written (see
  engine/history/shipper.py).

  KEYS[1] the queue's outbox stream (names the slot)
  KEYS[2] the queue's index of waiting jobs (QueueKeys.waiting): a fresh job there has no hash,
          and is at version 1 (enqueue.lua)
  ARGV[1] job key prefix  ARGV[2..] pairs: job id, version of its event

  Returns one code per job, in order: 1 it has moved on (its "v" is newer), 0 not yet,
  -1 its hash is gone.
]]
local out = {}
for i = 2, #ARGV, 2 do
  local v = redis.call("HGET", ARGV[1] .. ARGV[i], "v")
  if not v and redis.call("HEXISTS", KEYS[2], ARGV[i]) == 1 then v = "1" end
  if not v then
    out[#out + 1] = -1
  elseif tonumber(v) > tonumber(ARGV[i + 1]) then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
