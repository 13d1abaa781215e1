-- Drover's store, as ONE Redis Function library: every request is applied by one FCALL, so it
-- is atomic. The library is loaded once per server (scripts.rs), and this file's top level runs
-- at load time only: a call pays for its own work, not for defining the functions below.
-- keys[1] = "{ns}:meta" (routes the call to the namespace's shard; every other key shares the
-- "{ns}:" prefix, hence the hash slot). args[1] = the engine config (JSON), args[2] = the
-- request (MessagePack; ids as numbers, or as decimal strings beyond 2^53).
--
-- Numbers: Lua has only doubles. Ids, tokens and times (~1.7e15 us) are exact below 2^53, but
-- tostring() loses digits, so every number that becomes a string goes through F.fmt ('%d':
-- every such number is an integer, and glibc prints integers many times faster than '%.0f').
-- Hot paths pass numbers to redis.call as F.fmt text too: Redis would print them with '%.17g'.
-- Zset members that must sort like numbers are zero-padded (F.pad), because Redis breaks score
-- ties by member bytes.
-- Functions live in one table F: Lua 5.1 allows a function only 60 upvalues.
local F = {}

-- Redis runs a function with its globals behind a metatable (an empty table whose __index is
-- the real globals), so every global name costs two table lookups and a metamethod; and at
-- load time the standard library is not reachable at all. So the globals this library uses
-- are these locals instead, bound on its first call (F.bind_globals); its functions reach them
-- as upvalues. `redis` is the load-time API (register_function) until then.
local redis = redis
local tonumber, tostring, type, ipairs, pairs, next, unpack, assert
local select, error, pcall
local string, table, math, bit, struct, cjson, cmsgpack
local GLOBALS_BOUND = false

function F.bind_globals()
  local G = _G
  redis, tonumber, tostring, type = G.redis, G.tonumber, G.tostring, G.type
  ipairs, pairs, next, unpack, assert = G.ipairs, G.pairs, G.next, G.unpack, G.assert
  select, error, pcall = G.select, G.error, G.pcall
  string, table, math, bit = G.string, G.table, G.math, G.bit
  struct, cjson, cmsgpack = G.struct, G.cjson, G.cmsgpack
  GLOBALS_BOUND = true
end

-- Per call (set by F.begin): the namespace's key prefix, its meta hash, the config, the store
-- time, the machines woken.
local P = ''
local META = ''
local C = nil
local NOW = 0
-- NOW as text, formatted once per call: most writes store it.
local NOW_S = '0'
local WAKES = {}

-- Kept across calls, per namespace (F.begin): decoded classes and profiles and the fit verdicts
-- between them. All three are immutable once written, so the only way a cached entry goes wrong
-- is the namespace's data being wiped and rebuilt; `meta.epoch` changes then, and so does the
-- cache.
local CACHES = {}
local MAX_CACHED_NAMESPACES = 64
local CLASSES = {}
local PROFILES = {}
local ALLOWS = {}
-- The last config text and its decoding: every caller sends the same one.
local CONFIG_TEXT = nil

function F.fmt(x) return string.format('%d', x) end

-- A table whose array part has room for `n` values already (each false until set): a loop
-- that fills it by index then never makes room as it goes, where Lua 5.1 grows an array by
-- rehashing it at every power of two. (A constructor sizes its array for what unpack gives it.)
local FALSES = {}
for i = 1, 256 do FALSES[i] = false end
function F.sized(n)
  if n > 256 then return {} end
  return {unpack(FALSES, 1, n)}
end

-- `t` again if it is empty (F.flush leaves most per-call tables so), else a new table: an
-- empty call spent a sixth of its work making and collecting a dozen tables.
function F.empty(t)
  if next(t) == nil then return t end
  return {}
end

