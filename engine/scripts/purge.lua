--[[
  Delete dead letters and the data of their failed jobs (hash and log lines), oldest first,
  in batches. A job replayed since it was dead-lettered is left alone.

  KEYS[1] dlq stream
  ARGV[1] job key prefix  ARGV[2] batch size

  Returns the number of dead letters removed (0 when the stream is empty).
]]
local entries = redis.call("XRANGE", KEYS[1], "-", "+", "COUNT", ARGV[2])
for _, e in ipairs(entries) do
  local fields, id = e[2], nil
  for j = 1, #fields, 2 do
    if fields[j] == "j" then id = fields[j + 1] end
  end
  if id and id ~= "" then
    local jobKey = ARGV[1] .. id
    if redis.call("HGET", jobKey, "status") == "failed" then
      redis.call("DEL", jobKey, jobKey .. ":logs")
    end
  end
  redis.call("XDEL", KEYS[1], e[1])
end
return #entries
