-- One request (or one batch, each of its requests applied in order at one store time).
-- Returns {reply, woken machine ids}.

local OPS = {
  submit = F.submit, cancel = F.cancel, get = F.get, register = F.register,
  deregister = F.deregister, heartbeat = F.heartbeat, claim = F.claim,
  complete = F.complete, release = F.release, reap = F.reap, progress = F.progress,
  list_jobs = F.list_jobs, list_machines = F.list_machines, stats = F.stats,
  -- A batch entry that Rust refused before sending (an invalid job): it changes nothing.
  noop = function(r) return {'noop'} end,
}

local function apply(r)
  local op = OPS[r.op]
  if not op then return F.err('bad_request', tostring(r.op)) end
  return op(r)
end

NOW = F.clock()
NOW_S = F.fmt(NOW)
local request = cjson.decode(ARGV[2])
local reply
if request.op == 'batch' then
  reply = {'batch'}
  for _, r in ipairs(request.requests) do reply[#reply + 1] = apply(r) end
else
  reply = apply(request)
end
F.flush_counts()
return {reply, WAKES}
