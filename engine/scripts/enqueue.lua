--[[
  Enqueue a batch of jobs into one queue: write each job's hash and either add its stream
  entry (due now) or put it in the delayed set (due later), atomically.

  KEYS[1] stream        KEYS[2] delayed zset     KEYS[3] stats hash     KEYS[4] outbox stream
  KEYS[5] job-log flag (exists while a shipper drains the outbox)
  KEYS[6] cron leader lock  KEYS[7] cron last-fired zset (both used only by a fenced call)
  ARGV[1] job key prefix  ARGV[2] idempotency key prefix  ARGV[3] now (ms, the producer's clock: compared with due times)
  ARGV[4] promoter wake-up channel  ARGV[5] queue name
  ARGV[6] fencing token ("" = none)  ARGV[7] schedule name  ARGV[8] tick (ms)
  ARGV[9] number of jobs  then 9 values per job:
          id, task, payload (JSON), due (ms, 0 = now), timeout (s or ""),
          max_attempts (or ""), idempotency key (or ""), idempotency ttl (ms), tick (ms or "")

  Returns a flat array: for each job, its id (the first job's id when the idempotency key
  was already taken, or when a job with that id exists) and 1 if it was added, 0 if not.

  A fenced call (cron) first checks that the caller still holds the leader lock and that
  the tick is newer than the schedule's last fired one (ZADD GT CH): it returns {"!fenced"}
  or {"!fired"} and writes nothing otherwise. So a deposed leader cannot enqueue, and no
  tick fires twice whoever leads.
]]
if ARGV[6] ~= "" then
  if redis.call("GET", KEYS[6]) ~= ARGV[6] then return {"!fenced"} end
  if redis.call("ZADD", KEYS[7], "GT", "CH", ARGV[8], ARGV[7]) == 0 then return {"!fired"} end
end
-- Timestamps come from the Redis server's clock, one clock for every machine, so a job's
-- created, started and finished times are ordered as Redis executed those steps.
local clock = redis.call("TIME")
local created = string.format("%.0f", clock[1] * 1000 + math.floor(clock[2] / 1000))
local jobPrefix, idemPrefix, now, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[9])
local queue, outbox = ARGV[5], redis.call("EXISTS", KEYS[5]) == 1
local out = {}
local added = 0
local delayed = false
for i = 0, n - 1 do
  local b = 10 + i * 9
  local id, task, payload, due = ARGV[b], ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
  local timeout, maxAttempts = ARGV[b + 4], ARGV[b + 5]
  local idem, idemTtl, tick = ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local existing = false
  if idem ~= "" then
    existing = redis.call("GET", idemPrefix .. idem)
    if not existing then
      redis.call("SET", idemPrefix .. idem, id, "PX", idemTtl)
    end
  end
  if not existing and redis.call("EXISTS", jobPrefix .. id) == 1 then
    existing = id
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    local jobKey = jobPrefix .. id
    redis.call("HSET", jobKey, "task", task, "payload", payload, "created", created, "attempts", 0)
    if timeout ~= "" then redis.call("HSET", jobKey, "timeout", timeout) end
    if maxAttempts ~= "" then redis.call("HSET", jobKey, "max_attempts", maxAttempts) end
    if tick ~= "" then redis.call("HSET", jobKey, "tick", tick) end
    local status = "waiting"
    if due > tonumber(now) then
      status = "delayed"
      redis.call("HSET", jobKey, "status", "delayed", "due", due)
      redis.call("ZADD", KEYS[2], due, id)
      delayed = true
    else
      local msg = redis.call("XADD", KEYS[1], "*", "j", id)
      redis.call("HSET", jobKey, "status", "waiting", "msg", msg)
    end
    if outbox then
      local v = redis.call("HINCRBY", jobKey, "v", 1)
      redis.call("XADD", KEYS[4], "*", "e", "enqueued", "j", id, "q", queue, "task", task, "t", now,
        "v", v, "payload", payload, "status", status, "created", created)
    end
    out[#out + 1] = id
    out[#out + 1] = 1
    added = added + 1
  end
end
if added > 0 then redis.call("HINCRBY", KEYS[3], "enqueued", added) end
if delayed then redis.call("PUBLISH", ARGV[4], KEYS[2]) end
return out
