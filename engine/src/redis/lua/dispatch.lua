-- One request (or one batch, each of its requests applied in order at one store time).
-- Returns {reply, woken machine ids}, packed (codec/msgpack.rs).

local OPS = {
  submit = F.submit, cancel = F.cancel, get = F.get, register = F.register,
  deregister = F.deregister, heartbeat = F.heartbeat, claim = F.claim,
  complete = F.complete, succeed_all = F.succeed_all, release = F.release, reap = F.reap,
  progress = F.progress, list_jobs = F.list_jobs, list_machines = F.list_machines, stats = F.stats,
  -- A batch entry that Rust refused before sending (an invalid job): it changes nothing.
  noop = function(r) return {'noop'} end,
}

-- The requests that read none of the writes F.flush makes; any other flushes first.
local HOT = {
  submit = true, cancel = true, get = true, heartbeat = true, claim = true, complete = true,
  succeed_all = true, release = true, progress = true, noop = true,
}

-- Reads, in one step, the run records a batch's requests will read one by one.
function F.prefetch_runs(requests)
  local ids = {}
  for _, r in ipairs(requests) do
    if r.job then ids[#ids + 1] = tonumber(r.job) end
    if r.op == 'succeed_all' then
      -- Numbers already (codec/encode.rs).
      local leases = r.leases
      for i = 1, #leases, 2 do ids[#ids + 1] = leases[i] end
    end
    if r.op == 'heartbeat' then
      for _, lease in ipairs(r.leases) do ids[#ids + 1] = tonumber(lease[1]) end
    end
  end
  F.runs_load(ids)
end

local function apply(r)
  local op = OPS[r.op]
  if not op then return F.err('bad_request', tostring(r.op)) end
  if not HOT[r.op] then F.flush() end
  return op(r)
end

-- scripts.rs names the function after the library's hash, so that engines of two versions can
-- share a server.
redis.register_function('DROVER_FUNCTION', function(keys, args)
  local refused = F.begin(keys, args)
  if refused then return redis.error_reply(refused) end
  local request = cmsgpack.unpack(args[2])
  local reply
  if request.op == 'batch' then
    F.prefetch_runs(request.requests)
    reply = {'batch'}
    for _, r in ipairs(request.requests) do reply[#reply + 1] = apply(r) end
  else
    reply = apply(request)
  end
  F.flush()
  -- Packed here, in C: Redis's own conversion probes every nested table for err, ok, map...
  return cmsgpack.pack({reply, WAKES})
end)
