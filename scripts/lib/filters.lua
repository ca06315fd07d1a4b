-- filters.lua: the text filter chain of the chat app.
--
-- A filter is a function (text, ctx) that returns the text to keep (the same
-- or changed), or nil, code [, message] to refuse the message. `code` is the
-- error code the client gets (short snake_case, e.g. "too_long"), `message`
-- the human-readable explanation (a default is used when it is missing).
-- `ctx` is what the app knows about the message: { conn, nick, room, kind }
-- where kind is "say" or "private".
--
-- A chain is a plain list of filters run in order; extend it with
-- table.insert. The filters below are plain functions or factories that
-- compile their configuration once (a word set, a limit).
--
--   local filters = require "filters"
--   local chain = filters.chain { max_length = 500, words = { "darn" } }
--   table.insert(chain, function(text) return (text:gsub("teh", "the")) end)
--   local text, code, message = filters.run(chain, "  darn it  ", ctx)  --> "*** it"
local _M = {}

local find, sub, gsub, lower = string.find, string.sub, string.gsub, string.lower
local utf8_len, type, ipairs = utf8.len, type, ipairs

-- Every byte that belongs to a word: ASCII letters and digits, and every byte
-- of a non-ASCII UTF-8 sequence (so "café" is one word, never "caf").
local WORD = "[A-Za-z0-9\128-\255]+"
local WORD_ONLY = "^[A-Za-z0-9\128-\255]+$"

-- C0 control characters and DEL, except tab and newline.
local CONTROL = "[%z\1-\8\11-\31\127]"

-- Removes control characters other than tab and newline (a lone "\r" too).
function _M.control(text)
  if find(text, CONTROL) then
    return (gsub(text, CONTROL, ""))
  end
  return text
end

-- Removes leading and trailing ASCII white space. Linear in the length of the
-- text (the classic "^%s*(.-)%s*$" is quadratic on long runs of spaces).
function _M.trim(text)
  local i = find(text, "%S")
  if i == nil then
    return ""
  end
  local _, j = find(text, "^.*%S", i)
  if i == 1 and j == #text then
    return text
  end
  return sub(text, i, j)
end

-- Refuses a text that is empty (run it after trim: blank is empty).
function _M.not_empty(text)
  if text == "" then
    return nil, "empty", "the message is empty"
  end
  return text
end

-- A filter that refuses texts longer than `max` characters (UTF-8 code points).
function _M.max_length(max)
  assert(math.type(max) == "integer" and max > 0, "max_length: the limit must be a positive integer")
  return function(text)
    if #text <= max then
      return text -- never more characters than bytes
    end
    local n = utf8_len(text)
    if n == nil then
      return nil, "bad_text", "the text is not valid UTF-8"
    end
    if n > max then
      return nil, "too_long", ("the message is %d characters long; the limit is %d"):format(n, max)
    end
    return text
  end
end

-- Checks a word list: returns true, or nil and what is wrong.
function _M.check_words(words)
  if type(words) ~= "table" then
    return nil, "must be a list of words"
  end
  for i, w in ipairs(words) do
    if type(w) ~= "string" or not find(w, WORD_ONLY) then
      return nil, ("word %d must be letters and digits only (got %q)"):format(i, tostring(w))
    end
  end
  return true
end

-- A filter that replaces every whole word of `words` by `mask` (default
-- "***"), ignoring ASCII case: "Darn" and "DARN" match "darn", "darning"
-- does not. Returns nil when the list is empty (nothing to add to a chain).
function _M.mask_words(words, mask)
  assert(_M.check_words(words))
  mask = mask or "***"
  local set, any = {}, false
  for _, w in ipairs(words) do
    set[lower(w)] = mask
    any = true
  end
  if not any then
    return nil
  end
  local function replace(word)
    return set[lower(word)] -- nil keeps the word
  end
  return function(text)
    return (gsub(text, WORD, replace))
  end
end

-- The default chain for a configuration { max_length = n, words = {...}, mask = "***" }:
-- control, trim, not_empty, max_length, then mask_words when there are words.
function _M.chain(cfg)
  cfg = cfg or {}
  local chain = { _M.control, _M.trim, _M.not_empty, _M.max_length(cfg.max_length or 2000) }
  local mask = _M.mask_words(cfg.words or {}, cfg.mask)
  if mask ~= nil then
    chain[#chain + 1] = mask
  end
  return chain
end

-- Runs text through every filter of chain in order. Returns the text, or
-- nil, code, message from the first filter that refused it. A filter that
-- returns something other than a string or nil is a bug: it raises.
function _M.run(chain, text, ctx)
  for i = 1, #chain do
    local out, code, message = chain[i](text, ctx)
    if out == nil then
      return nil, code or "filtered", message or "the message was refused by a filter"
    end
    if type(out) ~= "string" then
      error(("filter %d returned a %s (want a string, or nil and a code)"):format(i, type(out)), 2)
    end
    text = out
  end
  return text
end

return _M
