--[[
  Mark a batch of entries as started: entries just read with a blocking XREADGROUP (or
  reclaimed), or, with ARGV[5] = "read", up to ARGV[6] new entries this script reads itself
  (XREADGROUP without BLOCK), so a busy worker fetches and starts jobs in one round trip.
  A fresh job (in the index of waiting jobs: enqueue.lua) has no hash yet: its entry holds
  its task, payload and options, and the hash this script writes when it starts it holds
  them all.

  An idle worker runs a fresh job from the entry it read before this script confirms it
  (see Worker._start_now): so it must not matter which of the two happens first. It does
  not for an entry marked "g" (enqueued while the queue had flow control), nor for a queue
  this script reported flow control for: those wait for this script.

  Flow control (engine.core.flow), from the flow hash: paused, concurrency (slots in the
  running zset, scored by lease deadline, expired ones dropped here), a rate (a GCRA:
  the rate key holds when the next start is due) and key concurrency (a job with a
  concurrency key, "ck" in its hash, takes a slot in the zset <running>:<key>, and the
  hash <running>:keys maps its entry to its key for renew.lua and finish.lua). Read mode
  reads no more entries than may start; given entries beyond that, and entries whose key
  is full, are held: left pending, untouched, code 3.

  KEYS[1] stream   KEYS[2] dlq stream   KEYS[3] flow hash   KEYS[4] running zset
  KEYS[5] rate key  KEYS[6] the queue's index of waiting jobs (QueueKeys.waiting)
  KEYS[7] job-log flag (exists while a shipper drains the outbox)
  KEYS[8..] in read mode, optional: the streams to read in turn (a queue's priority lanes,
            engine.core.priority, first to last) instead of KEYS[1]
  ARGV[1] job key prefix  ARGV[2] group  ARGV[3] lease (ms, a concurrency slot's life
  without renewal)  ARGV[4] worker id (consumer)
  ARGV[5..] per entry: entry id, job id ("" when the entry has no job id field), n, then
            n strings: the entry's fields and values as read (n = 0: not given, read here
            if need be); or "read", count

  Returns one flat array: for each entry a row, its length set by its code (the third
  value). {entry id, job id, 1, task, payload, attempts, timeout, max_attempts, tick,
  created, lane}: run it; {entry id, job id, 6, lane, task, payload, timeout, max_attempts,
  tick} (false when unset): run it, a fresh job read here (attempt 1, created when its entry
  was); 5 = run it, a fresh job whose
  fields were given ({entry id, job id, 5}: it runs as its entry says, attempt 1; its
  reader has all the rest), 0 = skipped (cancelled, or poison
  moved to the DLQ; the entry was acknowledged and deleted), 3 = held by flow control,
  4 = expired ({entry id, job id, 4, task, lane}: its expires= passed before it started;
  left pending, for the worker to record it cancelled with finish.lua); 0, 3 and 5 rows are
  {entry id, job id, code}. lane: the index
  in KEYS[8..] of the stream the entry was read from (0 when read from KEYS[1]). When the
  queue has flow control a last row {"", "", 2, reason, wait ms, allowance, key held}
  follows: reason "paused", "concurrency" or "rate" when that bound this call ("" when
  none did), wait ms until the rate allows the next start, allowance how many this call
  could start (-1: no bound), key held: how many entries it held because their key was full.

  No entry or job hash, whatever it holds, makes this script fail (its writes so far would
  stay, and the entries it read would be stuck pending): reads of a job's key that can fail
  on its type or contents go through redis.pcall, and such a job is dead-lettered here.
]]
-- Timestamps come from the Redis server's clock, one clock for every machine, so a job's
-- created, started and finished times are ordered as Redis executed those steps.
local clock = redis.call("TIME")
local nowMs = clock[1] * 1000 + math.floor(clock[2] / 1000)
local now = string.format("%.0f", nowMs)
local jobPrefix, group, worker = ARGV[1], ARGV[2], ARGV[4]
-- The reply is flat (rows one after another, each as long as its code says): no table per
-- row (malloc and Lua's GC were over a quarter of this script's CPU, in perf).
local out, nOut = {}, 0
local function emit(...)
  local row = {...}
  for k = 1, select("#", ...) do
    local value = row[k]
    if value == nil then value = false end
    nOut = nOut + 1
    out[nOut] = value
  end
