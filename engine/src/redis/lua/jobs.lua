-- Jobs: submit, cancel, read, record outcomes, and the transitions they share (mem/jobs.rs).
-- A job is a hash j:<id>: spec (the JSON the client sent), class, state, attempt, token (the
-- newest issued), recorded (the token whose outcome was recorded last), priority,
-- max_attempts, timeout, key, submitted_at, started_at, finished_at, error, pct, msg, and while
-- leased: machine, deadline, attempt_deadline, expiry; while delayed: until.

-- The class of requirements `r` (a Submit's class fields), interned on first sight.
function F.class_of(r)
  local existing = redis.call('HGET', P .. 'classkey', r.key)
  if existing then return tonumber(existing) end
  local n = F.meta('classes')
  if n >= C.max_classes then return nil, F.full('classes', C.max_classes) end
  redis.call('HSET', META, 'classes', F.fmt(n + 1))
  redis.call('HSET', P .. 'classkey', r.key, F.fmt(n))
  redis.call('HSET', F.ckey(n), 'key', r.key, 'gpus', F.fmt(r.gpus), 'mem', F.fmt(r.mem),
    'disk', F.fmt(r.disk), 'models', r.models, 'gpu_models', r.gpu_models,
    'labels', r.labels, 'not_labels', r.not_labels)
  return n
end

function F.live_jobs()
  F.flush_counts()
  local f = redis.call('HMGET', META, 'queued', 'delayed', 'leased', 'finished')
  return (tonumber(f[1]) or 0) + (tonumber(f[2]) or 0) + (tonumber(f[3]) or 0) +
    (tonumber(f[4]) or 0)
end

function F.submit(r)
  if r.key then
    local existing = redis.call('HGET', P .. 'idem', r.key)
    if existing then return {'submitted', tonumber(existing), 0} end
  end
  if F.live_jobs() >= C.max_jobs then return F.full('jobs', C.max_jobs) end
  local cid, refusal = F.class_of(r.class)
  if not cid then return refusal end
  local id = redis.call('HINCRBY', META, 'next_job', 1)
  if r.key then redis.call('HSET', P .. 'idem', r.key, F.fmt(id)) end
  local jk = F.jkey(id)
  redis.call('HSET', jk, 'spec', r.spec, 'class', F.fmt(cid), 'attempt', '0', 'token', '0',
    'priority', F.fmt(r.priority), 'max_attempts', F.fmt(r.max_attempts),
    'timeout', F.fmt(r.timeout), 'submitted_at', F.fmt(NOW))
  if r.key then redis.call('HSET', jk, 'key', r.key) end
  redis.call('ZADD', P .. 'jobs', id, F.pad(id))
  F.count('t_submitted', 1)
  F.enqueue(id, r.priority, cid)
  return {'submitted', id, 1}
end

-- Puts a job at its place in its class queue (priority, then id) and wakes one idle machine.
-- `priority` and `cid` when the caller knows them already.
function F.enqueue(id, priority, cid)
  local jk = F.jkey(id)
  if not cid then
    local f = redis.call('HMGET', jk, 'priority', 'class')
    priority, cid = tonumber(f[1]), tonumber(f[2])
  end
  redis.call('HSET', jk, 'state', 'queued')
  redis.call('ZADD', F.qkey(cid), 100 - priority, F.pad(id))
  redis.call('ZADD', P .. 'nonempty', cid, F.fmt(cid))
  F.count('queued', 1)
  F.wake_one_for(cid)
end

-- `cid`, the job's class, and `alone`, whether it is the only job queued there, when the
-- caller knows them already. Returns whether the class's queue is now empty.
function F.unqueue(id, cid, alone)
  cid = cid or tonumber(redis.call('HGET', F.jkey(id), 'class'))
  local q = F.qkey(cid)
  redis.call('ZREM', q, F.pad(id))
  F.count('queued', -1)
  if alone == nil then alone = redis.call('ZCARD', q) == 0 end
  if alone then
    redis.call('ZREM', P .. 'nonempty', F.fmt(cid))
    return true
  end
  return false
end

-- Takes `id` out of machine `machine`'s lease list, as MemStore's swap_remove does it: the
-- last id takes the removed one's place.
function F.drop_lease(machine, id)
  local list = F.leases_of(machine)
  for i, j in ipairs(list) do
    if j == id then
      list[i] = list[#list]
      list[#list] = nil
      F.leases_changed(machine)
      return
    end
  end
end

-- Removes a job's live lease from every index; the caller decides what comes next. The job
-- keeps its lease fields (machine, deadline, expiry): nothing reads them unless it is leased.
function F.end_lease(id)
  local machine = tonumber(redis.call('HGET', F.jkey(id), 'machine'))
  F.index_lease(id, nil)
  F.drop_lease(machine, id)
  F.count('leased', -1)
end

function F.settle(id, next)
  if next.terminal then return F.finish(id, next.terminal) end
  F.count('t_retries', 1)
  if next.delay == 0 then return F.enqueue(id) end
  local until_ = NOW + next.delay
  redis.call('HSET', F.jkey(id), 'state', 'delayed', 'until', F.fmt(until_))
  redis.call('ZADD', P .. 'delayed', until_, F.pad(id))
  F.count('delayed', 1)
end

-- The lease (if any) was already ended by the caller.
function F.finish(id, state)
  local jk = F.jkey(id)
  redis.call('HSET', jk, 'state', state, 'finished_at', NOW_S)
  redis.call('HDEL', jk, 'pct', 'msg')
  F.count('t_' .. state, 1)
  F.finished_later(NOW_S .. ':' .. F.fmt(id))
  F.count('finished', 1)
end

-- Ends a leased job's attempt from the store's side (expiry, machine lost, over time).
function F.revoke(id, ending)
  local f = redis.call('HMGET', F.jkey(id), 'attempt', 'max_attempts')
  F.end_lease(id)
  F.count('t_revoked', 1)
  local next = F.after_attempt(id, tonumber(f[1]), tonumber(f[2]), ending)
  F.settle(id, next)
  return next
end

function F.cancel(r)
  local id = tonumber(r.job)
  local state = redis.call('HGET', F.jkey(id), 'state')
  if not state then return F.err('unknown_job') end
  if state == 'queued' then
    F.unqueue(id)
  elseif state == 'delayed' then
    redis.call('ZREM', P .. 'delayed', F.pad(id))
    F.count('delayed', -1)
  elseif state == 'leased' then
    F.end_lease(id)
  elseif state == 'cancelled' then
    return {'cancelled', state}
  else
    return F.err('already_finished', state)
  end
  F.finish(id, 'cancelled')
  return {'cancelled', state}
end

-- A job as the API shows it; Rust rebuilds the spec's requirements from the class key.
function F.view(id)
  local jk = F.jkey(id)
  local f = redis.call('HMGET', jk, 'state', 'attempt', 'machine', 'submitted_at',
    'started_at', 'finished_at', 'error', 'pct', 'msg', 'spec', 'class')
  local key = F.class(tonumber(f[11])).key
  -- A job that is not leased keeps its last lease's machine; it is not shown.
  local machine = f[1] == 'leased' and f[3]
  return {id, f[1], f[2], machine, f[4], f[5], f[6], f[7], f[8], f[9], f[10], key}
end

function F.get(r)
  local id = tonumber(r.job)
  if redis.call('EXISTS', F.jkey(id)) == 0 then return F.err('unknown_job') end
  return {'job', F.view(id)}
end

-- After running out of GPU memory a job asks for what it needed, so that its retry only goes
-- where it fits. If no class can be made, it keeps its old one.
function F.raise_gpu_mem(id, needed)
  local jk = F.jkey(id)
  local c = F.class(tonumber(redis.call('HGET', jk, 'class')))
  if needed <= c.mem then return end
  local cid = F.class_of({key = F.fmt(needed) .. '|' .. c.rest, gpus = c.gpus, mem = needed,
    disk = c.disk, models = c.models_json, gpu_models = c.gpu_models_json,
    labels = c.labels_json, not_labels = c.not_labels_json})
  if cid then redis.call('HSET', jk, 'class', F.fmt(cid)) end
end

-- The common case of `complete`, in as few calls as it takes: end the lease and finish the job
-- `succeeded` (end_lease then finish, merged). `progress`: whether the job reported any.
function F.succeed(id, jk, token, machine, progress)
  F.index_lease(id, nil)
  F.drop_lease(machine, id)
  redis.call('HSET', jk, 'recorded', F.fmt(token), 'state', 'succeeded', 'finished_at', NOW_S)
  if progress then redis.call('HDEL', jk, 'pct', 'msg') end
  F.finished_later(NOW_S .. ':' .. F.fmt(id))
  F.count('leased', -1)
  F.count('t_succeeded', 1)
  F.count('finished', 1)
  return {'recorded', 'succeeded'}
end

function F.complete(r)
  local id = tonumber(r.job)
  local token = tonumber(r.token)
  local jk = F.jkey(id)
  local f = redis.call('HMGET', jk, 'state', 'recorded', 'token', 'machine', 'pct')
  if not f[1] then return F.err('unknown_job') end
  if f[2] and tonumber(f[2]) == token then return {'recorded', f[1]} end
  if f[1] ~= 'leased' or tonumber(f[3]) ~= token then return F.err('stale') end
  if r.outcome == 'succeeded' then return F.succeed(id, jk, token, tonumber(f[4]), f[5]) end
  redis.call('HSET', jk, 'recorded', F.fmt(token))
  F.end_lease(id)
  if r.outcome == 'oom' then F.raise_gpu_mem(id, r.needed_gb) end
  redis.call('HSET', jk, 'error', r.error)
  local a = redis.call('HMGET', jk, 'attempt', 'max_attempts')
  F.settle(id, F.after_attempt(id, tonumber(a[1]), tonumber(a[2]), r.outcome))
  return {'recorded', redis.call('HGET', jk, 'state')}
end

function F.release(r)
  local id = tonumber(r.job)
  local token = tonumber(r.token)
  local jk = F.jkey(id)
  local f = redis.call('HMGET', jk, 'state', 'recorded', 'token', 'attempt')
  if not f[1] then return F.err('unknown_job') end
  if f[2] and tonumber(f[2]) == token then return {'released'} end
  if f[1] ~= 'leased' or tonumber(f[3]) ~= token then return F.err('stale') end
  -- A released attempt did not fail: it is not charged.
  redis.call('HSET', jk, 'recorded', F.fmt(token), 'attempt', F.fmt(tonumber(f[4]) - 1))
  F.end_lease(id)
  F.enqueue(id)
  return {'released'}
end

function F.progress(r)
  local id = tonumber(r.job)
  local jk = F.jkey(id)
  local f = redis.call('HMGET', jk, 'state', 'token')
  if not f[1] then return F.err('unknown_job') end
  if f[1] ~= 'leased' or tonumber(f[2]) ~= tonumber(r.token) then return F.err('stale') end
  redis.call('HSET', jk, 'pct', F.fmt(r.percent), 'msg', r.message)
  return {'progress'}
end