-- F.fmt and F.pad, remembered across calls (a number's text never changes), up to FMT_LIMIT
-- numbers: string.format costs more than most of what a call does with its result, and the
-- same ids (a job leased, then succeeded; a machine claiming again) and small counts come
-- back call after call. Hot loops look in FMT themselves (`FMT[id] or F.fmtm(id)`): the call
-- cost more than the lookup.
local FMT = {}
local PADS = {}
local FMT_COUNT = 0
local FMT_LIMIT = 8192
function F.fmtm(x)
  local s = FMT[x]
  if not s then
    s = F.fmt(x)
    FMT[x] = s
    FMT_COUNT = FMT_COUNT + 1
  end
  return s
end
function F.pad(x)
  local s = PADS[x]
  if not s then
    s = string.format('%020d', x)
    PADS[x] = s
    FMT_COUNT = FMT_COUNT + 1
  end
  return s
end

-- Ids from their decimal texts (zset members, as Redis returns them), their texts remembered as
-- F.fmtm would have made them: a claim's jobs then need no formatting.
function F.ids_of(texts, n)
  local ids = F.sized(n)
  for i = 1, n do
    local text = texts[i]
    local id = tonumber(text)
    ids[i] = id
    if not FMT[id] then
      FMT[id] = text
      FMT_COUNT = FMT_COUNT + 1
    end
  end
  return ids
end

-- Class queues order jobs by priority, then id, in one score: (100 - priority) * 2^46 + id,
-- exact in a double while ids stay below 2^46 (F.submit refuses more). Members are the ids as
-- plain text, which a claim takes as its jobs' texts (F.ids_of).
local QUEUE_ID_LIMIT = 2 ^ 46
function F.queue_score(priority, id)
  return (100 - priority) * QUEUE_ID_LIMIT + id
end

function F.priority_of_score(score)
  return 100 - math.floor(score / QUEUE_ID_LIMIT)
end

function F.queue_id_limit()
  return QUEUE_ID_LIMIT
end
function F.jkey(id) return P .. 'j:' .. F.fmtm(id) end
function F.mkey(id) return P .. 'm:' .. F.fmtm(id) end
function F.ckey(c) return P .. 'c:' .. F.fmtm(c) end
function F.qkey(c) return P .. 'c:' .. F.fmtm(c) .. ':q' end
function F.pkey(p) return P .. 'p:' .. F.fmtm(p) end
function F.wkey(p) return P .. 'w:' .. F.fmtm(p) end
function F.min(a, b) if a < b then return a end return b end
function F.max(a, b) if a > b then return a end return b end

function F.meta(field)
  return tonumber(redis.call('HGET', META, field) or '0')
end

-- =============================================================================================
-- THE WRITE DISCIPLINE. Read this before writing to Redis from this library.
--
-- Redis keeps whatever a function wrote before it raised an error: there is no rollback. A
-- request is all-or-nothing by these rules, and by no other:
--
-- 1. Every write goes through F.w (a key holding a collection: a hash of all jobs, a queue, an
--    index; undone a field or member at a time), F.wk (a key holding one small thing: meta, a
--    job's or a machine's hash, a wake list; undone by restoring the whole key), or F.w_known
--    (a hot path that read the prior values already and says how to undo), or is gathered in
--    this call's buffers (run records, lease lists, counters, the finished list, the journal)
--    for the flush. Never `redis.call` a write anywhere else.
-- 2. Until the final flush, each write first notes how to undo it (UNDO). If anything raises
--    (a bug, an assert, a Redis error, an injected test failure), dispatch.lua plays UNDO
--    backwards, drops the call's buffers and the namespace's caches, and answers that request
--    `failed`: nothing it wrote remains. The other requests of a batch are applied again
--    without it.
-- 3. The final flush (F.flush_final) first gathers every write it will make, packing what must
--    be packed, and only then writes: nothing can raise once its first write is made. Its
--    writes are not logged.
-- 4. Every logged write is a step (F.step): a test marks a namespace with
--    `meta.test_namespace = 1` and arms `meta.test_fail = N` to raise right after the N-th
--    write of a call, then checks the namespace is exactly as it was (tests/redis_atomic.rs).
--    Production never sets these; a namespace not marked refuses an armed failure.
-- =============================================================================================
local UNDO = {}
-- Small keys already saved whole this call (F.wk).
local SAVED = {}
local LOGGING = true
local STEPS = 0
-- The write after which to raise (tests only), and whether this FCALL raised it already (a
-- batch applied again must not meet it twice).
local FAIL_AT = nil
local FAIL_FIRED = false

-- Counts a logged write; raises after the armed one.
function F.step(cmd, key)
  STEPS = STEPS + 1
  if STEPS == FAIL_AT then
    FAIL_AT, FAIL_FIRED = nil, true
    error('injected failure after write ' .. STEPS .. ' (' .. cmd .. ' ' ..
      string.sub(key, #P + 1) .. ')', 0)
  end
end

local function undo_later(command)
  UNDO[#UNDO + 1] = command
end

-- How to undo a write to a collection, per command, read before the write is made.
local UNDO_OF = {}

function UNDO_OF.HSET(key, ...)
  local args = {...}
  local fields = {}
  for i = 1, #args, 2 do fields[#fields + 1] = args[i] end
  local old = redis.call('HMGET', key, unpack(fields))
  local restore, absent = {'HSET', key}, {'HDEL', key}
  for i, field in ipairs(fields) do
    if old[i] then
      restore[#restore + 1], restore[#restore + 2] = field, old[i]
    else
      absent[#absent + 1] = field
    end
  end
  if #restore > 2 then undo_later(restore) end
  if #absent > 2 then undo_later(absent) end
end

function UNDO_OF.HDEL(key, ...)
  local fields = {...}
  local old = redis.call('HMGET', key, unpack(fields))
  local restore = {'HSET', key}
  for i, field in ipairs(fields) do
    if old[i] then restore[#restore + 1], restore[#restore + 2] = field, old[i] end
  end
  if #restore > 2 then undo_later(restore) end
end

function UNDO_OF.ZADD(key, ...)
  local args = {...}
  local members = {}
  for i = 2, #args, 2 do members[#members + 1] = args[i] end
  local old = redis.call('ZMSCORE', key, unpack(members))
  local restore, absent = {'ZADD', key}, {'ZREM', key}
  for i, member in ipairs(members) do
    if old[i] then
      restore[#restore + 1], restore[#restore + 2] = old[i], member
    else
      absent[#absent + 1] = member
    end
  end
  if #restore > 2 then undo_later(restore) end
  if #absent > 2 then undo_later(absent) end
end

function UNDO_OF.ZREM(key, ...)
  local members = {...}
  local old = redis.call('ZMSCORE', key, unpack(members))
  local restore = {'ZADD', key}
  for i, member in ipairs(members) do
    if old[i] then restore[#restore + 1], restore[#restore + 2] = old[i], member end
  end
  if #restore > 2 then undo_later(restore) end
end

function UNDO_OF.ZREMRANGEBYRANK(key, from, to)
  local old = redis.call('ZRANGE', key, from, to, 'WITHSCORES')
  local restore = {'ZADD', key}
  for i = 1, #old, 2 do restore[#restore + 1], restore[#restore + 2] = old[i + 1], old[i] end
  if #restore > 2 then undo_later(restore) end
end

function UNDO_OF.RPUSH(key, ...)
  undo_later({'RPOP', key, select('#', ...)})
end

function UNDO_OF.LPOP(key)
  local old = redis.call('LINDEX', key, 0)
  if old then undo_later({'LPUSH', key, old}) end
end

function UNDO_OF.LSET(key, index)
  undo_later({'LSET', key, index, redis.call('LINDEX', key, index)})
end

-- Writes to a collection (rule 1).
function F.w(cmd, key, ...)
  if not LOGGING then return redis.call(cmd, key, ...) end
  local undo = UNDO_OF[cmd]
  if not undo then error('F.w cannot undo ' .. cmd .. '; use F.wk for a small key') end
  undo(key, ...)
  local result = redis.call(cmd, key, ...)
  F.step(cmd, key)
  return result
end

-- Writes to a small key, saved whole (DUMP) before its first write this call (rule 1).
function F.wk(cmd, key, ...)
  if not LOGGING then return redis.call(cmd, key, ...) end
  if not SAVED[key] then
    SAVED[key] = true
    local dump = redis.call('DUMP', key)
    if dump then
      local ttl = redis.call('PTTL', key)
      undo_later({'RESTORE', key, ttl > 0 and ttl or 0, dump, 'REPLACE'})
    else
      undo_later({'DEL', key})
    end
  end
  local result = redis.call(cmd, key, ...)
  F.step(cmd, key)
  return result
end

-- A write whose undo the caller built from values it had read already: `undo` is a list of
-- commands that, played in order, put back what the write changes (rule 1).
function F.w_known(undo, cmd, key, ...)
  if not LOGGING then return redis.call(cmd, key, ...) end
  for i = 1, #undo do undo_later(undo[i]) end
  local result = redis.call(cmd, key, ...)
  F.step(cmd, key)
  return result
end

-- HINCRBY by one of a small key's counter field, undone exactly (a field that did not exist
-- is deleted again, not left at 0).
function F.incr(key, field)
  local value = redis.call('HINCRBY', key, field, 1)
  if LOGGING then
    undo_later(value == 1 and {'HDEL', key, field} or {'HINCRBY', key, field, -1})
    F.step('HINCRBY', key)
  end
  return value
end

-- HSET of `fields` ({field, value, ...}) on `key`, undone from `old` (field -> its value as
-- read, false if absent), which must name every field written.
function F.hset_known(key, old, fields)
  local restore, absent = {'HSET', key}, {'HDEL', key}
  for i = 1, #fields, 2 do
    local field = fields[i]
    local was = old[field]
    if was == nil then error('F.hset_known: the prior value of ' .. field .. ' was not read') end
    if was then
      restore[#restore + 1], restore[#restore + 2] = field, was
    else
      absent[#absent + 1] = field
    end
  end
  local undo = {}
  if #restore > 2 then undo[1] = restore end
  if #absent > 2 then undo[#undo + 1] = absent end
  F.w_known(undo, 'HSET', key, unpack(fields))
end

-- A new FCALL: the globals are bound (on the first), and an armed failure may fire once in it
-- (tests only).
function F.start_fcall()
  if not GLOBALS_BOUND then F.bind_globals() end
  FAIL_FIRED = false
end

-- After a failure: the namespace's caches may hold what the undone writes made (a class, a
-- profile), so they are dropped.
function F.forget_namespace_caches()
  CACHES[P] = nil
end

-- Plays the undo log backwards (dispatch.lua, after a failure).
function F.undo()
  for i = #UNDO, 1, -1 do redis.call(unpack(UNDO[i])) end
  UNDO = {}
end

-- Writes a batch repeats are gathered per call and made once (F.flush): counters, the finished
-- list, machines' lease lists and their place in the lease expiry index. Anything that reads
-- those keys flushes first; dispatch.lua flushes before every request that is not on the hot
-- path.
local PENDING = {}
local PENDING_ORDER = {}
local FINISHED = {}
-- Machines' lease lists as read or written this call: id -> {job, expiry, job, expiry, ...}.
-- DIRTY names the lists to write back, EXPIRY_DIRTY the machines whose earliest expiry (their
-- score in {ns}:lexp) to write again.
local MLEASES = {}
local MLEASES_DIRTY = {}
local EXPIRY_DIRTY = {}
-- Where each lease stands in its machine's list (F.lease_positions), for the lists that a call
-- searched: id -> {job -> index of the job}.
local MLEASES_AT = {}

-- The store clock and the counters the hot paths change, packed as doubles in one meta field,
-- `hot` (HOT_FIELDS order): read with the other clock fields (F.clock), written back in one
-- HSET when either changed (F.gather_counts). A field each took a string and a number conversion
-- each way per call, more than a tenth of a claim's fixed work. Other counters are meta fields
-- of their own, added to with HINCRBY.
local HOT_FIELDS = {'clock', 'queued', 'delayed', 'leased', 'finished', 't_submitted',
  't_succeeded'}
local HOT_FORMAT = '<ddddddd'
-- This call's values of the hot fields, and whether they changed since read or written.
local HOT = {}
local HOT_DIRTY = false

function F.count(field, delta)
  local hot = HOT[field]
  if hot then
    HOT[field] = hot + delta
    HOT_DIRTY = true
    return
  end
  if PENDING[field] == nil then
    PENDING[field] = 0
    PENDING_ORDER[#PENDING_ORDER + 1] = field
  end
  PENDING[field] = PENDING[field] + delta
end

-- A hot counter's value as of now (successes not yet folded in aside: F.fold_successes).
function F.counter(field)
  return HOT[field]
end

-- Successes are counted apart: they are most of what a busy call counts.
local SUCCESSES = 0
function F.count_successes(n)
  SUCCESSES = SUCCESSES + n
end

-- Folds this call's successes into the hot counters (F.counter then tells the truth).
function F.fold_successes()
  if SUCCESSES == 0 then return end
  F.count('leased', -SUCCESSES)
  F.count('t_succeeded', SUCCESSES)
  F.count('finished', SUCCESSES)
  SUCCESSES = 0
end

-- Appends to `writes` the gathered counter changes, and the clock if it moved.
function F.gather_counts(writes)
  F.fold_successes()
  if HOT_DIRTY then
    writes[#writes + 1] = {true, 'HSET', META, 'hot', struct.pack(HOT_FORMAT, HOT.clock,
      HOT.queued, HOT.delayed, HOT.leased, HOT.finished, HOT.t_submitted, HOT.t_succeeded)}
    HOT_DIRTY = false
  end
  if #PENDING_ORDER == 0 then return end
  for _, field in ipairs(PENDING_ORDER) do
    if PENDING[field] ~= 0 then
      writes[#writes + 1] = {true, 'HINCRBY', META, field, F.fmt(PENDING[field])}
    end
    PENDING[field] = nil
  end
  PENDING_ORDER = {}
end

-- Job `id` finished now: F.flush appends it to the finished list, which holds one entry per
-- flush, `finished_at:job,job,...` (oldest first; F.purge_finished), where an entry per job
-- cost a string and a list node each.
function F.finished_later(id)
  FINISHED[#FINISHED + 1] = FMT[id] or F.fmtm(id)
end

-- Lists of numbers as stored: doubles packed by the struct library, where cmsgpack took twice
-- the work each way; '' or nil is the empty list. Packed NUMBERS_CHUNK at a time, since a C
-- call takes only a few thousand values.
local NUMBERS_CHUNK = 256
local NUMBERS_FORMATS = {}
local function numbers_format(n)
  local format = NUMBERS_FORMATS[n]
  if not format then
    format = '<' .. string.rep('d', n)
    NUMBERS_FORMATS[n] = format
  end
  return format
end

function F.decode_list(bytes)
  if not bytes or bytes == '' then return {} end
  local n = #bytes / 8
  local list = {}
  for from = 1, n, NUMBERS_CHUNK do
    local k = F.min(NUMBERS_CHUNK, n - from + 1)
    local chunk = {struct.unpack(numbers_format(k), bytes, (from - 1) * 8 + 1)}
    if from == 1 and k == n then
      chunk[n + 1] = nil
      return chunk
    end
    for i = 1, k do list[from + i - 1] = chunk[i] end
  end
  return list
end

function F.encode_list(list)
  local n = #list
  if n <= NUMBERS_CHUNK then
    if n == 0 then return '' end
    return struct.pack(numbers_format(n), unpack(list))
  end
  local parts = {}
  for from = 1, n, NUMBERS_CHUNK do
    local to = F.min(from + NUMBERS_CHUNK - 1, n)
    parts[#parts + 1] = struct.pack(numbers_format(to - from + 1), unpack(list, from, to))
  end
  return table.concat(parts)
end

-- A machine's leases as job, expiry pairs, in MemStore's Vec order (swap_remove keeps that order
-- meaningful). The table is this call's copy: a caller that edits it calls F.leases_changed.
-- Holding each lease's expiry here lets the machine, not the job, be the unit of the expiry
-- index: a claim or a batch of outcomes then moves one index entry, not one per job.
function F.leases_of(id)
  local list = MLEASES[id]
  if list then return list end
  list = F.decode_list(redis.call('HGET', F.mkey(id), 'leases'))
  MLEASES[id] = list
  return list
end

-- Machine `id`'s lease list as stored (`bytes`, read by the caller with other fields), unless
-- this call holds a newer one.
function F.leases_known(id, bytes)
  if MLEASES[id] == nil then MLEASES[id] = F.decode_list(bytes) end
end

function F.leases_changed(id)
  MLEASES_DIRTY[id] = true
  EXPIRY_DIRTY[id] = true
end

function F.set_leases(id, list)
  MLEASES[id] = list
  MLEASES_AT[id] = nil
  F.leases_changed(id)
end

-- Where each of machine `id`'s leases stands in its list: job -> index of the job. Kept up to
-- date by F.append_leases and F.drop_lease for the rest of the call.
function F.lease_positions(id)
  local at = MLEASES_AT[id]
  if at then return at end
  local list = F.leases_of(id)
  at = {}
  for i = 1, #list, 2 do at[list[i]] = i end
  MLEASES_AT[id] = at
  return at
end

-- Machine `id`'s lease list and where its leases stand (nil if no one asked this call), for a
-- loop that appends job, expiry pairs to the list and keeps the positions up to date: a claim
-- appends a lease per job, and a call per lease cost more than the append.
function F.append_leases(id)
  F.leases_changed(id)
  return F.leases_of(id), MLEASES_AT[id]
end

-- Takes `job` out of machine `id`'s lease list, as MemStore's swap_remove does it: the last
-- lease takes the removed one's place.
function F.drop_lease(id, job)
  local at = MLEASES_AT[id] or F.lease_positions(id)
  local i = at[job]
  if not i then return end
  local list = MLEASES[id]
  local n = #list
  local last = list[n - 1]
  list[i], list[i + 1] = last, list[n]
  list[n - 1], list[n] = nil, nil
  at[last] = i
  at[job] = nil
  MLEASES_DIRTY[id], EXPIRY_DIRTY[id] = true, true
end

-- The earliest expiry in a lease list, or nil for an empty one.
function F.earliest_expiry(list)
  local min = list[2]
  for i = 4, #list, 2 do
    if list[i] < min then min = list[i] end
  end
  return min
end

-- Appends `cmd key args...` to `writes` as few commands as unpack allows (Lua's C stack
-- takes a few thousand values); `step` keeps pairs together. `small`: F.wk's kind of key.
function F.gather_spread(writes, small, cmd, key, args, step)
  local chunk = 4000 - 4000 % step
  for i = 1, #args, chunk do
    writes[#writes + 1] = {small, cmd, key, unpack(args, i, F.min(i + chunk - 1, #args))}
  end
end

-- {ns}:lexp orders machines by their earliest lease expiry (F.first_expired_lease).
function F.gather_lease_index(writes)
  if next(EXPIRY_DIRTY) == nil then return end
  local add, remove = {}, {}
  for id in pairs(EXPIRY_DIRTY) do
    local min = F.earliest_expiry(MLEASES[id])
    if min then
      add[#add + 1] = F.fmtm(min)
      add[#add + 1] = F.pad(id)
    else
      remove[#remove + 1] = F.pad(id)
    end
  end
  F.gather_spread(writes, false, 'ZADD', P .. 'lexp', add, 2)
  F.gather_spread(writes, false, 'ZREM', P .. 'lexp', remove, 1)
  EXPIRY_DIRTY = {}
end

-- Moves machine `id`'s pending lease list write into `fields` (a caller's HSET arguments).
function F.take_leases_write(id, fields)
  if not MLEASES_DIRTY[id] then return end
  fields[#fields + 1] = 'leases'
  fields[#fields + 1] = F.encode_list(MLEASES[id])
  MLEASES_DIRTY[id] = nil
end

function F.gather_machine_leases(writes)
  if next(MLEASES_DIRTY) == nil then return end
  for id in pairs(MLEASES_DIRTY) do
    writes[#writes + 1] = {true, 'HSET', F.mkey(id), 'leases', F.encode_list(MLEASES[id])}
  end
  MLEASES_DIRTY = {}
end

-- Profiles whose machines showed they are alive this call: profile -> true. Their last_seen
-- (what F.judge_unworkable reads) is written by the flush.
local PROFILES_SEEN = {}

function F.profile_seen(pid)
  PROFILES_SEEN[pid] = true
end

function F.gather_profiles_seen(writes)
  if next(PROFILES_SEEN) == nil then return end
  for pid in pairs(PROFILES_SEEN) do
    writes[#writes + 1] = {true, 'HSET', F.pkey(pid), 'last_seen', NOW_S}
  end
  PROFILES_SEEN = {}
end

-- Every write this call gathered, as {small, cmd, key, args...}, packed and ready.
function F.gather_writes()
  local writes = {}
  F.gather_counts(writes)
  F.gather_lease_index(writes)
  if #FINISHED > 0 then
    writes[#writes + 1] = {false, 'RPUSH', P .. 'finished',
      NOW_S .. ':' .. table.concat(FINISHED, ',')}
    FINISHED = {}
  end
  F.gather_machine_leases(writes)
  F.gather_profiles_seen(writes)
  F.gather_runs(writes)
  return writes
end

-- Writes what the call gathered so far, logged (rule 2): for a request that must read it.
function F.flush()
  local writes = F.gather_writes()
  for i = 1, #writes do
    local w = writes[i]
    if w[1] then F.wk(unpack(w, 2)) else F.w(unpack(w, 2)) end
  end
end

-- The call's last writes (rule 3): everything is gathered and packed, the journal entry too,
-- before the first write; then nothing is left that can raise.
function F.flush_final()
  local writes = F.gather_writes()
  F.gather_journal(writes)
  LOGGING = false
  for i = 1, #writes do redis.call(unpack(writes[i], 2)) end
end

-- How this library lays the namespace's data out (scripts.rs DATA_LAYOUT). A namespace records
-- the layout that first wrote it (meta.layout), and a library of another layout refuses it
-- rather than misread it.
local LAYOUT = 'DROVER_DATA_LAYOUT'

-- The store clock: TIME, or the test clock when a test set one (production never does), and
-- never earlier than the last time any script saw, so time cannot run backwards for the store
-- even when a failover moves it to a host whose clock is behind. Also returns the namespace's
-- epoch (see CACHES), creating it with the layout on the first call; or nil and a refusal if
-- the namespace is in another layout. Reads the hot counters too; F.gather_counts writes the
-- clock back with them.
function F.clock()
  local f = redis.call('HMGET', META, 'hot', 'test_clock', 'epoch', 'layout', 'test_fail',
    'test_namespace', 'test_skip_fencing')
  if f[5] then
    if f[6] ~= '1' then
      return nil, 'TESTONLY failure injection is armed on a namespace not marked as a test ' ..
        'namespace: refused'
    end
    if not FAIL_FIRED then FAIL_AT = tonumber(f[5]) end
  end
  -- The chaos harness's planted bug (tests only): successes skip their fencing token check,
  -- so the checker must catch a stale outcome winning. Refused outside a test namespace.
  F.SKIP_FENCING = false
  if f[7] then
    if f[6] ~= '1' then
      return nil, 'TESTONLY skipped fencing is armed on a namespace not marked as a test ' ..
        'namespace: refused'
    end
    F.SKIP_FENCING = f[7] == '1'
  end
  local t = tonumber(f[2])
  local real
  if not t or not f[3] then
    local time = redis.call('TIME')
    real = tonumber(time[1]) * 1000000 + tonumber(time[2])
    t = t or real
  end
  local epoch = f[3]
  if not epoch then
    epoch = F.fmt(real)
    F.wk('HSET', META, 'epoch', epoch, 'layout', LAYOUT)
  elseif f[4] ~= LAYOUT then
    return nil, 'LAYOUT the namespace holds data in layout ' .. (f[4] or 'none') ..
      ' and this engine reads layout ' .. LAYOUT ..
      ': drain it with the engine that wrote it, or use another namespace'
  end
  if f[1] then
    HOT.clock, HOT.queued, HOT.delayed, HOT.leased, HOT.finished, HOT.t_submitted,
      HOT.t_succeeded = struct.unpack(HOT_FORMAT, f[1])
  else
    for _, field in ipairs(HOT_FIELDS) do HOT[field] = 0 end
  end
  HOT_DIRTY = false
  local last = HOT.clock
  if t < last then return last, epoch end
  if t > last then
    HOT.clock = t
    HOT_DIRTY = true
  end
  return t, epoch
end

-- Sets up one call: the namespace's prefix and caches, the config, the clock. Returns a
-- refusal (an error reply's text) if the call must not go on.
function F.begin(keys, args)
  UNDO, SAVED, LOGGING, STEPS, FAIL_AT = F.empty(UNDO), F.empty(SAVED), true, 0, nil
  META = keys[1]
  P = string.sub(META, 1, -5)
  if args[1] ~= CONFIG_TEXT then
    C = cjson.decode(args[1])
    CONFIG_TEXT = args[1]
  end
  WAKES = F.empty(WAKES)
  local now, epoch = F.clock()
  if not now then return epoch end
  NOW, NOW_S = now, F.fmt(now)
  local cache = CACHES[P]
  if not cache or cache.epoch ~= epoch then
    if not cache then
      local n = 0
      for _ in pairs(CACHES) do n = n + 1 end
      if n >= MAX_CACHED_NAMESPACES then CACHES = {} end
    end
    cache = {epoch = epoch, classes = {}, profiles = {}, allows = {}}
    CACHES[P] = cache
  end
  CLASSES, PROFILES, ALLOWS = cache.classes, cache.profiles, cache.allows
  -- A call that raised an error left its pending writes here: they are dropped, as an EVAL's
  -- would be.
  PENDING, PENDING_ORDER, FINISHED = F.empty(PENDING), F.empty(PENDING_ORDER), F.empty(FINISHED)
  SUCCESSES = 0
  PROFILES_SEEN = F.empty(PROFILES_SEEN)
  MLEASES, MLEASES_DIRTY = F.empty(MLEASES), F.empty(MLEASES_DIRTY)
  EXPIRY_DIRTY, MLEASES_AT = F.empty(EXPIRY_DIRTY), F.empty(MLEASES_AT)
  if FMT_COUNT > FMT_LIMIT then FMT, PADS, FMT_COUNT = {}, {}, 0 end
  F.runs_reset()
  F.journal_reset()
end

function F.err(code, a, b)
  return {'err', code, a or false, b or false}
end

function F.full(what, limit)
  return F.err('full', what, limit)
end

function F.split(s, sep)
  local out = {}
  if s == nil or s == false or s == '' then return out end
  local start = 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + #sep
  end
end
