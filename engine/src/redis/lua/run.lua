-- A job's run record: the fields that change while it runs, packed into one text per job in the
-- hash {ns}:run. A claim of 16 jobs then reads and writes 16 records with one HMGET and one
-- HSET, where per-job hashes took 32 calls. Records are read through and written back once per
-- call (F.flush), so every reader in a call sees every write before it.
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

local RUN_FORMAT = '<BdddddddddB'
local STATE_CODES = {queued = 1, delayed = 2, leased = 3, succeeded = 4, dead = 5,
  cancelled = 6, timed_out = 7, unworkable = 8}
local STATE_NAMES = {'queued', 'delayed', 'leased', 'succeeded', 'dead', 'cancelled',
  'timed_out', 'unworkable'}

-- This call's records: job id -> record, or false for a job that does not exist.
local RUNS = {}
local RUNS_DIRTY = {}
local RUNS_GONE = {}

function F.runs_reset()
  RUNS, RUNS_DIRTY, RUNS_GONE = {}, {}, {}
end

function F.unpack_run(bytes)
  local state, attempt, token, recorded, machine, deadline, attempt_deadline, timeout,
    started_at, finished_at, progress = struct.unpack(RUN_FORMAT, bytes)
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
  local want, fields, n = {}, {}, 0
  for i = 1, #ids do
    local id = ids[i]
    if RUNS[id] == nil then
      n = n + 1
      want[n], fields[n] = id, F.fmtm(id)
    end
  end
  if n == 0 then return end
  local texts = redis.call('HMGET', P .. 'run', unpack(fields))
  for i = 1, n do
    RUNS[want[i]] = texts[i] and F.unpack_run(texts[i]) or false
  end
end

-- Job `id`'s record (a table to edit; say so with F.run_changed), or nil if there is no such job.
function F.run(id)
  if RUNS[id] == nil then F.runs_load({id}) end
  return RUNS[id] or nil
end

function F.run_changed(id)
  RUNS_DIRTY[id] = true
end

function F.run_new(id, timeout)
  RUNS[id] = {state = 'queued', attempt = 0, token = 0, recorded = 0, machine = 0, deadline = 0,
    attempt_deadline = 0, timeout = timeout, started_at = 0, finished_at = 0, progress = 0}
  RUNS_DIRTY[id] = true
  RUNS_GONE[id] = nil
end

function F.run_forget(id)
  RUNS[id] = false
  RUNS_DIRTY[id] = nil
  RUNS_GONE[id] = true
end

function F.flush_runs()
  local set, gone = {}, {}
  for id in pairs(RUNS_DIRTY) do
    set[#set + 1] = F.fmtm(id)
    set[#set + 1] = F.pack_run(RUNS[id])
  end
  for id in pairs(RUNS_GONE) do gone[#gone + 1] = F.fmt(id) end
  F.call_spread('HSET', P .. 'run', set, 2)
  F.call_spread('HDEL', P .. 'run', gone, 1)
  RUNS_DIRTY, RUNS_GONE = {}, {}
end

-- A record's time as a reply value: 0 (not yet) is false, as a missing hash field is.
function F.time_or_false(t)
  if t == 0 then return false end
  return t
end
