-- The machine registry (mem/machines.rs). A machine is a hash m:<id>: name, pool, gpus,
-- gpu_model, mem, disk, cost, profile, state (ready | lost | gone), expires, leases (job,
-- expiry pairs in MemStore's order, packed doubles (F.encode_list); see F.leases_of),
-- registered_at, last_seen; lc_seq/lc_grants/lc_idle/lc_at (its last claim: lc_grants lists
-- the jobs it leased, comma-separated; lc_at is its store time); wait_seq/wait_offer while
-- idle. mname maps names to ids; mexp orders machines by expiry.

function F.profile_of(r)
  local existing = redis.call('HGET', P .. 'profkey', r.profile_key)
  if existing then return tonumber(existing) end
  local n = F.meta('profiles')
  F.wk('HSET', META, 'profiles', F.fmt(n + 1))
  F.w('HSET', P .. 'profkey', r.profile_key, F.fmt(n))
  F.wk('HSET', F.pkey(n), 'gpus', F.fmt(r.gpus), 'model', r.gpu_model,
    'mem', F.fmt(r.mem), 'disk', F.fmt(r.disk), 'labels', r.labels, 'kinds', r.kinds)
  return n
end

-- Nil if the machine is registered and ready, else the refusal.
function F.ready(id)
  local state = redis.call('HGET', F.mkey(id), 'state')
  if not state then return F.err('unknown_machine') end
  if state ~= 'ready' then return F.err('machine_lost') end
  return nil
end

function F.register(r)
  local pid = F.profile_of(r)
  local expires = NOW + C.machine_ttl
  local existing = redis.call('HGET', P .. 'mname', r.name)
  local id
  if existing then
    id = tonumber(existing)
    -- Its place in an idle line belongs to its old profile.
    F.stop_waiting(id)
    local mk = F.mkey(id)
    -- Back from lost or gone: present again, not to be forgotten.
    F.w('ZREM', P .. 'mleft', F.pad(id))
    F.wk('HSET', mk, 'pool', r.pool, 'gpus', F.fmt(r.gpus), 'gpu_model', r.gpu_model,
      'mem', F.fmt(r.mem), 'disk', F.fmt(r.disk), 'cost', r.cost, 'profile', F.fmt(pid),
      'state', 'ready', 'expires', F.fmt(expires), 'last_seen', F.fmt(NOW))
    F.wk('HDEL', mk, 'lc_seq', 'lc_grants', 'lc_idle', 'lc_at')
  else
    -- Machines that left do not count: they are forgotten after `retention`.
    local n = F.meta('machines')
    if n - redis.call('ZCARD', P .. 'mleft') >= C.max_machines then
      return F.full('machines', C.max_machines)
    end
    -- Ids follow the store clock as well as counting up, so that a store that lost its data
    -- never hands a live agent's old id to another machine.
    id = F.max(F.meta('last_machine') + 1, NOW)
    F.wk('HSET', META, 'last_machine', F.fmt(id), 'machines', F.fmt(n + 1))
    F.w('HSET', P .. 'mname', r.name, F.fmt(id))
    F.wk('HSET', F.mkey(id), 'name', r.name, 'pool', r.pool, 'gpus', F.fmt(r.gpus),
      'gpu_model', r.gpu_model, 'mem', F.fmt(r.mem), 'disk', F.fmt(r.disk), 'cost', r.cost,
      'profile', F.fmt(pid), 'state', 'ready', 'expires', F.fmt(expires), 'leases', '',
      'registered_at', F.fmt(NOW), 'last_seen', F.fmt(NOW))
    F.w('ZADD', P .. 'machines', id, F.pad(id))
  end
  F.w('ZADD', P .. 'mexp', expires, F.pad(id))
  F.profile_seen(pid)
  F.journal('registered', id, r.name, r.pool)
  return {'registered', id}
end

-- The machine showed it is alive: push back its expiry.
function F.touch(id)
  local mk = F.mkey(id)
  local f = redis.call('HMGET', mk, 'profile', 'last_seen', 'expires')
  F.hset_known(mk, {last_seen = f[2], expires = f[3]}, F.mark_alive(id, tonumber(f[1]), f[3]))
end

-- F.touch but for the machine's own fields, which it returns ({field, value, ...}) for the
-- caller to write with its own. `was`: its expiry before (as stored), for the undo.
function F.mark_alive(id, pid, was)
  local expires = F.fmt(NOW + C.machine_ttl)
  local member = F.pad(id)
  local undo = was and {'ZADD', P .. 'mexp', was, member} or {'ZREM', P .. 'mexp', member}
  F.w_known({undo}, 'ZADD', P .. 'mexp', expires, member)
  F.profile_seen(pid)
  return {'last_seen', NOW_S, 'expires', expires}
end

-- Extends one lease (returns its new deadline), or 0: no longer the holder's. A lease past
-- its job's timeout is ended here, as the reaper would.
function F.renew(machine, job, token)
  local rec = F.run(job)
  if not rec or rec.state ~= 'leased' or rec.machine ~= machine or rec.token ~= token then
    return 0
  end
  local attempt_deadline = rec.attempt_deadline
  if NOW >= attempt_deadline then
    F.revoke(job, 'overtime', 'overtime')
    return 0
  end
  local deadline = NOW + C.lease_ttl
  F.leases_of(machine)[F.lease_positions(machine)[job] + 1] = F.min(deadline, attempt_deadline)
  F.leases_changed(machine)
  rec.deadline = deadline
  F.run_changed(job)
  return deadline
end

function F.heartbeat(r)
  local id = tonumber(r.machine)
  local refusal = F.ready(id)
  if refusal then return refusal end
  if #r.leases > C.max_leases_per_heartbeat then
    return F.full('leases per heartbeat', C.max_leases_per_heartbeat)
  end
  F.touch(id)
  local statuses = {}
  for i, lease in ipairs(r.leases) do
    statuses[i] = F.renew(id, tonumber(lease[1]), tonumber(lease[2]))
  end
  return {'heartbeat', statuses}
end

-- Marks a machine lost or gone and revokes its leases, charging their attempts. Returns how
-- many jobs were requeued and how many ended.
function F.retire(id, state)
  F.stop_waiting(id)
  local mk = F.mkey(id)
  F.w('ZREM', P .. 'mexp', F.pad(id))
  F.wk('HSET', mk, 'state', state)
  F.w('ZADD', P .. 'mleft', NOW, F.pad(id))
  local leases = F.leases_of(id)
  F.set_leases(id, {})
  F.journal(state == 'lost' and 'lost' or 'deregistered', id)
  local reason = state == 'lost' and 'lost' or 'gone'
  local requeued, ended = 0, 0
  for i = 1, #leases, 2 do
    if F.revoke(leases[i], 'abandoned', reason).terminal then
      ended = ended + 1
    else
      requeued = requeued + 1
    end
  end
  return requeued, ended
end

function F.deregister(r)
  local id = tonumber(r.machine)
  local state = redis.call('HGET', F.mkey(id), 'state')
  if not state then return F.err('unknown_machine') end
  if state == 'gone' then return {'deregistered', 0} end
  local requeued, ended = F.retire(id, 'gone')
  return {'deregistered', requeued + ended}
end
