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

-- The index of the batch request being applied (1 for a lone request), for dispatch to drop
-- the one that raised.
local CURRENT = nil

local function apply(r)
  local op = OPS[r.op]
  if not op then return F.err('bad_request', tostring(r.op)) end
  if not HOT[r.op] then F.flush() end
  local reply = op(r)
  -- A step of its own, so a request whose writes all wait for the flush can fail too (tests).
  F.step('end of', P .. r.op)
  return reply
end

-- One attempt at the whole call. `failed`: requests that raised in an earlier attempt (index ->
-- message), answered `failed` without being applied. Returns the packed reply, or an error
-- reply for a namespace the call must not touch.
local function call(keys, args, request, failed)
  local refused = F.begin(keys, args)
  if refused then return redis.error_reply(refused) end
  local requests = request.op == 'batch' and request.requests or {request}
  local replies = {}
  if request.op == 'batch' then F.prefetch_runs(requests) end
  for i, r in ipairs(requests) do
    CURRENT = i
    replies[i] = failed[i] and F.err('failed', failed[i]) or apply(r)
  end
  CURRENT = nil
  F.flush_final()
  local reply = replies[1]
  if request.op == 'batch' then
    reply = {'batch'}
    for i = 1, #replies do reply[i + 1] = replies[i] end
  end
  -- Packed here, in C: Redis's own conversion probes every nested table for err, ok, map...
  return cmsgpack.pack({reply, WAKES})
end

local function error_text(e)
  if type(e) == 'table' then return tostring(e.err or e[1]) end
  return tostring(e)
end

-- scripts.rs names the function after the library's hash, so that engines of two versions can
-- share a server. A request that raises is undone (prelude.lua's write discipline): a lone
-- request is answered `failed`; a batch is applied again without it. A batch that raised
-- outside its requests fails as a whole.
redis.register_function('DROVER_FUNCTION', function(keys, args)
  F.start_fcall()
  local request = cmsgpack.unpack(args[2])
  local failed = {}
  while true do
    local ok, result = pcall(call, keys, args, request, failed)
    if ok then return result end
    local at = CURRENT
    CURRENT = nil
    F.undo()
    F.forget_namespace_caches()
    if request.op ~= 'batch' then
      return cmsgpack.pack({F.err('failed', error_text(result)), {}})
    end
    if not at or failed[at] then return redis.error_reply('FAILED ' .. error_text(result)) end
    failed[at] = error_text(result)
  end
end)
