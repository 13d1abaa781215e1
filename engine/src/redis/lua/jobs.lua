-- Jobs: submit, cancel, read, record outcomes, and the transitions they share (mem/jobs.rs).
-- A job is its run record (run.lua: state, attempt, tokens, lease), its spec (the JSON the
-- client sent) in the hash {ns}:spec, and a hash j:<id> of what seldom changes: class,
-- priority, max_attempts, key, submitted_at, error, pct, msg, result (what it returned).

-- The class of requirements `r` (a Submit's class fields), interned on first sight.
function F.class_of(r)
  local existing = redis.call('HGET', P .. 'classkey', r.key)
  if existing then return tonumber(existing) end
  local n = F.meta('classes')
  if n >= C.max_classes then return nil, F.full('classes', C.max_classes) end
  F.wk('HSET', META, 'classes', F.fmt(n + 1))
  F.w('HSET', P .. 'classkey', r.key, F.fmt(n))
  F.wk('HSET', F.ckey(n), 'key', r.key, 'gpus', F.fmt(r.gpus), 'mem', F.fmt(r.mem),
    'disk', F.fmt(r.disk), 'models', r.models, 'gpu_models', r.gpu_models,
    'labels', r.labels, 'not_labels', r.not_labels, 'kind', r.kind)
  return n
end

-- Successes not yet folded into the counters (F.count_successes) move jobs from leased to
-- finished: the sum is the same.
function F.live_jobs()
  return F.counter('queued') + F.counter('delayed') + F.counter('leased') + F.counter('finished')
end

function F.submit(r)
  if r.key then
    local existing = redis.call('HGET', P .. 'idem', r.key)
    if existing then return {'submitted', tonumber(existing), 0} end
  end
  if F.live_jobs() >= C.max_jobs then return F.full('jobs', C.max_jobs) end
  local cid, refusal = F.class_of(r.class)
  if not cid then return refusal end
  local id = tonumber(redis.call('HGET', META, 'next_job') or '0') + 1
  if id >= F.queue_id_limit() then return F.full('job ids', F.queue_id_limit()) end
  F.incr(META, 'next_job')
  local ids = F.fmt(id)
  if r.key then F.w_known({{'HDEL', P .. 'idem', r.key}}, 'HSET', P .. 'idem', r.key, ids) end
  -- The id is new (next_job only grows): nothing of the job exists yet to put back.
  local jk = F.jkey(id)
  local fields = {'class', F.fmt(cid), 'priority', F.fmt(r.priority), 'max_attempts',
    F.fmt(r.max_attempts), 'submitted_at', NOW_S}
  if r.key then fields[9], fields[10] = 'key', r.key end
  F.w_known({{'DEL', jk}}, 'HSET', jk, unpack(fields))
  F.w_known({{'HDEL', P .. 'spec', ids}}, 'HSET', P .. 'spec', ids, r.spec)
  F.run_new(id, r.timeout)
  F.w_known({{'ZREM', P .. 'jobs', F.pad(id)}}, 'ZADD', P .. 'jobs', ids, F.pad(id))
  F.count('t_submitted', 1)
  F.journal('submitted', id, r.priority, cid, r.class.key)
  F.enqueue(id, r.priority, cid)
  return {'submitted', id, 1}
end

-- Puts a job at its place in its class queue (priority, then id) and wakes one idle machine.
-- `priority` and `cid` when the caller knows them already.
function F.enqueue(id, priority, cid)
  if not cid then
    local f = redis.call('HMGET', F.jkey(id), 'priority', 'class')
    priority, cid = tonumber(f[1]), tonumber(f[2])
  end
  if not F.run_queued(id) then
    F.run(id).state = 'queued'
    F.run_changed(id)
  end
  -- A job being enqueued is in no queue: putting back is taking it out.
  local q = F.qkey(cid)
  F.w_known({{'ZREM', q, F.fmtm(id)}}, 'ZADD', q, F.fmt(F.queue_score(priority, id)), F.fmtm(id))
  F.w('ZADD', P .. 'nonempty', cid, F.fmt(cid))
  F.count('queued', 1)
  F.wake_one_for(cid)
end

-- `cid`, the job's class, and `alone`, whether it is the only job queued there, when the
-- caller knows them already. Returns whether the class's queue is now empty.
function F.unqueue(id, cid, alone)
  cid = cid or tonumber(redis.call('HGET', F.jkey(id), 'class'))
  local q = F.qkey(cid)
  F.w('ZREM', q, F.fmtm(id))
  F.count('queued', -1)
  if alone == nil then alone = redis.call('ZCARD', q) == 0 end
  if alone then
    F.unmark_nonempty(cid)
    return true
  end
  return false
end

-- Class `cid`'s queue is empty now. Its score in {ns}:nonempty is its id, always.
function F.unmark_nonempty(cid)
  local text = F.fmt(cid)
  F.w_known({{'ZADD', P .. 'nonempty', text, text}}, 'ZREM', P .. 'nonempty', text)
end

-- Removes a job's live lease from every index; the caller decides what comes next. The job
-- keeps its lease fields (machine, deadline, expiry): nothing reads them unless it is leased.
function F.end_lease(id)
  F.drop_lease(F.run(id).machine, id)
  F.count('leased', -1)
end

function F.settle(id, next)
  if next.terminal then return F.finish(id, next.terminal) end
  F.count('t_retries', 1)
  F.journal('requeued', id, next.delay == 0 and 0 or NOW + next.delay)
  if next.delay == 0 then return F.enqueue(id) end
  F.run(id).state = 'delayed'
  F.run_changed(id)
  -- A job being delayed is not in the delayed set yet.
  F.w_known({{'ZREM', P .. 'delayed', F.pad(id)}}, 'ZADD', P .. 'delayed', NOW + next.delay,
    F.pad(id))
  F.count('delayed', 1)
end

-- The lease (if any) was already ended by the caller.
function F.finish(id, state)
  local rec = F.run(id)
  rec.state, rec.finished_at = state, NOW
  F.run_changed(id)
  F.clear_progress(id, rec)
  F.count('t_' .. state, 1)
  -- The event is the state's name; a success was journalled by F.succeed_runs.
  if state ~= 'succeeded' then F.journal(state, id) end
  F.finished_later(id)
  F.count('finished', 1)
end

-- Ends a leased job's attempt from the store's side (expiry, machine lost, over time).
-- `reason`: the journal's (store/journal.rs RevokeReason).
function F.revoke(id, ending, reason)
  F.end_lease(id)
  F.journal('revoked', id, F.run(id).token, reason)
  F.count('t_revoked', 1)
  local next = F.after_attempt(id, F.run(id).attempt, F.max_attempts(id), ending)
  F.settle(id, next)
  return next
end

function F.cancel(r)
  local id = tonumber(r.job)
  local rec = F.run(id)
  if not rec then return F.err('unknown_job') end
  local state = rec.state
  if state == 'queued' then
    F.unqueue(id)
  elseif state == 'delayed' then
    F.w('ZREM', P .. 'delayed', F.pad(id))
    F.count('delayed', -1)
  elseif state == 'leased' then
    F.end_lease(id)
    F.journal('revoked', id, rec.token, 'cancelled')
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
  local rec = F.run(id)
  local f = redis.call('HMGET', F.jkey(id), 'submitted_at', 'error', 'pct', 'msg', 'class',
    'result')
  local spec = redis.call('HGET', P .. 'spec', F.fmt(id))
  local key = F.class(tonumber(f[5])).key
  -- A job that is not leased keeps its last lease's machine; it is not shown.
  local leased = rec.state == 'leased'
  return {id, rec.state, rec.attempt, leased and rec.machine, f[1],
    F.time_or_false(rec.started_at), F.time_or_false(rec.finished_at), f[2], f[3], f[4], spec,
    key, f[6]}
end

function F.get(r)
  local id = tonumber(r.job)
  if not F.run(id) then return F.err('unknown_job') end
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
    labels = c.labels_json, not_labels = c.not_labels_json, kind = c.kind})
  if cid then F.wk('HSET', jk, 'class', F.fmt(cid)) end