end
local started = {}  -- entry ids started by this call's general path (every one when the
-- queue has flow control: only then is it counted, and no job takes the bulk path then)

-- Flow control: how many may start now (allowance, -1 = no bound) and what bounds it.
-- Read through pcall, and a field that is not a number ignored: no flow hash written by
-- hand may stop a queue's every start.
local flow = redis.pcall("HMGET", KEYS[3], "paused", "concurrency", "rate_interval", "rate_burst",
  "key_concurrency")
if flow.err then flow = {} end
local slots, interval, keySlots = tonumber(flow[2]), tonumber(flow[3]), tonumber(flow[5])
if interval and interval <= 0 then interval = nil end
local burst = tonumber(flow[4]) or 1
local gated = flow[1] or slots or interval or keySlots
local keyHeld = 0
local keyTaken = {}  -- key -> slots taken (counted once per call, then kept up to date)
local startedKeys = {}  -- entry -> its key, for the entries this call starts
-- Whether a job of concurrency key ``key`` may start now (its key's slots not all taken).
local function keyFree(key)
  local taken = keyTaken[key]
  if taken == nil then
    local zset = KEYS[4] .. ":" .. key
    redis.pcall("ZREMRANGEBYSCORE", zset, "-inf", nowMs)
    taken = redis.pcall("ZCARD", zset)
    if type(taken) ~= "number" then taken = 0 end
  end
  keyTaken[key] = taken
  return taken < keySlots
end
local allowance, reason, tat = -1, "", nil
local function bound(n, why)
  if allowance < 0 or n < allowance then allowance, reason = math.max(n, 0), why end
end
if flow[1] then bound(0, "paused") end
if slots then
  redis.pcall("ZREMRANGEBYSCORE", KEYS[4], "-inf", nowMs)
  local taken = redis.pcall("ZCARD", KEYS[4])
  bound(slots - (type(taken) == "number" and taken or 0), "concurrency")
end
if interval then
  local due = redis.pcall("GET", KEYS[5])
  tat = math.max(type(due) == "string" and tonumber(due) or 0, nowMs)
  bound(math.floor(burst - (tat - nowMs) / interval + 1e-9), "rate")
end

-- Streams an entry was dropped from (see clearIfIdle, at the end).
local dropped = {}
local function drop(stream, entry)
  redis.call("XACK", stream, group, entry)
  redis.call("XDEL", stream, entry)
  dropped[stream] = true
end

-- (entry id, job id, the entry's payload or false, stream, lane index, the entry's fields
-- or nil) per entry to start.
local todo = {}
local reading, readCount = ARGV[5] == "read", 0
-- Fresh jobs of a queue without flow control, read here or given with their fields, whose
-- entry holds all they need (enqueue.lua; no expiry to check): started in bulk below, one
-- index read and one delete for all of them, their hashes written without a table per job.
-- Parallel arrays: entry id, job id, the entry's fields, task, payload, stream, lane.
local fastEntry, fastId, fastFields, fastTask, fastPayload, nFast = {}, {}, {}, {}, {}, 0
local fastStream, fastLane = {}, {}
-- An entry to start, into the fast arrays or todo; ``givenId``: the job id it was given with
-- (nil when read here).
local function take(entry, givenId, fields, stream, lane)
  local id, payload, task, plain = "", false, false, not gated and fields ~= nil
  for j = 1, fields and #fields or 0, 2 do
    local name = fields[j]
    if name == "j" then id = fields[j + 1]
    elseif name == "p" then payload = fields[j + 1]
    elseif name == "t" then task = fields[j + 1]
    elseif name == "x" then plain = false end
  end
  if givenId then
    plain = plain and id == givenId
    id = givenId
  end
  if plain and id ~= "" and payload and task then
    nFast = nFast + 1
    fastEntry[nFast], fastId[nFast], fastFields[nFast] = entry, id, fields
    fastTask[nFast], fastPayload[nFast], fastStream[nFast], fastLane[nFast] = task, payload, stream, lane
  else
    todo[#todo + 1] = {entry, id, payload, stream, lane, fields}
  end
end
if reading then
  readCount = tonumber(ARGV[6])
  if allowance >= 0 and allowance < readCount then readCount = allowance end
  local first, last = 1, 1
  if #KEYS >= 8 then first, last = 8, #KEYS end
  for k = first, last do
    local want = readCount - #todo - nFast
    if want <= 0 then break end
    local reply = redis.call("XREADGROUP", "GROUP", group, worker, "COUNT", want, "STREAMS", KEYS[k], ">")
    if reply then
      for _, e in ipairs(reply[1][2]) do take(e[1], nil, e[2], KEYS[k], k == 1 and 0 or k - 7) end
    end
  end
else
  local i = 5
  while i <= #ARGV do
    local n = tonumber(ARGV[i + 2]) or 0
    local fields = nil
    if n > 0 then fields = {unpack(ARGV, i + 3, i + 2 + n)} end
    take(ARGV[i], ARGV[i + 1], fields, KEYS[1], 0)
    i = i + 3 + n
  end
end
local heldAny = false

-- A waiting job's hash written before fresh jobs had none (an older version's enqueue.lua)
-- lacks the payload: it is in the entry.
local function entryPayload(stream, entry)
  local e = redis.call("XRANGE", stream, entry, entry)[1]
  if not e then return false end
  for j = 1, #e[2], 2 do
    if e[2][j] == "p" then return e[2][j + 1] end
  end
  return false
end

-- What a fresh job's hash would hold, read from its entry (see enqueue.lua), in the order of
-- the HMGET below, then its priority; nil when the entry is gone.
local SLOT = {t = 2, p = 3, o = 4, m = 5, k = 6, x = 8, c = 9, r = 11}
local function fromEntry(stream, entry, fields)
  if not fields then
    local e = redis.call("XRANGE", stream, entry, entry)[1]
    if not e then return nil end
    fields = e[2]
  end
  local h = {"waiting", false, false, false, false, false, string.match(entry, "^%d+") or false,
    false, false, "0", false}
  for j = 1, #fields, 2 do
    local slot = SLOT[fields[j]]
    if slot then h[slot] = fields[j + 1] end
  end
  return h
end

-- The hash of a fresh job: ``fields`` (its state), then what it was enqueued with. With the
-- job log on, version 1 is its enqueued event's (enqueue.lua), so the next event is 2. False
-- when the job's key is not a hash.
local versioned = redis.call("EXISTS", KEYS[7]) == 1
local OPTIONAL = {{4, "timeout"}, {5, "max_attempts"}, {6, "tick"}, {8, "exp"}, {9, "ck"}, {11, "pr"}}
local function writeHash(jobKey, h, fields)
  local n = #fields
  fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = "task", h[2] or "", "created", h[7] or ""
  if versioned then fields[n + 5], fields[n + 6] = "v", "1" end
  for _, o in ipairs(OPTIONAL) do
    local value = h[o[1]]
    if value then fields[#fields + 1] = o[2]; fields[#fields + 1] = value end
  end
  return type(redis.pcall("HSET", jobKey, unpack(fields))) == "number"
end

local function poison(stream, entry, id, reason)
  redis.call("XADD", KEYS[2], "*", "j", id, "entry", entry, "error", reason, "at", now)
  drop(stream, entry)
  emit(entry, id, 0)
end

-- The fresh jobs taken above: each still in the index (not cancelled since it was enqueued)
-- gets its hash as writeHash would write it and a row: {entry, id, 6, lane, task, payload,
-- timeout, max_attempts, tick} when read here (values: the entry's fields as a nested table
-- cost 4,000 of the 69,000 instructions a start took), {entry, id, 5} when given (its reader
-- has the rest). The others go the general way below.
if nFast > 0 then
  local indexed = redis.call("HMGET", KEYS[6], unpack(fastId, 1, nFast))
  -- An option's entry letter -> its hash field: SLOT and OPTIONAL (fromEntry, writeHash)
  -- say the same; derived from them it cost every call 380 instructions a job (none of
  -- these jobs has "x").
  local NAMES = {o = "timeout", m = "max_attempts", k = "tick", c = "ck", r = "pr"}
  local fields = {"status", "active", "processed", now, "worker", worker, "attempts", "1",
    "payload", "", "task", "", "created", ""}
  local base = 14
  if versioned then fields[15], fields[16], base = "v", "1", 16 end
  local gone, nGone = {}, 0
  for i = 1, nFast do
    local entry, id, given = fastEntry[i], fastId[i], fastFields[i]
    if indexed[i] then
      nGone = nGone + 1
      gone[nGone] = id
      fields[10], fields[12], fields[14] = fastPayload[i], fastTask[i], string.match(entry, "^%d+") or ""
      local n, timeout, maxAttempts, tick = base, false, false, false
      for j = 1, #given, 2 do
        local letter = given[j]
        local name = NAMES[letter]
        if name then
          local value = given[j + 1]
          fields[n + 1], fields[n + 2] = name, value
          n = n + 2
          if letter == "o" then timeout = value elseif letter == "m" then maxAttempts = value
          elseif letter == "k" then tick = value end
        end
      end
      if type(redis.pcall("HSET", jobPrefix .. id, unpack(fields, 1, n))) ~= "number" then
        poison(fastStream[i], entry, id, "job data unreadable: the job's key is not a hash")
      elseif reading then
        out[nOut + 1], out[nOut + 2], out[nOut + 3], out[nOut + 4], out[nOut + 5] = entry, id, 6, fastLane[i], fastTask[i]
        out[nOut + 6], out[nOut + 7], out[nOut + 8], out[nOut + 9] = fastPayload[i], timeout, maxAttempts, tick
        nOut = nOut + 9
      else
        nOut = nOut + 3
        out[nOut - 2], out[nOut - 1], out[nOut] = entry, id, 5
      end
    else
      todo[#todo + 1] = {entry, id, fastPayload[i], fastStream[i], fastLane[i], given}
    end
  end
  for first = 1, nGone, 500 do
    redis.call("HDEL", KEYS[6], unpack(gone, first, math.min(first + 499, nGone)))
  end
end

for _, t in ipairs(todo) do
  local entry, id, stream = t[1], t[2], t[4]
  local jobKey = jobPrefix .. id
  local h, fresh = nil, false
  if id ~= "" and redis.call("HDEL", KEYS[6], id) == 1 then
    -- A fresh job: no hash yet, its entry says what the hash will hold.
    fresh = true
    h = fromEntry(stream, entry, t[6])
  elseif id ~= "" then
    h = redis.pcall("HMGET", jobKey, "status", "task", "payload", "timeout", "max_attempts",
      "tick", "created", "exp", "ck", "attempts")
  end
  local attempts = nil
  local runnable = h ~= nil and h.err == nil and h[1] and h[1] ~= "cancelled"
    and h[1] ~= "completed" and h[1] ~= "failed"
  local expired = runnable and h[8] and (tonumber(h[8]) or math.huge) <= nowMs
  local held = runnable and not expired and allowance >= 0 and #started >= allowance
  local key = runnable and keySlots and h[9] or nil
  if key and not held and not expired and not keyFree(key) then
    held = true
    keyHeld = keyHeld + 1
  end
  if runnable and not held and not expired then
    -- Counted here and written with the start's HSET (an HINCRBY would be one call more).
    local before = h[10] or "0"
    attempts = string.match(before, "^%d+$") and tonumber(before) + 1 or {err = "not an integer: " .. before}
  end
  if expired then
    -- finish.lua records it cancelled, on its hash.
    if fresh then writeHash(jobKey, h, {"status", "waiting", "attempts", "0", "payload", h[3] or ""}) end
    emit(entry, id, 4, h[2] or "", t[5])
  elseif held then
    if fresh then redis.call("HSET", KEYS[6], id, entry .. (h[11] and (" " .. h[11]) or "")) end
    heldAny = true
    emit(entry, id, 3)
  elseif h ~= nil and h.err ~= nil then
    poison(stream, entry, id, "job data unreadable: " .. h.err)
  elseif h == nil or not h[1] then
    -- A poison entry: no job id, or a job hash that does not exist. Keep the evidence.
    poison(stream, entry, id, id == "" and "stream entry has no job id" or "job data missing")
  elseif h[1] == "cancelled" or h[1] == "completed" or h[1] == "failed" then
    drop(stream, entry)
    emit(entry, id, 0)
  elseif type(attempts) ~= "number" then
    local reason = "job data unreadable: attempts: " .. tostring(attempts.err)
    redis.pcall("HSET", jobKey, "status", "failed", "error", reason, "finished", now)
    poison(stream, entry, id, reason)
  elseif fresh and not writeHash(jobKey, h, {"status", "active", "processed", now, "worker", worker,
      "attempts", attempts, "payload", h[3] or ""}) then
    poison(stream, entry, id, "job data unreadable: the job's key is not a hash")
  else
    local payload = h[3]
    if fresh then
      payload = payload or ""
    elseif payload then
      redis.call("HSET", jobKey, "status", "active", "processed", now, "worker", worker,
        "attempts", attempts)
    else
      payload = t[3] or entryPayload(stream, entry) or ""
      redis.call("HSET", jobKey, "status", "active", "processed", now, "worker", worker,
        "attempts", attempts, "payload", payload)
    end
    if fresh and t[6] and not reading then
      emit(entry, id, 5)
    else
      emit(entry, id, 1, h[2], payload, attempts, h[4] or "", h[5] or "", h[6] or "",
        h[7] or "", t[5])
    end
    started[#started + 1] = entry
    if key then
      keyTaken[key] = keyTaken[key] + 1
      startedKeys[entry] = key
    end
  end
end
if gated then
  local deadline = nowMs + tonumber(ARGV[3])
  if slots and #started > 0 then
    for _, entry in ipairs(started) do redis.pcall("ZADD", KEYS[4], deadline, entry) end
  end
  for entry, key in pairs(startedKeys) do
    redis.pcall("ZADD", KEYS[4] .. ":" .. key, deadline, entry)
    redis.pcall("HSET", KEYS[4] .. ":keys", entry, key)
  end
  -- A bound is reported only if it held something back: a read that got fewer entries than it
  -- asked for drained the stream, and one the bound did not cut read what it asked for.
  if reading and (#todo + nFast < readCount or allowance >= tonumber(ARGV[6])) then reason = "" end
  if not reading and not heldAny then reason = "" end
  local wait = 0
  if interval then
    tat = tat + #started * interval
    if #started > 0 then
      redis.call("SET", KEYS[5], string.format("%.3f", tat), "PX", math.ceil(tat - nowMs) + 1000)
    end
    wait = math.max(0, math.ceil(tat - (burst - 1) * interval - nowMs))
  end
  emit("", "", 2, reason, wait, allowance, keyHeld)
end
-- finish.lua leaves acknowledged entries in the stream until whole nodes of them can go (its
-- tidy, which this mirrors): when nothing is pending and nothing waits, they all go at once
-- (whole nodes, no walk). Needed where an entry leaves the pending list other than
-- by an outcome: else the ones an outcome left would stay until the next job's.
-- The id of the entry the group last handed out; whether entry id a is after entry id b.
-- (finish.lua, bury.lua and start.lua each hold these: scripts share no code.)
local function lastDelivered(stream, group)
  for _, g in ipairs(redis.call("XINFO", "GROUPS", stream)) do
    local name, last = nil, nil
    for k = 1, #g, 2 do
      if g[k] == "name" then name = g[k + 1] elseif g[k] == "last-delivered-id" then last = g[k + 1] end
    end
    if name == group then return last end
  end
end
local function newer(a, b)
  local am, as = string.match(a, "^(%d+)-(%d+)$")
  local bm, bs = string.match(b, "^(%d+)-(%d+)$")
  if am ~= bm then return tonumber(am) > tonumber(bm) end
  return tonumber(as) > tonumber(bs)
end
local function clearIfIdle(stream, group)
  local countKey = stream .. ":acked"
  if redis.call("EXISTS", countKey) == 0 or redis.call("XPENDING", stream, group)[1] > 0 then return end
  local delivered = lastDelivered(stream, group)
  local newest = redis.call("XREVRANGE", stream, "+", "-", "COUNT", 1)[1]
  if not newest or (delivered and not newer(newest[1], delivered)) then
    redis.call("XTRIM", stream, "MAXLEN", 0)
    redis.call("DEL", countKey)
  end
end
for stream in pairs(dropped) do clearIfIdle(stream, group) end
return out
