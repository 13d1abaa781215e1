-- Fit, policy and backoff: ports of core::labels, core::class, core::policy, core::backoff and
-- core::lifecycle. They must agree with the Rust to the bit; the conformance suite checks.

-- A class as the scripts need it, decoded once (CLASSES, see prelude.lua).
function F.class(cid)
  local c = CLASSES[cid]
  if c then return c end
  local f = redis.call('HMGET', F.ckey(cid), 'key', 'gpus', 'mem', 'disk', 'models',
    'gpu_models', 'labels', 'not_labels', 'kind')
  local key = f[1]
  c = {
    id = cid, key = key,
    rest = string.sub(key, (string.find(key, '|', 1, true) or 0) + 1),
    gpus = tonumber(f[2]), mem = tonumber(f[3]), disk = tonumber(f[4]),
    models_json = f[5], gpu_models_json = f[6], labels_json = f[7], not_labels_json = f[8],
    models = cjson.decode(f[5]), gpu_models = cjson.decode(f[6]),
    labels = cjson.decode(f[7]), not_labels = cjson.decode(f[8]),
    -- Classes made before kinds were matched have none: they go anywhere.
    kind = f[9] or '',
  }
  CLASSES[cid] = c
  return c
end

function F.profile(pid)
  local p = PROFILES[pid]
  if p then return p end
  local f = redis.call('HMGET', F.pkey(pid), 'gpus', 'model', 'mem', 'disk', 'labels', 'kinds')
  local kinds = {}
  for _, k in ipairs(cjson.decode(f[6] or '[]')) do kinds[k] = true end
  p = {gpus = tonumber(f[1]), model = f[2], mem = tonumber(f[3]), disk = tonumber(f[4]),
    labels = cjson.decode(f[5]), kinds = kinds, any_kind = next(kinds) == nil}
  PROFILES[pid] = p
  return p
end

-- GB to download for `models` (a list of catalog ids) minus those in `cached` (a set or nil).
function F.download(models, cached)
  local gb = 0
  for _, m in ipairs(models) do
    if not (cached and cached[m]) then gb = gb + (C.models[m + 1] or 0) end
  end
  return gb
end

-- labels::label_met: a list is a subset, a number a minimum, anything else equal.
function F.label_met(need, have)
  if have == nil then return false end
  local tn, th = type(need), type(have)
  if tn == 'table' and th == 'table' then
    local set = {}
    for _, v in ipairs(have) do set[v] = true end
    for _, v in ipairs(need) do
      if not set[v] then return false end
    end
    return true
  end
  if tn == 'number' and th == 'number' then return have >= need end
  if tn ~= th or tn == 'table' then return false end
  return need == have
end

function F.labels_match(required, refused, machine)
  for k, need in pairs(required) do
    if not F.label_met(need, machine[k]) then return false end
  end
  for k, need in pairs(refused) do
    if F.label_met(need, machine[k]) then return false end
  end
  return true
end

-- class::profile_allows
function F.profile_allows(c, p)
  local model_ok = #c.gpu_models == 0
  for _, m in ipairs(c.gpu_models) do
    if m == p.model then model_ok = true end
  end
  local gpus_ok = c.gpus <= p.gpus and (c.gpus == 0 or c.mem <= p.mem)
  local disk_ok = c.disk + F.download(c.models, nil) <= p.disk
  -- model::Profile::runs_kind
  local kind_ok = c.kind == '' or p.any_kind or p.kinds[c.kind] == true
  return model_ok and gpus_ok and disk_ok and kind_ok and
    F.labels_match(c.labels, c.not_labels, p.labels)
end

-- class::first_unmet: the first requirement no profile of `pids` meets, worded as Rust does.
function F.first_unmet(c, pids)
  local profiles = {}
  for i, pid in ipairs(pids) do profiles[i] = F.profile(pid) end
  local function kind_ok(p) return c.kind == '' or p.any_kind or p.kinds[c.kind] == true end
  local function model_ok(p)
    if #c.gpu_models == 0 then return true end
    for _, m in ipairs(c.gpu_models) do
      if m == p.model then return true end
    end
    return false
  end
  local any_kind, most_gpus, most_mem, most_disk, big_model = false, 0, 0, 0, false
  for _, p in ipairs(profiles) do
    any_kind = any_kind or kind_ok(p)
    most_gpus = F.max(most_gpus, p.gpus)
    most_disk = F.max(most_disk, p.disk)
    if p.gpus >= c.gpus and model_ok(p) then
      big_model = true
      most_mem = F.max(most_mem, p.mem)
    end
  end
  if not any_kind then return "runs jobs of kind '" .. c.kind .. "'" end
  if c.gpus > most_gpus then
    return 'has ' .. F.fmt(c.gpus) .. ' GPUs (the largest has ' .. F.fmt(most_gpus) .. ')'
  end
  if c.gpus > 0 and not big_model then
    return 'with ' .. F.fmt(c.gpus) .. ' GPUs has a GPU model among ' ..
      table.concat(c.gpu_models, ', ')
  end
  if c.gpus > 0 and c.mem > most_mem then
    return 'with ' .. F.fmt(c.gpus) .. ' GPUs has ' .. F.fmt(c.mem) ..
      ' GB per GPU (the most is ' .. F.fmt(most_mem) .. ')'
  end
  local disk = c.disk + F.download(c.models, nil)
  if disk > most_disk then
    return 'has ' .. F.fmt(disk) .. ' GB of disk for its scratch and models (the most is ' ..
      F.fmt(most_disk) .. ')'
  end
  return 'meets its labels and all its requirements at once'