end

function F.max_attempts(id)
  return tonumber(redis.call('HGET', F.jkey(id), 'max_attempts'))
end

-- Progress belongs to an attempt: a finished job shows none.
function F.clear_progress(id, rec)
  if rec.progress ~= 1 then return end
  F.forget_progress(id)
  rec.progress = 0
end

function F.forget_progress(id)
  F.wk('HDEL', F.jkey(id), 'pct', 'msg')
end

-- Records the success of job `id`'s live lease `token`; returns whether there was one.
function F.succeed(id, token)
  return F.succeed_runs({id, token}, 1) == nil
end

-- Consecutive successful completes of a batch, as the codec gathers them (codec/encode.rs):
-- `leases` is job, token, job, token... Answers their number if every success was recorded (the
-- usual case, and one value to pack where a list took one per job), else 1 for each success
-- recorded and the reply `complete` gives for each other.
function F.succeed_all(r)
  local leases = r.leases
  local stop = F.succeed_runs(leases, 1)
  if not stop then return #leases / 2 end
  local out = {}
  while stop do
    for _ = #out + 1, (stop - 1) / 2 do out[#out + 1] = 1 end
    local job, token = tonumber(leases[stop]), tonumber(leases[stop + 1])
    out[#out + 1] = F.complete({job = job, token = token, outcome = 'succeeded'})
    stop = F.succeed_runs(leases, stop + 2)
  end
  for _ = #out + 1, #leases / 2 do out[#out + 1] = 1 end
  return out
end

-- The record of a live lease `token` on job `id`; or nil and the reply that ends the request
-- (an unknown job, a stale token), or nil alone for a repeat of the recorded outcome.
function F.live_lease(id, token)
  local rec = F.run(id)
  if not rec then return nil, F.err('unknown_job') end
  if rec.recorded ~= 0 and rec.recorded == token then return nil end
  if rec.state ~= 'leased' or rec.token ~= token then return nil, F.err('stale') end
  return rec
end

function F.complete(r)
  local id = tonumber(r.job)
  local token = tonumber(r.token)
  local succeeded = r.outcome == 'succeeded'
  if succeeded and F.succeed(id, token) then
    -- Rust bounded the result (request.rs, check_result); it goes with the job's hash.
    if r.result then
      F.wk('HSET', F.jkey(id), 'result', r.result)
      F.journal('result', id, r.result)
    end
    return {'recorded', 'succeeded'}
  end
  local rec, refusal = F.live_lease(id, token)
  if not rec then return refusal or {'recorded', F.run(id).state} end
  assert(not succeeded, 'complete: F.succeed refused a live lease')
  rec.recorded = token
  F.run_changed(id)
  F.end_lease(id)
  F.journal('failed', id, token, r.outcome)
  if r.outcome == 'oom' then F.raise_gpu_mem(id, r.needed_gb) end
  F.wk('HSET', F.jkey(id), 'error', r.error)
  F.settle(id, F.after_attempt(id, rec.attempt, F.max_attempts(id), r.outcome))
  return {'recorded', rec.state}
end

function F.release(r)
  local id = tonumber(r.job)
  local token = tonumber(r.token)
  local rec, refusal = F.live_lease(id, token)
  if not rec then return refusal or {'released'} end
  -- A released attempt did not fail: it is not charged.
  rec.recorded, rec.attempt = token, rec.attempt - 1
  F.run_changed(id)
  F.end_lease(id)
  F.journal('released', id, token)
  F.enqueue(id)
  return {'released'}
end

function F.progress(r)
  local id = tonumber(r.job)
  local rec = F.run(id)
  if not rec then return F.err('unknown_job') end
  if rec.state ~= 'leased' or rec.token ~= tonumber(r.token) then
    return F.err('stale')
  end
  F.wk('HSET', F.jkey(id), 'pct', F.fmt(r.percent), 'msg', r.message)
  F.journal('progress', id, rec.token, r.percent, r.message)
  rec.progress = 1
  F.run_changed(id)
  return {'progress'}
end
