-- history.lua: a bounded FIFO of the last messages of a room, in a plain
-- table (so it can live in moonwire.state and survive reloads). The items
-- sit at integer keys first..last, so table.concat(h, ",", h.first, h.last)
-- joins them without a copy.
--
--   local history = require "history"
--   local h = history.new()
--   history.push(h, '{"type":"say",...}', 50)
--   history.items(h)  --> { oldest, ..., newest }
local _M = {}

function _M.new()
  return { first = 1, last = 0 }
end

-- How many items h holds.
function _M.count(h)
  return h.last - h.first + 1
end

-- Drops the oldest items until at most cap remain.
function _M.trim(h, cap)
  local first, last = h.first, h.last
  while last - first + 1 > cap do
    h[first] = nil
    first = first + 1
  end
  if first > last then
    first, last = 1, 0 -- empty: start over, so the keys stay small
  end
  h.first, h.last = first, last
end

-- Appends item, then keeps the newest cap items (cap 0 keeps none).
function _M.push(h, item, cap)
  h.last = h.last + 1
  h[h.last] = item
  _M.trim(h, cap)
end

-- The items, oldest first, as a new list.
function _M.items(h)
  return table.move(h, h.first, h.last, 1, {})
end

-- The items joined by sep, oldest first ("" when empty).
function _M.concat(h, sep)
  return table.concat(h, sep, h.first, h.last)
end

return _M
