-- The reaper's pass (mem/reap.rs): release due retries, declare silent machines lost, revoke
-- expired and over-time leases, judge unworkable jobs, forget old finished jobs. Bounded.

-- Moves due delayed jobs to their queues; returns how many.
function F.promote_due(max)
  if max <= 0 then return 0 end
  local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', F.fmt(NOW), 'LIMIT', 0, max)
  for _, m in ipairs(due) do
    F.w('ZREM', P .. 'delayed', m)
    F.count('delayed', -1)
    F.enqueue(tonumber(m))
  end
  return #due
end

-- The first member of zset `key` if its score is due (<= now), else nil.
function F.first_due(key)
  -- A revoke just before may have writes pending.
  F.flush()
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #head == 0 or tonumber(head[2]) > NOW then return nil end
  return tonumber(head[1])
end

-- The live lease that expired first (earliest expiry, then lowest job id, as MemStore orders
-- them), or nil if none has expired. {ns}:lexp holds each machine's earliest expiry, so the
-- first machine holds it, unless machines tie on that expiry: then each is asked.
function F.first_expired_lease()
  F.flush()
  local head = redis.call('ZRANGE', P .. 'lexp', 0, 0, 'WITHSCORES')
  if #head == 0 or tonumber(head[2]) > NOW then return nil end
  local expiry = tonumber(head[2])
  local tied = redis.call('ZRANGEBYSCORE', P .. 'lexp', head[2], head[2])
  local first
  for _, m in ipairs(tied) do
    local list = F.leases_of(tonumber(m))
    for i = 1, #list, 2 do
      if list[i + 1] == expiry and (first == nil or list[i] < first) then first = list[i] end
    end
  end
  assert(first, 'first_expired_lease: lexp names a machine without that expiry')
  return first
end

function F.judge_unworkable(budget, report)
  local since = NOW - C.unworkable_after
  if since < 0 then return budget end
  local seen = {}
  local any = false
  for i = 0, F.meta('profiles') - 1 do
    local last = redis.call('HGET', F.pkey(i), 'last_seen')
    if last and tonumber(last) >= since then
      seen[#seen + 1] = i
      any = true
    end
  end
  -- An empty fleet is an outage, not a verdict on the jobs.
  if not any then return budget end
  for _, cs in ipairs(redis.call('ZRANGE', P .. 'nonempty', 0, -1)) do
    if budget == 0 then return budget end
    local cid = tonumber(cs)
    local workable = false
    for _, pid in ipairs(seen) do
      if F.allows(cid, pid) then
        workable = true
        break
      end
    end
    if not workable then
      local victims = {}
      for _, m in ipairs(redis.call('ZRANGE', F.qkey(cid), 0, -1)) do
        if #victims >= budget then break end
        local job = tonumber(m)
        if tonumber(redis.call('HGET', F.jkey(job), 'submitted_at')) <= since then
          victims[#victims + 1] = job
        end
      end
      -- The reason, as Rust words it: JobError::unworkable (its start is in the config) and
      -- class::first_unmet.
      local error = #victims > 0 and C.unworkable_error .. F.first_unmet(F.class(cid), seen)
      for _, job in ipairs(victims) do
        F.unqueue(job)
        F.wk('HSET', F.jkey(job), 'error', error)
        F.finish(job, 'unworkable')
        report.unworkable = report.unworkable + 1
        budget = budget - 1
      end
    end
  end
  return budget
end

-- Forgets finished jobs past their retention, oldest first, up to `budget`. Each entry of the
-- finished list is `finished_at:job,job,...` (F.finished_later); one cut short by the budget
-- keeps the jobs it has left.
function F.purge_finished(budget, report)
  F.flush()
  while budget > 0 do
    local head = redis.call('LINDEX', P .. 'finished', 0)
    if not head then break end
    local f = F.split(head, ':')
    if tonumber(f[1]) + C.retention > NOW then break end
    local jobs = F.split(f[2], ',')
    local n = F.min(#jobs, budget)
    for i = 1, n do F.forget_job(tonumber(jobs[i]), report) end
    budget = budget - n
    if n == #jobs then
      F.w('LPOP', P .. 'finished')
    else
      F.w('LSET', P .. 'finished', 0, f[1] .. ':' .. table.concat(jobs, ',', n + 1))
    end
  end
  return budget
end

-- Forgets machines that left (lost or deregistered, holding no lease) over `retention` ago,
-- oldest first, up to `budget` ({ns}:mleft orders them by when they left): endless churn keeps
-- the registry the size of the fleet. What they cost stays in the stats' spend
-- (meta.spend_forgotten, summed in the order they are forgotten, as MemStore does).
function F.forget_departed(budget, report)
  while budget > 0 do
    local head = redis.call('ZRANGE', P .. 'mleft', 0, 0, 'WITHSCORES')
    if #head == 0 or tonumber(head[2]) + C.retention > NOW then break end
    local id = tonumber(head[1])
    local mk = F.mkey(id)
    local f = redis.call('HMGET', mk, 'name', 'registered_at', 'last_seen', 'cost')
    local spent = tonumber(redis.call('HGET', META, 'spend_forgotten') or '0') +
      F.spend(f[2], f[3], f[4])
    F.wk('HSET', META, 'spend_forgotten', string.format('%.17g', spent),
      'machines', F.fmt(F.meta('machines') - 1))
    F.w('HDEL', P .. 'mname', f[1])
    F.w('ZREM', P .. 'machines', head[1])
    F.w('ZREM', P .. 'mleft', head[1])
    F.wk('DEL', mk)
    report.forgotten = report.forgotten + 1
    budget = budget - 1
  end
  return budget
end

-- Forgets finished job `job` (F.purge_finished).
function F.forget_job(job, report)
  local jk = F.jkey(job)
  local key = redis.call('HGET', jk, 'key')
  if key then F.w('HDEL', P .. 'idem', key) end
  F.wk('DEL', jk)
  F.w('HDEL', P .. 'spec', F.fmt(job))
  F.run_forget(job)
  F.w('ZREM', P .. 'jobs', F.pad(job))
  F.count('finished', -1)
  report.purged = report.purged + 1
end

function F.reap(r)
  local report = {promoted = 0, lost = 0, requeued = 0, dead = 0, timed_out = 0,
    unworkable = 0, purged = 0, forgotten = 0}
  local budget = r.max
  F.journal_trim()
  report.promoted = F.promote_due(budget)
  budget = budget - report.promoted
  while budget > 0 do
    local machine = F.first_due(P .. 'mexp')
    if not machine then break end
    local requeued, ended = F.retire(machine, 'lost')
    report.lost = report.lost + 1
    report.requeued = report.requeued + requeued
    report.dead = report.dead + ended
    budget = F.max(budget - (1 + requeued + ended), 0)
  end
  while budget > 0 do
    local job = F.first_expired_lease()
    if not job then break end
    local overtime = NOW >= F.run(job).attempt_deadline
    local next = F.revoke(job, overtime and 'overtime' or 'abandoned',
      overtime and 'overtime' or 'expired')
    if not next.terminal then
      report.requeued = report.requeued + 1
    elseif next.terminal == 'timed_out' then
      report.timed_out = report.timed_out + 1
    else
      report.dead = report.dead + 1
    end
    budget = budget - 1
  end
  budget = F.judge_unworkable(budget, report)
  budget = F.purge_finished(budget, report)
  budget = F.forget_departed(budget, report)
  return {'reaped', report.promoted, report.lost, report.requeued, report.dead,
    report.timed_out, report.unworkable, report.purged, budget == 0 and 1 or 0,
    report.forgotten}
end
