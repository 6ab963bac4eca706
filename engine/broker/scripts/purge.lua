--[[
  Delete dead letters and the data of their failed jobs (hash and log lines), oldest first,
  in batches. A job replayed since it was dead-lettered is left alone. While the job log is
  on, the jobs' history in PostgreSQL goes too: one outbox entry of "deleted" events per
  call (see delete.lua), counted as the other batched entries are (see enqueue.lua).

  KEYS[1] dlq stream  KEYS[2] outbox stream  KEYS[3] job-log flag
  KEYS[4] the outbox's count of events beyond one per entry (see engine/history/shipper.py)
  ARGV[1] job key prefix  ARGV[2] batch size  ARGV[3] queue name

  KEYS[2..4] and ARGV[3] may be left out: the jobs are then deleted from Redis only.

  Returns the number of dead letters removed (0 when the stream is empty).
]]
local entries = redis.call("XRANGE", KEYS[1], "-", "+", "COUNT", ARGV[2])
local outbox = KEYS[3] ~= nil and redis.call("EXISTS", KEYS[3]) == 1
local events = {}
for _, e in ipairs(entries) do
  local fields, id = e[2], nil
  for j = 1, #fields, 2 do
    if fields[j] == "j" then id = fields[j + 1] end
  end
  if id and id ~= "" then
    local jobKey = ARGV[1] .. id
    local status = redis.call("HGET", jobKey, "status")
    if status == "failed" then
      redis.call("DEL", jobKey, jobKey .. ":logs")
    end
    -- A hash that is gone expired (a failed retention) or never was (a poison entry): the
    -- history may still hold the job, and it is dead-lettered, so it goes as well.
    if outbox and (status == "failed" or not status) then
      events[#events + 1] = {e = "deleted", j = id}
    end
  end
  redis.call("XDEL", KEYS[1], e[1])
end
if #events > 0 then
  local clock = redis.call("TIME")
  local now = string.format("%.0f", clock[1] * 1000 + math.floor(clock[2] / 1000))
  redis.call("XADD", KEYS[2], "*", "q", ARGV[3], "t", now, "n", #events, "b", cjson.encode(events))
  if #events > 1 then redis.call("INCRBY", KEYS[4], #events - 1) end
end
return #entries
