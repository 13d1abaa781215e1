-- Drover's store script. Every request is applied by ONE call of this script, so it is atomic.
-- KEYS[1] = "{ns}:meta" (routes the call to the namespace's shard; every other key shares the
-- "{ns}:" prefix, hence the hash slot). ARGV[1] = the engine config (JSON), ARGV[2] = the
-- request (JSON; ids as decimal strings, so no digit is lost on the way in).
--
-- Numbers: Lua has only doubles. Ids, tokens and times (~1.7e15 us) are exact below 2^53, but
-- tostring() loses digits, so every number that becomes a string goes through F.fmt
-- ('%.0f'); zset members that must sort like numbers are zero-padded (F.pad), because Redis
-- breaks score ties by member bytes.
-- Functions live in one table F: Lua 5.1 allows a function only 60 upvalues.
local F = {}
local P = string.sub(KEYS[1], 1, -5)
local META = KEYS[1]
local C = cjson.decode(ARGV[1])
local NOW = 0
-- NOW as text, formatted once per call: most writes store it.
local NOW_S = '0'
local WAKES = {}
local CLASSES = {}
local PROFILES = {}

function F.fmt(x) return string.format('%.0f', x) end
function F.pad(x) return string.format('%020.0f', x) end
function F.jkey(id) return P .. 'j:' .. F.fmt(id) end
function F.mkey(id) return P .. 'm:' .. F.fmt(id) end
function F.ckey(c) return P .. 'c:' .. F.fmt(c) end
function F.qkey(c) return P .. 'c:' .. F.fmt(c) .. ':q' end
function F.pkey(p) return P .. 'p:' .. F.fmt(p) end
function F.wkey(p) return P .. 'w:' .. F.fmt(p) end
function F.min(a, b) if a < b then return a end return b end
function F.max(a, b) if a > b then return a end return b end

function F.meta(field)
  return tonumber(redis.call('HGET', META, field) or '0')
end

-- Counter changes are gathered here and written once per call (F.flush_counts): a batch
-- changes the same few counters many times.
local PENDING = {}
local PENDING_ORDER = {}

function F.count(field, delta)
  if PENDING[field] == nil then
    PENDING[field] = 0
    PENDING_ORDER[#PENDING_ORDER + 1] = field
  end
  PENDING[field] = PENDING[field] + delta
end

-- Writes the gathered counter changes; call before reading counters and at the end.
function F.flush_counts()
  for _, field in ipairs(PENDING_ORDER) do
    if PENDING[field] ~= 0 then redis.call('HINCRBY', META, field, PENDING[field]) end
    PENDING[field] = nil
  end
  PENDING_ORDER = {}
end

-- The store clock: TIME, or the test clock when a test set one (production never does), and
-- never earlier than the last time any script saw, so time cannot run backwards for the store
-- even when a failover moves it to a host whose clock is behind.
function F.clock()
  local t
  local test = redis.call('GET', P .. 'test:clock')
  if test then
    t = tonumber(test)
  else
    local time = redis.call('TIME')
    t = tonumber(time[1]) * 1000000 + tonumber(time[2])
  end
  local last = F.meta('clock')
  if t < last then return last end
  if t > last then redis.call('HSET', META, 'clock', F.fmt(t)) end
  return t
end

function F.err(code, a, b)
  return {'err', code, a or false, b or false}
end

function F.full(what, limit)
  return F.err('full', what, limit)
end

function F.split(s, sep)
  local out = {}
  if s == nil or s == false or s == '' then return out end
  local start = 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + #sep
  end
end
