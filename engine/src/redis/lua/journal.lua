-- The journal: what each call did, as ONE entry per call in the stream {ns}:journal, added by
-- the final flush (prelude.lua) so that journal and state never disagree. A failed request
-- leaves no event: its events are dropped with its writes.
--
-- The entry: XADD {ns}:journal MAXLEN = <journal_max_len> <store ms>-* t <store us> e <events>,
-- where <events> is ONE MessagePack array of tagged events, flat: a tag, then that tag's
-- fields (codec/journal.rs defines the format and decodes it; `drover journal export` prints
-- it). Flat, because packing one array in C costs far less than a table per event.

local JOURNAL = {}
-- An age trim the reaper asked for this call: entries before this millisecond go.
local TRIM_BEFORE_MS = nil

function F.journal_reset()
  JOURNAL = F.empty(JOURNAL)
  TRIM_BEFORE_MS = nil
end

-- The reaper trims the journal by age (journal.max_age on the store clock).
function F.journal_trim()
  if C.journal_max_len > 0 and NOW >= C.journal_max_age then
    TRIM_BEFORE_MS = math.floor((NOW - C.journal_max_age) / 1000)
  end
end

-- Appends an event: its tag and fields (numbers or strings; never nil).
function F.journal(tag, a, b, c, d)
  local n = #JOURNAL
  JOURNAL[n + 1] = tag
  if a == nil then return end
  JOURNAL[n + 2] = a
  if b == nil then return end
  JOURNAL[n + 3] = b
  if c == nil then return end
  JOURNAL[n + 4] = c
  if d == nil then return end
  JOURNAL[n + 5] = d
end

-- The journal table itself, for a hot loop that appends runs (F.lease_runs, F.succeed_runs).
function F.journal_table()
  return JOURNAL
end

-- The entry's XADD (nothing when the call changed nothing or the journal is off), then the
-- reaper's age trim.
function F.gather_journal(writes)
  if #JOURNAL > 0 and C.journal_max_len > 0 then
    writes[#writes + 1] = {false, 'XADD', P .. 'journal', 'MAXLEN', '=',
      F.fmt(C.journal_max_len), F.fmt(math.floor(NOW / 1000)) .. '-*', 't', NOW_S, 'e',
      cmsgpack.pack(JOURNAL)}
  end
  if TRIM_BEFORE_MS then
    writes[#writes + 1] = {false, 'XTRIM', P .. 'journal', 'MINID', '=', F.fmt(TRIM_BEFORE_MS)}
  end
end
