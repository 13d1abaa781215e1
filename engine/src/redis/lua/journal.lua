-- The journal: what each call did, as ONE entry per call in the stream {ns}:journal, added by
-- the final flush (prelude.lua) so that journal and state never disagree. A failed request
-- leaves no event: its events are dropped with its writes.
--
-- The entry: XADD {ns}:journal MAXLEN = <journal_max_len> <store ms>-* t <store us> e <events>,
-- where <events> is ONE MessagePack array of tagged events, flat: a tag, then that tag's
-- fields (codec/journal.rs defines the format and decodes it; `drover journal export` prints
-- it). Flat, because packing one array in C costs far less than a table per event.

local JOURNAL = {}

function F.journal_reset()
  JOURNAL = F.empty(JOURNAL)
end

-- Appends an event: its tag and fields (numbers or strings; never nil).
function F.journal(tag, a, b, c)
  local n = #JOURNAL
  JOURNAL[n + 1] = tag
  if a == nil then return end
  JOURNAL[n + 2] = a
  if b == nil then return end
  JOURNAL[n + 3] = b
  if c == nil then return end
  JOURNAL[n + 4] = c
end

-- The journal table itself, for a hot loop that appends runs (F.lease_runs, F.succeed_runs).
function F.journal_table()
  return JOURNAL
end

-- The entry's XADD, or nothing when the call changed nothing or the journal is off.
function F.gather_journal(writes)
  if #JOURNAL == 0 or C.journal_max_len == 0 then return end
  writes[#writes + 1] = {false, 'XADD', P .. 'journal', 'MAXLEN', '=',
    F.fmt(C.journal_max_len), F.fmt(math.floor(NOW / 1000)) .. '-*', 't', NOW_S, 'e',
    cmsgpack.pack(JOURNAL)}
end