end

-- Judged once per (class, profile) and kept, as MemStore does (in ALLOWS, see prelude.lua, and
-- in c:<class>:allows for other servers' caches).
function F.allows(cid, pid)
  local memo = cid .. ':' .. pid
  local known = ALLOWS[memo]
  if known ~= nil then return known end
  local key = F.ckey(cid) .. ':allows'
  local v = redis.call('HGET', key, F.fmt(pid))
  if not v then
    v = F.profile_allows(F.class(cid), F.profile(pid)) and '2' or '1'
    F.w('HSET', key, F.fmt(pid), v)
  end
  ALLOWS[memo] = v == '2'
  return v == '2'
end

-- An offer: {gpus, mem, disk, cached = list of model ids, set = the same as a set}.
function F.offer(gpus, mem, disk, cached)
  local set = {}
  for _, m in ipairs(cached) do set[m] = true end
  return {gpus = gpus, mem = mem, disk = disk, cached = cached, set = set}
end

function F.offer_string(o)
  local ids = {}
  for _, m in ipairs(o.cached) do ids[#ids + 1] = F.fmt(m) end
  return F.fmt(o.gpus) .. ',' .. F.fmt(o.mem) .. ',' .. F.fmt(o.disk) .. ',' ..
    table.concat(ids, ';')
end

function F.parse_offer(s)
  local f = F.split(s, ',')
  local cached = {}
  for _, m in ipairs(F.split(f[4], ';')) do cached[#cached + 1] = tonumber(m) end
  return F.offer(tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), cached)
end

-- class::offer_fits
function F.offer_fits(c, o)
  local gpus_ok = c.gpus <= o.gpus and (c.gpus == 0 or c.mem <= o.mem)
  return gpus_ok and c.disk + F.download(c.models, o.set) <= o.disk
end

-- class::offer_after
function F.offer_after(o, c)
  local dl = F.download(c.models, o.set)
  if #c.models == 0 then
    -- Nothing new gets cached: share the model list and set (offers are never edited).
    return {gpus = F.max(o.gpus - c.gpus, 0), mem = o.mem, disk = F.max(o.disk - (c.disk + dl), 0),
      cached = o.cached, set = o.set}
  end
  local cached = {}
  for _, m in ipairs(o.cached) do cached[#cached + 1] = m end
  for _, m in ipairs(c.models) do
    if not o.set[m] then cached[#cached + 1] = m end
  end
  return F.offer(F.max(o.gpus - c.gpus, 0), o.mem, F.max(o.disk - (c.disk + dl), 0), cached)
end

-- policy::score, in integers (exact in doubles at these sizes).
function F.score(priority, waited, c, o)
  local minutes = math.floor(waited / 60000000)
  local aging = F.min(minutes * C.aging_per_minute, C.aging_cap)
  local dl = F.download(c.models, o.set)
  local unused = 0
  if c.gpus ~= 0 then unused = F.max(o.mem - c.mem, 0) end
  return priority * 1000 + aging - dl * C.download_penalty - unused * C.unused_mem_penalty
end

-- backoff::retry_jitter, MurmurHash3's finalizer in 32-bit arithmetic.
function F.u32(x)
  if x < 0 then return x + 4294967296 end
  return x
end

function F.mul32(a, b)
  local alo = a % 65536
  local ahi = (a - alo) / 65536
  local blo = b % 65536
  local bhi = (b - blo) / 65536
  local mid = (ahi * blo + alo * bhi) % 65536
  return (alo * blo + mid * 65536) % 4294967296
end

function F.jitter(job, attempt)
  local h = F.u32(bit.bxor(job % 4294967296, F.mul32(attempt, 2654435769)))
  h = F.u32(bit.bxor(h, bit.rshift(h, 16)))
  h = F.mul32(h, 2246822507)
  h = F.u32(bit.bxor(h, bit.rshift(h, 13)))
  h = F.mul32(h, 3266489909)
  h = F.u32(bit.bxor(h, bit.rshift(h, 16)))
  return h
end

-- backoff::delay with equal jitter.
function F.delay(base, max, attempt, random)
  local doublings = F.min(F.max(attempt - 1, 0), 40)
  local full = F.min(base * 2 ^ doublings, max)
  local half = math.floor(full / 2)
  return half + math.fmod(random, full - half + 1)
end

-- lifecycle::after_attempt. `ending`: fatal | error | oom | disk_full | timed_out (reported),
-- abandoned | overtime (the store's own judgement). Returns {terminal = state} or {delay = us}.
function F.after_attempt(job, attempt, max_attempts, ending)
  if ending == 'fatal' then return {terminal = 'dead'} end
  local exhausted = 'dead'
  if ending == 'timed_out' or ending == 'overtime' then exhausted = 'timed_out' end
  if attempt >= max_attempts then return {terminal = exhausted} end
  return {delay = F.delay(C.backoff_base, C.backoff_max, attempt, F.jitter(job, attempt))}
end
