--[[
  Enqueue a batch of jobs of one task into one queue, atomically: a job due now is its
  stream entry (which holds everything a worker needs to run it) and one field in the
  queue's index of waiting jobs (KEYS[11], job id -> entry id): it gets a hash of its own
  when it starts (start.lua), or is cancelled. A job due later gets its hash (which holds the
  payload) and a place in the delayed set. The jobs of a batch share their task and options,
  so only (id, payload) repeats per job.

  KEYS[1] stream        KEYS[2] delayed zset     KEYS[3] stats hash     KEYS[4] outbox stream
  KEYS[5] job-log flag (exists while a shipper drains the outbox)
  KEYS[6] cron leader lock  KEYS[7] cron last-fired zset (both used only by a fenced call)
  KEYS[8] the outbox's count of events beyond one per entry (see engine/history/shipper.py)
  KEYS[9] the queue's flow hash (engine.core.flow): while it exists, entries are marked "g"
  KEYS[10] the queue's lanes set (engine.core.priority); KEYS[1] is then the stream of the
           jobs' priority (their lane)
  KEYS[11] the queue's index of waiting jobs (QueueKeys.waiting)
  ARGV[1] job key prefix  ARGV[2] idempotency key prefix
  ARGV[3] now (ms, the producer's clock, compared with the due time)
  ARGV[4] promoter wake-up channel  ARGV[5] queue name
  ARGV[6] fencing token ("" = none)  ARGV[7] schedule name  ARGV[8] tick being fired (ms)
  ARGV[9] task  ARGV[10] due (ms, 0 = now)  ARGV[11] timeout (s or "")
  ARGV[12] max_attempts (or "")  ARGV[13] idempotency key (or "")
  ARGV[14] idempotency ttl (ms)  ARGV[15] tick of a cron job (ms or "")
  ARGV[16] "1": publish with SPUBLISH (sharded pub/sub, Redis >= 7.0), "0": PUBLISH
  ARGV[17] priority ("" for the default, whose lane is the queue's own stream)
  ARGV[18] expiry (ms since the epoch, or ""): not started by then, the job is not run
  ARGV[19] the workers' consumer group (created on a lane's first use)
  ARGV[20] concurrency key (or "")
  ARGV[21] the jobs: one MessagePack array of job id, payload (JSON), job id, payload...
  ARGV[22] "1": look for an existing job of each id (a caller's job id); "0": the ids were
           just made by the producer (random), no job can have one

  Returns a flat array: for each job, its id (the first job's id when the idempotency key
  was already taken, or when a job with that id exists) and 1 if it was added, 0 if not.

  A fenced call (cron) first checks that the caller still holds the leader lock and that
  the tick is newer than the schedule's last fired one (ZADD GT CH): it returns the code
  (engine.core.errors.ScriptCode) -5 FENCED or -6 FIRED, a number instead of the array,
  and writes nothing otherwise. So a deposed leader cannot enqueue, and no tick fires twice
  whoever leads.
]]
if ARGV[6] ~= "" then
  if redis.call("GET", KEYS[6]) ~= ARGV[6] then return -5 end  -- FENCED
  if redis.call("ZADD", KEYS[7], "GT", "CH", ARGV[8], ARGV[7]) == 0 then return -6 end  -- FIRED
end
-- Timestamps come from the Redis server's clock, one clock for every machine, so a job's
-- created, started and finished times are ordered as Redis executed those steps.
local clock = redis.call("TIME")
local created = string.format("%.0f", clock[1] * 1000 + math.floor(clock[2] / 1000))
local jobPrefix, idemPrefix, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local queue, outbox = ARGV[5], redis.call("EXISTS", KEYS[5]) == 1
local task, due, timeout, maxAttempts = ARGV[9], tonumber(ARGV[10]), ARGV[11], ARGV[12]
local idem, idemTtl, tick = ARGV[13], ARGV[14], ARGV[15]
local priority, expires = ARGV[17], ARGV[18]
local publish = ARGV[16] == "1" and "SPUBLISH" or "PUBLISH"
local status = due > now and "delayed" or "waiting"
-- A delayed job's hash: the fields every job of the batch shares, then its own (payload,
-- version). A job due now has none (see the entry below).
local shared, nShared = nil, 0
if status == "delayed" then
  shared = {"task", task, "created", created, "attempts", 0, "status", status, "due", ARGV[10]}
  if timeout ~= "" then shared[#shared + 1] = "timeout"; shared[#shared + 1] = timeout end
  if maxAttempts ~= "" then shared[#shared + 1] = "max_attempts"; shared[#shared + 1] = maxAttempts end
  if tick ~= "" then shared[#shared + 1] = "tick"; shared[#shared + 1] = tick end
  if priority ~= "" then shared[#shared + 1] = "pr"; shared[#shared + 1] = priority end
  if expires ~= "" then shared[#shared + 1] = "exp"; shared[#shared + 1] = expires end
  if ARGV[20] ~= "" then shared[#shared + 1] = "ck"; shared[#shared + 1] = ARGV[20] end
  nShared = #shared
end
-- A waiting job's stream entry: j id, t task, p payload, then the per-job overrides (o
-- timeout, m max_attempts, k tick, x expiry, c concurrency key, r priority): what its hash
-- would hold, the creation time being the entry id's.
local entry = {"j", "", "t", task, "p", ""}
if timeout ~= "" then entry[#entry + 1] = "o"; entry[#entry + 1] = timeout end
if maxAttempts ~= "" then entry[#entry + 1] = "m"; entry[#entry + 1] = maxAttempts end
if tick ~= "" then entry[#entry + 1] = "k"; entry[#entry + 1] = tick end
if ARGV[20] ~= "" then entry[#entry + 1] = "c"; entry[#entry + 1] = ARGV[20] end
if priority ~= "" then entry[#entry + 1] = "r"; entry[#entry + 1] = priority end
-- The index's value: the entry id, and the lane's priority outside the default lane.
local lane = priority ~= "" and (" " .. priority) or ""
-- An expiring job goes through start.lua (which drops it once expired), never straight
-- from its entry.
if expires ~= "" then entry[#entry + 1] = "x"; entry[#entry + 1] = expires end
-- Paused or limited: no worker may run the job before start.lua has let it start.
if redis.call("EXISTS", KEYS[9]) == 1 then entry[#entry + 1] = "g"; entry[#entry + 1] = "1" end
local out = {}
local added = 0
-- The job-log events of the batch: one outbox entry for all of them (see finish.lua).
local events = {}
-- A lane's first job: its stream and group come to be, and workers hear of it.
if priority ~= "" and redis.call("SADD", KEYS[10], priority) == 1 then
  redis.pcall("XGROUP", "CREATE", KEYS[1], ARGV[19], "0", "MKSTREAM")
  redis.call(publish, ARGV[4], "lanes")
end
local jobs, checkIds = cmsgpack.unpack(ARGV[21]), ARGV[22] == "1"
-- The index's new fields (job id, its value), written with one HSET at the end rather than
-- one per job; ``indexed``: the ids among them, for a caller's id given twice in the batch.
local index, nIndex, indexed = {}, 0, {}
for b = 1, #jobs, 2 do
  local id, payload = jobs[b], jobs[b + 1]
  local jobKey = jobPrefix .. id
  local existing = false
  if idem ~= "" then
    existing = redis.call("GET", idemPrefix .. idem)
    if not existing then
      redis.call("SET", idemPrefix .. idem, id, "PX", idemTtl)
    end
  end
  if not existing and checkIds
      and (indexed[id] or redis.call("EXISTS", jobKey) == 1 or redis.call("HEXISTS", KEYS[11], id) == 1) then
    existing = id
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    if status == "delayed" then
      redis.call("ZADD", KEYS[2], due, id)
      shared[nShared + 1] = "payload"
      shared[nShared + 2] = payload
      if outbox then shared[nShared + 3] = "v"; shared[nShared + 4] = "1" end
      redis.call("HSET", jobKey, unpack(shared))
    else
      -- The entry carries what a worker needs to run the job, so an idle worker starts it
      -- straight from XREADGROUP.
      entry[2], entry[6] = id, payload
      nIndex = nIndex + 2
      index[nIndex - 1], index[nIndex] = id, redis.call("XADD", KEYS[1], "*", unpack(entry)) .. lane
      if checkIds then indexed[id] = true end
    end
    if outbox then
      -- Version 1: the job's first state (start.lua and cancel.lua count on from it).
      events[#events + 1] = {e = "enqueued", j = id, task = task, payload = payload,
        v = "1", status = status, created = created}
    end
    out[#out + 1] = id
    out[#out + 1] = 1
    added = added + 1
  end
end
for first = 1, nIndex, 1000 do
  redis.call("HSET", KEYS[11], unpack(index, first, math.min(first + 999, nIndex)))
end
if #events > 0 then
  redis.call("XADD", KEYS[4], "*", "q", queue, "t", ARGV[3], "n", #events, "b", cjson.encode(events))
  if #events > 1 then redis.call("INCRBY", KEYS[8], #events - 1) end
end
if added > 0 then redis.call("HINCRBY", KEYS[3], "enqueued", added) end
if added > 0 and status == "delayed" then
  redis.call(publish, ARGV[4], KEYS[2])
end
return out
