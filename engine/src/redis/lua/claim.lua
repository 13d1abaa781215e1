-- Claims and wake-ups (mem/claim.rs): the best fitting class head for an offer, leased in one
-- step; idle machines wait in a line per profile (w:<profile>, by wait seq) and a new job wakes
-- the longest-waiting one whose last offer fits it, by pushing onto its list wake:<machine>.

-- Waiting machines looked at per profile before a wake-up gives up on that profile.
local WAKE_SCAN = 32

function F.start_waiting(id, offer, pid)
  local seq = F.incr(META, 'seq')
  F.wk('HSET', F.mkey(id), 'wait_seq', F.fmt(seq), 'wait_offer', F.offer_string(offer))
  F.w('ZADD', F.wkey(pid), seq, F.pad(id))
  F.w('ZADD', P .. 'waitp', pid, F.fmt(pid))
  -- A wake-up left from before this wait is stale: the claim just looked at every queue.
  F.wk('DEL', P .. 'wake:' .. F.fmt(id))
end

-- `known`: the machine's {wait_seq, profile} fields if the caller read them already.
function F.stop_waiting(id, known)
  local mk = F.mkey(id)
  local f = known or redis.call('HMGET', mk, 'wait_seq', 'profile')
  if not f[1] then return end
  local pid = tonumber(f[2])
  local line = F.wkey(pid)
  F.w('ZREM', line, F.pad(id))
  if redis.call('ZCARD', line) == 0 then F.w('ZREM', P .. 'waitp', F.fmt(pid)) end
  F.wk('HDEL', mk, 'wait_seq', 'wait_offer')
end

