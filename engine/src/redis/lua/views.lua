-- What the API reads (mem/views.rs): job and machine listings and the store's statistics.

function F.list_jobs(r)
  local limit = F.min(r.limit, C.max_list)
  local out = {'jobs'}
  if limit == 0 then return out end
  -- `after` is a number, or the digits of one beyond 2^53 (codec/encode.rs).
  local after = type(r.after) == 'number' and F.fmt(r.after) or r.after
  local from = after and ('(' .. after) or '-inf'
  local offset = 0
  -- A scan in id order: listings are for people and dashboards, not the hot path.
  while #out - 1 < limit do
    local ids = redis.call('ZRANGEBYSCORE', P .. 'jobs', from, '+inf', 'LIMIT', offset, 256)
    if #ids == 0 then break end
    offset = offset + #ids
    local jobs = {}
    for i, m in ipairs(ids) do jobs[i] = tonumber(m) end
    F.runs_load(jobs)
    for _, job in ipairs(jobs) do
      if not r.state or F.run(job).state == r.state then
        out[#out + 1] = F.view(job)
        if #out - 1 >= limit then break end
      end
    end
  end
  return out
end

function F.machine_view(id)
  local f = redis.call('HMGET', F.mkey(id), 'name', 'pool', 'state', 'gpus', 'gpu_model',
    'mem', 'cost', 'leases', 'wait_seq', 'registered_at', 'last_seen', 'profile')
  local leases = #F.decode_list(f[8]) / 2
  -- Its kinds are its profile's (JSON as Rust wrote it; none before kinds were matched).
  local kinds = redis.call('HGET', F.pkey(tonumber(f[12])), 'kinds') or '[]'
  return {id, f[1], f[2], f[3], f[4], f[5], f[6], f[7], leases, f[9] and 1 or 0, f[10], f[11],
    kinds}
end

function F.list_machines(r)
  local limit = F.min(r.limit, C.max_list)
  local out = {'machines'}
  if limit == 0 then return out end
  for _, m in ipairs(redis.call('ZRANGE', P .. 'machines', 0, limit - 1)) do
    out[#out + 1] = F.machine_view(tonumber(m))
  end
  return out
end

-- What a machine cost (texts as stored): registered to last seen, at its price per hour.
function F.spend(registered_at, last_seen, cost)
  local secs = F.max(tonumber(last_seen) - tonumber(registered_at), 0) / 1e6
  return secs / 3600.0 * tonumber(cost)
end

function F.stats(r)
  -- dispatch.lua flushed before this request: the counters in meta are current.
  local counts = {F.counter('queued'), F.counter('delayed'), F.counter('leased'),
    F.counter('finished')}
  local totals = redis.call('HMGET', META, 't_dead', 't_cancelled', 't_timed_out',
    't_unworkable', 't_retries', 't_revoked')
  table.insert(totals, 1, F.counter('t_succeeded'))
  table.insert(totals, 1, F.counter('t_submitted'))
  local classes = {}
  for _, cs in ipairs(redis.call('ZRANGE', P .. 'nonempty', 0, -1)) do
    local cid = tonumber(cs)
    classes[#classes + 1] = {cid, F.class(cid).key, redis.call('ZCARD', F.qkey(cid))}
  end
  local by_state = {}
  local states = {}
  -- Forgotten machines first, then in machine id order, with the same float operations as
  -- MemStore, so the two agree to the last bit.
  local spend = tonumber(redis.call('HGET', META, 'spend_forgotten') or '0')
  for _, m in ipairs(redis.call('ZRANGE', P .. 'machines', 0, -1)) do
    local f = redis.call('HMGET', F.mkey(tonumber(m)), 'state', 'registered_at', 'last_seen',
      'cost')
    if not by_state[f[1]] then
      by_state[f[1]] = 0
      states[#states + 1] = f[1]
    end
    by_state[f[1]] = by_state[f[1]] + 1
    spend = spend + F.spend(f[2], f[3], f[4])
  end
  local machines = {}
  for _, s in ipairs(states) do
    machines[#machines + 1] = s
    machines[#machines + 1] = by_state[s]
  end
  return {'stats', counts, classes, machines, totals, string.format('%.17g', spend)}
end
