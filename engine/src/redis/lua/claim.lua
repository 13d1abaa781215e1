-- Claims and wake-ups (mem/claim.rs): the best fitting class head for an offer, leased in one
-- step; idle machines wait in a line per profile (w:<profile>, by wait seq) and a new job wakes
-- the longest-waiting one whose last offer fits it, by pushing onto its list wake:<machine>.

-- Waiting machines looked at per profile before a wake-up gives up on that profile.
local WAKE_SCAN = 32

function F.start_waiting(id, offer)
  local seq = redis.call('HINCRBY', META, 'seq', 1)
  local mk = F.mkey(id)
  local pid = tonumber(redis.call('HGET', mk, 'profile'))
  redis.call('HSET', mk, 'wait_seq', F.fmt(seq), 'wait_offer', F.offer_string(offer))
  redis.call('ZADD', F.wkey(pid), seq, F.pad(id))
  redis.call('ZADD', P .. 'waitp', pid, F.fmt(pid))
  -- A wake-up left from before this wait is stale: the claim just looked at every queue.
  redis.call('DEL', P .. 'wake:' .. F.fmt(id))
end

function F.stop_waiting(id)
  local mk = F.mkey(id)
  local f = redis.call('HMGET', mk, 'wait_seq', 'profile')
  if not f[1] then return end
  local pid = tonumber(f[2])
  local line = F.wkey(pid)
  redis.call('ZREM', line, F.pad(id))
  if redis.call('ZCARD', line) == 0 then redis.call('ZREM', P .. 'waitp', F.fmt(pid)) end
  redis.call('HDEL', mk, 'wait_seq', 'wait_offer')
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
  redis.call('DEL', wake)
  redis.call('RPUSH', wake, '1')
  redis.call('PEXPIRE', wake, C.wake_ttl_ms)
  WAKES[#WAKES + 1] = chosen
end

-- `nonempty`: the non-empty class ids (as ZRANGE returns them), read once per claim. Returns
-- the best class, its head job, and whether that head is alone in its queue. With a single
-- fitting class there is nothing to rank, so its head's age is not even read.
function F.best_class(pid, offer, nonempty)
  local fitting = {}
  for _, cs in ipairs(nonempty) do
    local cid = tonumber(cs)
    if F.allows(cid, pid) then
      local c = F.class(cid)
      if F.offer_fits(c, offer) then
        -- The head and whether anything stands behind it (then taking it empties the class).
        local head = redis.call('ZRANGE', F.qkey(cid), 0, 1, 'WITHSCORES')
        fitting[#fitting + 1] = {cid, tonumber(head[1]), 100 - tonumber(head[2]), #head == 2}
      end
    end
  end
  if #fitting <= 1 then
    local only = fitting[1]
    if not only then return nil end
    return only[1], only[2], only[4]
  end
  local best, best_score
  for _, f in ipairs(fitting) do
    local submitted = tonumber(redis.call('HGET', F.jkey(f[2]), 'submitted_at'))
    local score = F.score(f[3], F.max(NOW - submitted, 0), F.class(f[1]), offer)
    if best == nil or score > best_score or (score == best_score and f[2] < best[2]) then
      best, best_score = f, score
    end
  end
  return best[1], best[2], best[4]
end

function F.grant(job)
  local v = F.view(job)
  local f = redis.call('HMGET', F.jkey(job), 'token', 'deadline')
  -- {job, token, attempt, deadline, spec, class key}
  return {job, f[1], v[3], f[2], v[11], v[12]}
end

-- Leases `job` (of class `cid`) to `machine`, appending it to `leases` (the machine's lease
-- list, written back once by the caller). Returns the grant.
function F.lease(job, machine, cid, leases)
  local jk = F.jkey(job)
  local f = redis.call('HMGET', jk, 'attempt', 'token', 'timeout', 'spec')
  local attempt = tonumber(f[1]) + 1
  -- Tokens follow the store clock as well as counting up, so a lease granted after a restart
  -- that lost writes still outranks every lease granted before it.
  local token = F.max(tonumber(f[2]) + 1, NOW)
  local deadline = NOW + C.lease_ttl
  local attempt_deadline = NOW + tonumber(f[3])
  local expiry = F.min(deadline, attempt_deadline)
  local token_s, deadline_s, attempt_s = F.fmt(token), F.fmt(deadline), F.fmt(attempt)
  redis.call('HSET', jk, 'state', 'leased', 'attempt', attempt_s, 'token', token_s,
    'machine', F.fmt(machine), 'deadline', deadline_s,
    'attempt_deadline', F.fmt(attempt_deadline), 'expiry', F.fmt(expiry),
    'started_at', NOW_S)
  redis.call('ZADD', P .. 'leases', expiry, F.pad(job))
  leases[#leases + 1] = job
  F.count('leased', 1)
  -- {job, token, attempt, deadline, spec, class key}
  return {job, token_s, attempt_s, deadline_s, f[4], F.class(cid).key}
end

-- The answer to a claim seen before: its grants whose leases still stand.
function F.repeat_claim(id, granted, idle)
  local out = {'claimed', tonumber(idle)}
  for _, pair in ipairs(F.split(granted, ',')) do
    local jt = F.split(pair, ':')
    local job, token = tonumber(jt[1]), tonumber(jt[2])
    local f = redis.call('HMGET', F.jkey(job), 'state', 'machine', 'token')
    if f[1] == 'leased' and tonumber(f[2]) == id and tonumber(f[3]) == token then
      out[#out + 1] = F.grant(job)
    end
  end
  return out
end

function F.claim(r)
  local id = tonumber(r.machine)
  local refusal = F.ready(id)
  if refusal then return refusal end
  local mk = F.mkey(id)
  local seq = tonumber(r.seq)
  local lc = redis.call('HMGET', mk, 'lc_seq', 'lc_grants', 'lc_idle')
  if lc[1] then
    local last = tonumber(lc[1])
    if seq == last then return F.repeat_claim(id, lc[2], lc[3]) end
    if seq < last then return {'claimed', 0} end
  end
  F.touch(id)
  F.promote_due(C.reap_batch)
  F.stop_waiting(id)
  local o = r.offer
  local offer = F.offer(o.gpus, o.mem, o.disk, o.cached)
  local left = offer
  local pid = tonumber(redis.call('HGET', mk, 'profile'))
  local out = {'claimed', 0}
  local granted = {}
  local idle = false
  local leases = F.leases_of(mk)
  local nonempty = redis.call('ZRANGE', P .. 'nonempty', 0, -1)
  while #granted < C.max_grants do
    local cid, job, alone = F.best_class(pid, left, nonempty)
    if not cid then
      -- A machine whose GPUs are all taken now is busy, not idle: it claims again when one
      -- frees up.
      idle = not (offer.gpus > 0 and left.gpus == 0)
      break
    end
    if F.unqueue(job, cid, alone) then
      -- The class just emptied: drop it from this claim's copy of the list too.
      local rest = {}
      for _, cs in ipairs(nonempty) do
        if tonumber(cs) ~= cid then rest[#rest + 1] = cs end
      end
      nonempty = rest
    end
    left = F.offer_after(left, F.class(cid))
    local g = F.lease(job, id, cid, leases)
    out[#out + 1] = g
    granted[#granted + 1] = F.fmt(job) .. ':' .. g[2]
  end
  if idle then out[2] = 1 end
  if #granted > 0 then F.set_leases(mk, leases) end
  redis.call('HSET', mk, 'lc_seq', F.fmt(seq), 'lc_grants', table.concat(granted, ','),
    'lc_idle', idle and '1' or '0')
  if idle then F.start_waiting(id, left) end
  return out
end
