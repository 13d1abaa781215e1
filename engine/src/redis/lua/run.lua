-- A job's run record: the fields that change while it runs, packed into one text per job in the
-- hash {ns}:run. A claim of 16 jobs then reads and writes 16 records with one HMGET and one
-- HSET, where per-job hashes took 32 calls. Records are read through and written back once per
-- call (F.gather_runs), so every reader in a call sees every write before it.
--
-- Records are binary (the struct library, in C): parsing text with string.match cost more than
-- all else a claim does. Numbers are doubles, exact for every id, token and time below 2^53.
-- Lua 5.1 grows a table by rehashing it, so records are made whole by one constructor.
--
-- Fields, all numbers but state: state; attempt; token (the newest issued); recorded (the token
-- whose outcome was recorded last, 0 if none); machine, deadline and attempt_deadline (the last
-- lease's; meaningful only while leased); timeout (us, from the spec); started_at and
-- finished_at (0 if not yet); progress (1 once the attempt reported progress, kept in j:<id> as
-- pct and msg).
--
-- Two short forms skip the packing where most records are written:
-- * a job submitted and never leased is its timeout alone (8 bytes): its other fields are all
--   zero, and its first claim unpacks one number, not eleven;
-- * a success, the commonest write of all, is the leased record it ends with its finish time
--   appended (8 bytes more), where packing the record again cost five times as much. Such a
--   record is succeeded, its outcome recorded under the lease's token, with no progress.

local RUN_FORMAT = '<BdddddddddB'
local RUN_BYTES = 74
local NEW_BYTES = 8
local SUCCESS_BYTES = RUN_BYTES + 8
-- NOW packed, for this call's successes (F.succeed_runs), once one needs it.
local NOW_PACKED = nil
local STATE_CODES = {queued = 1, delayed = 2, leased = 3, succeeded = 4, dead = 5,
  cancelled = 6, timed_out = 7, unworkable = 8}
local STATE_NAMES = {'queued', 'delayed', 'leased', 'succeeded', 'dead', 'cancelled',
  'timed_out', 'unworkable'}
local QUEUED, LEASED, SUCCEEDED = STATE_CODES.queued, STATE_CODES.leased, STATE_CODES.succeeded

-- This call's records: job id -> packed bytes (as read, or as a hot path below wrote them), or
-- false for a job that does not exist. EDITS holds the records unpacked into tables to edit
-- (F.run): while a job has one there, its bytes in RUNS are stale. Kept apart, so that the hot
-- paths tell a packed record from an edited one by a lookup, not a type() call per job.
local RUNS = {}
local EDITS = {}
local RUNS_DIRTY = {}
local RUNS_GONE = {}

function F.runs_reset()
  RUNS, EDITS = F.empty(RUNS), F.empty(EDITS)
  RUNS_DIRTY, RUNS_GONE = F.empty(RUNS_DIRTY), F.empty(RUNS_GONE)
  NOW_PACKED = nil
end

function F.unpack_run(bytes)
  if #bytes == NEW_BYTES then
    return {state = 'queued', attempt = 0, token = 0, recorded = 0, machine = 0, deadline = 0,
      attempt_deadline = 0, timeout = struct.unpack('<d', bytes), started_at = 0,
      finished_at = 0, progress = 0}
  end
  local state, attempt, token, recorded, machine, deadline, attempt_deadline, timeout,
    started_at, finished_at, progress = struct.unpack(RUN_FORMAT, bytes)
  if #bytes == SUCCESS_BYTES then
    state, recorded, progress = SUCCEEDED, token, 0
    finished_at = struct.unpack('<d', bytes, RUN_BYTES + 1)
  end
  return {state = STATE_NAMES[state], attempt = attempt, token = token, recorded = recorded,
    machine = machine, deadline = deadline, attempt_deadline = attempt_deadline,
    timeout = timeout, started_at = started_at, finished_at = finished_at, progress = progress}
end

function F.pack_run(r)
  return struct.pack(RUN_FORMAT, STATE_CODES[r.state], r.attempt, r.token, r.recorded, r.machine,
    r.deadline, r.attempt_deadline, r.timeout, r.started_at, r.finished_at, r.progress)
end

-- Reads the records of `ids` (job ids) not read yet this call, in one HMGET.
function F.runs_load(ids)
  local want, fields, n = F.sized(#ids), F.sized(#ids), 0
  for i = 1, #ids do
    local id = ids[i]
    if RUNS[id] == nil then
      n = n + 1
      want[n], fields[n] = id, FMT[id] or F.fmtm(id)
    end
  end
  if n == 0 then return end
  local texts = redis.call('HMGET', P .. 'run', unpack(fields, 1, n))
  for i = 1, n do RUNS[want[i]] = texts[i] or false end
end

-- Job `id`'s record (a table to edit; say so with F.run_changed), or nil if there is no such job.
function F.run(id)
  local r = EDITS[id]
  if r then return r end
  local bytes = F.packed_run(id)
  if not bytes then return nil end
  r = F.unpack_run(bytes)
  EDITS[id] = r
  return r
end

-- Job `id`'s record packed (read if need be), or false if there is no such job. The hot
-- transitions are made on packed records: a claim and a success then neither build nor read a
-- table per job. A record being edited is packed again first, so a table from F.run is stale
-- once one of these has run on its job.
function F.packed_run(id)
  local r = EDITS[id]
  if r then
    local bytes = F.pack_run(r)
    RUNS[id], EDITS[id] = bytes, nil
    return bytes
  end
  local bytes = RUNS[id]
  if bytes == nil then
    F.runs_load({id})
    bytes = RUNS[id]
  end
  return bytes
end

-- Leases queued jobs `ids` (of one class, whose key is `key`; `specs[i]` is job i's spec) to
-- `machine`: the claim's hot loop, whole, since a call per step cost more than the step.
-- Appends the grants to `out` as one run: the class key, the deadline and their number, then
-- job, token, attempt and spec for each (a table per grant, and the key and deadline in each,
-- were most of what a claim's reply cost). Appends each job (as text) to `granted`. The caller
-- counts the leases.
function F.lease_runs(ids, machine, specs, key, out, granted)
  local deadline = NOW + C.lease_ttl
  local list, at = F.append_leases(machine)
  local n = #list
  local o = #out
  out[o + 1], out[o + 2], out[o + 3] = key, deadline, #ids
  o = o + 3
  -- The journal's run of leases (journal.lua): machine and count, then job, token, attempt.
  local J = F.journal_table()
  local j = #J
  J[j + 1], J[j + 2], J[j + 3] = 'leased', machine, #ids
  j = j + 3
  for i = 1, #ids do
    local id = ids[i]
    local bytes = RUNS[id]
    if not bytes or EDITS[id] then bytes = F.packed_run(id) end
    local _, attempt, token, recorded, timeout, finished_at, progress
    if #bytes == NEW_BYTES then
      attempt, token, recorded, finished_at, progress = 0, 0, 0, 0, 0
      timeout = struct.unpack('<d', bytes)
    else
      _, attempt, token, recorded, _, _, _, timeout, _, finished_at, progress =
        struct.unpack(RUN_FORMAT, bytes)
    end
    -- Tokens follow the store clock as well as counting up, so a lease granted after a restart
    -- that lost writes still outranks every lease granted before it.
    token = token + 1
    if token < NOW then token = NOW end
    attempt = attempt + 1
    local attempt_deadline = NOW + timeout
    RUNS[id] = struct.pack(RUN_FORMAT, LEASED, attempt, token, recorded, machine, deadline,
      attempt_deadline, timeout, NOW, finished_at, progress)
    RUNS_DIRTY[id] = true
    list[n + 1], list[n + 2] = id, attempt_deadline < deadline and attempt_deadline or deadline
    if at then at[id] = n + 1 end
    n = n + 2
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = id, token, attempt, specs[i]
    o = o + 4
    J[j + 1], J[j + 2], J[j + 3] = id, token, attempt
    j = j + 3
    granted[#granted + 1] = FMT[id] or F.fmtm(id)
  end
end

-- Records the successes of live leases: `leases` is job, token, job, token... from index
-- `from` (numbers: the codec sends an id or token beyond 2^53 as a complete of its own). The
-- hot half of a busy agent's batch, in one loop. Returns the index of the first pair that is
-- not a live lease (those before it are recorded), or nil if none.
function F.succeed_runs(leases, from)
  local recorded = 0
  local stop
  -- The journal's run of successes (journal.lua): count, then job, token; the count is set
  -- once known.
  local J = F.journal_table()
  local j = #J
  local count_at = j + 2
  J[j + 1], J[count_at] = 'succeeded', 0
  j = count_at
  for i = from, #leases, 2 do
    local id, token = leases[i], leases[i + 1]
    local bytes = RUNS[id]
    if bytes == nil or EDITS[id] then bytes = F.packed_run(id) end
    if not bytes or #bytes ~= RUN_BYTES then
      stop = i
      break
    end
    local state, _, live, _, machine, _, _, _, _, _, progress = struct.unpack(RUN_FORMAT, bytes)
    if state ~= LEASED or (live ~= token and not F.SKIP_FENCING) then
      stop = i
      break
    end
    if progress == 1 then F.forget_progress(id) end
    NOW_PACKED = NOW_PACKED or struct.pack('<d', NOW)
    RUNS[id] = bytes .. NOW_PACKED
    RUNS_DIRTY[id] = true
    F.drop_lease(machine, id)
    F.finished_later(id)
    recorded = recorded + 1
    J[j + 1], J[j + 2] = id, token
    j = j + 2
  end
  if recorded == 0 then
    J[count_at], J[count_at - 1] = nil, nil
  else
    J[count_at] = recorded
  end
  F.count_successes(recorded)
  return stop
end

function F.run_changed(id)
  RUNS_DIRTY[id] = true
end

function F.run_new(id, timeout)
  RUNS[id], EDITS[id] = struct.pack('<d', timeout), nil
  RUNS_DIRTY[id] = true
  RUNS_GONE[id] = nil
end

-- Whether job `id` (which exists) is queued, read without unpacking its record.
function F.run_queued(id)
  local r = EDITS[id]
  if r then return r.state == 'queued' end
  local bytes = F.packed_run(id)
  return #bytes == NEW_BYTES or string.byte(bytes, 1) == QUEUED
end

function F.run_forget(id)
  RUNS[id], EDITS[id] = false, nil
  RUNS_DIRTY[id] = nil
  RUNS_GONE[id] = true
end

function F.gather_runs(writes)
  if next(RUNS_DIRTY) == nil and next(RUNS_GONE) == nil then return end
  local set, gone = {}, {}
  local n = 0
  for id, _ in pairs(RUNS_DIRTY) do
    local r = EDITS[id]
    r = r and F.pack_run(r) or RUNS[id]
    set[n + 1], set[n + 2] = FMT[id] or F.fmtm(id), r
    n = n + 2
  end
  for id in pairs(RUNS_GONE) do gone[#gone + 1] = F.fmt(id) end
  F.gather_spread(writes, false, 'HSET', P .. 'run', set, 2)
  F.gather_spread(writes, false, 'HDEL', P .. 'run', gone, 1)
  RUNS_DIRTY, RUNS_GONE = {}, {}
end

-- A record's time as a reply value: 0 (not yet) is false, as a missing hash field is.
function F.time_or_false(t)
  if t == 0 then return false end
  return t
end