-- Wakes the machine that has waited longest among those whose last offer fits class `cid`,
-- looking at profiles in id order, as MemStore does.
function F.wake_one_for(cid)
  local chosen
  for _, p in ipairs(redis.call('ZRANGE', P .. 'waitp', 0, -1)) do
    local pid = tonumber(p)
    if F.allows(cid, pid) then
      local c = F.class(cid)
      for _, m in ipairs(redis.call('ZRANGE', F.wkey(pid), 0, WAKE_SCAN - 1)) do
        local id = tonumber(m)
        local offer = F.parse_offer(redis.call('HGET', F.mkey(id), 'wait_offer'))
        if F.offer_fits(c, offer) then
          chosen = id
          break
        end
      end
      if chosen then break end
    end
  end
  if not chosen then return end
  F.stop_waiting(chosen)
  local wake = P .. 'wake:' .. F.fmt(chosen)
  F.wk('DEL', wake)
  F.wk('RPUSH', wake, '1')
  F.wk('PEXPIRE', wake, C.wake_ttl_ms)
  WAKES[#WAKES + 1] = chosen
end

-- `nonempty`: the non-empty class ids (as ZRANGE returns them), read once per claim. Returns
-- the best class, its head job, whether that head is alone in its queue, and whether the class
-- is the only one that fits. A single fitting class has nothing to rank: neither its head nor
-- its head's age is read (the caller takes its heads in turn).
function F.best_class(pid, offer, nonempty)
  local fits = {}
  for _, cs in ipairs(nonempty) do
    local cid = tonumber(cs)
    if F.allows(cid, pid) and F.offer_fits(F.class(cid), offer) then fits[#fits + 1] = cid end
  end
  if #fits <= 1 then
    if #fits == 0 then return nil end
    return fits[1], nil, nil, true
  end
  local fitting = {}
  for i, cid in ipairs(fits) do
    -- The head and whether anything stands behind it (then taking it empties the class).
    local head = redis.call('ZRANGE', F.qkey(cid), 0, 1, 'WITHSCORES')
    fitting[i] = {cid, tonumber(head[1]), F.priority_of_score(tonumber(head[2])), #head == 2}
  end
  local best, best_score
  for _, f in ipairs(fitting) do
    local submitted = tonumber(redis.call('HGET', F.jkey(f[2]), 'submitted_at'))
    local score = F.score(f[3], F.max(NOW - submitted, 0), F.class(f[1]), offer)
    if best == nil or score > best_score or (score == best_score and f[2] < best[2]) then
      best, best_score = f, score
    end
  end
  return best[1], best[2], best[4], false
end

-- The specs of `jobs`, in one read.
function F.specs(jobs)
  local fields = F.sized(#jobs)
  for i = 1, #jobs do
    local id = jobs[i]
    fields[i] = FMT[id] or F.fmtm(id)
  end
  return redis.call('HMGET', P .. 'spec', unpack(fields))
end

-- Appends a live lease's grant again (a repeated claim) to `out`, as a run of its own
-- (F.lease_runs).
function F.grant_again(out, job)
  local rec = F.run(job)
  local cid = tonumber(redis.call('HGET', F.jkey(job), 'class'))
  local n = #out
  out[n + 1], out[n + 2], out[n + 3] = F.class(cid).key, rec.deadline, 1
  out[n + 4], out[n + 5], out[n + 6], out[n + 7] = job, rec.token, rec.attempt,
    F.specs({job})[1]
end

-- The answer to a claim seen before: its grants whose leases still stand. `granted`: the jobs
-- it leased, comma-separated; `at`: its store time. A lease to this machine that started then
-- is the one that claim granted (a machine's next lease of a job needs its next claim), so the
-- start time names the lease as its token would.
function F.repeat_claim(id, granted, idle, at)
  local out = {'claimed', tonumber(idle)}
  for _, text in ipairs(F.split(granted, ',')) do
    local job = tonumber(text)
    local rec = F.run(job)
    if rec and rec.state == 'leased' and rec.machine == id and rec.started_at == at then
      F.grant_again(out, job)
    end
  end
  return out
end

-- How many jobs of class `c` fit `offer` one after another, up to `max`.
function F.fits_in_turn(c, offer, max)
  if #c.models == 0 then
    -- Nothing to download: each job takes the same share of GPUs and disk, so F.offer_after
    -- in a loop comes to a division.
    if c.gpus > 0 and c.mem > offer.mem then return 0 end
    local n = max
    if c.gpus > 0 then n = F.min(n, math.floor(offer.gpus / c.gpus)) end
    if c.disk > 0 then n = F.min(n, math.floor(offer.disk / c.disk)) end
    return n
  end
  local n, left = 0, offer
  while n < max and F.offer_fits(c, left) do
    n = n + 1
    left = F.offer_after(left, c)
  end
  return n
end

-- The offer left after `n` jobs of class `c` that fit in turn (F.fits_in_turn).
function F.offer_after_n(offer, c, n)
  if #c.models == 0 then
    return {gpus = offer.gpus - n * c.gpus, mem = offer.mem, disk = offer.disk - n * c.disk,
      cached = offer.cached, set = offer.set}
  end
  local left = offer
  for _ = 1, n do left = F.offer_after(left, c) end
  return left
end

-- Takes up to `n` heads of class `cid`'s queue in one step. Returns their ids and whether the
-- queue is now empty. The heads are read with their scores, which say how to put them back.
function F.take_heads(cid, n)
  local q = F.qkey(cid)
  local heads = redis.call('ZRANGE', q, '0', F.fmtm(n), 'WITHSCORES')
  local taken = F.min(n, #heads / 2)
  assert(taken > 0, 'take_heads: the queue of a non-empty class is empty')
  local texts, restore = F.sized(taken), {'ZADD', q}
  for i = 1, taken do
    local member = heads[2 * i - 1]
    texts[i] = member
    restore[2 * i + 1], restore[2 * i + 2] = heads[2 * i], member
  end
  F.w_known({restore}, 'ZREMRANGEBYRANK', q, '0', F.fmtm(taken - 1))
  F.count('queued', -taken)
  local emptied = #heads / 2 <= n
  if emptied then F.unmark_nonempty(cid) end
  return F.ids_of(texts, taken), emptied
end

function F.without(list, cid)
  local rest = {}
  for _, cs in ipairs(list) do
    if tonumber(cs) ~= cid then rest[#rest + 1] = cs end
  end
  return rest
end

function F.claim(r)
  local id = tonumber(r.machine)
  local mk = F.mkey(id)
  local m = redis.call('HMGET', mk, 'state', 'lc_seq', 'lc_grants', 'lc_idle', 'wait_seq',
    'profile', 'lc_at', 'last_seen', 'expires', 'leases')
  if not m[1] then return F.err('unknown_machine') end
  if m[1] ~= 'ready' then return F.err('machine_lost') end
  local seq = tonumber(r.seq)
  if m[2] then
    local last = tonumber(m[2])
    if seq == last then return F.repeat_claim(id, m[3], m[4], tonumber(m[7])) end
    if seq < last then return {'claimed', 0} end
  end
  local pid = tonumber(m[6])
  F.leases_known(id, m[10])
  -- The machine's own writes go in one HSET at the end.
  local fields = F.mark_alive(id, pid, m[9])
  -- A promoted job may have woken this very machine: then its wait fields are read afresh.
  -- With nothing delayed there is nothing to look up (the reaper looks every pass anyway).
  local promoted = 0
  if F.counter('delayed') > 0 then promoted = F.promote_due(C.reap_batch) end
  F.stop_waiting(id, promoted == 0 and {m[5], m[6]} or nil)
  local out, granted, idle = F.grant_best(id, pid, r.offer)
  local n = #fields
  fields[n + 1], fields[n + 2] = 'lc_seq', F.fmt(seq)
  fields[n + 3], fields[n + 4] = 'lc_grants', table.concat(granted, ',')
  fields[n + 5], fields[n + 6] = 'lc_idle', idle and '1' or '0'
  fields[n + 7], fields[n + 8] = 'lc_at', NOW_S
  F.take_leases_write(id, fields)
  F.hset_known(mk, {last_seen = m[8], expires = m[9], lc_seq = m[2], lc_grants = m[3],
    lc_idle = m[4], lc_at = m[7], leases = m[10]}, fields)
  if idle then F.start_waiting(id, idle, pid) end
  return out
end

-- Leases machine `id` (of profile `pid`) the best jobs for offer `o`, best first. Returns the
-- reply, the jobs leased (as text) and, if the machine is now idle, the offer it has left.
function F.grant_best(id, pid, o)
  local offer = F.offer(o.gpus, o.mem, o.disk, o.cached)
  local left = offer
  local out = {'claimed', 0}
  local granted = {}
  local nonempty = redis.call('ZRANGE', P .. 'nonempty', 0, -1)
  -- out holds 'claimed', the idle flag, then the grants in runs (F.lease_runs).
  while #granted < C.max_grants do
    local cid, job, alone, only = F.best_class(pid, left, nonempty)
    if not cid then
      -- A machine whose GPUs are all taken now is busy, not idle: it claims again when one
      -- frees up.
      if offer.gpus > 0 and left.gpus == 0 then return out, granted, nil end
      out[2] = 1
      return out, granted, left
    end
    local c = F.class(cid)
    if only then
      -- The only class that fits: its heads go in turn while they fit. No other class can
      -- start to fit as the offer shrinks, so one read takes them all.
      local jobs, emptied =
        F.take_heads(cid, F.fits_in_turn(c, left, C.max_grants - #granted))
      F.runs_load(jobs)
      local specs = F.specs(jobs)
      left = F.offer_after_n(left, c, #jobs)
      F.lease_runs(jobs, id, specs, c.key, out, granted)
      F.count('leased', #jobs)
      if emptied then nonempty = F.without(nonempty, cid) end
    else
      if F.unqueue(job, cid, alone) then nonempty = F.without(nonempty, cid) end
      left = F.offer_after(left, c)
      F.lease_runs({job}, id, F.specs({job}), c.key, out, granted)
      F.count('leased', 1)
    end
  end
  return out, granted, nil
end
