-- tidemark: record a projection checkpoint in Redis (monotonic max) and announce it.
--
-- Run it with EVAL (or EVALSHA after SCRIPT LOAD) AFTER the projector has committed
-- its read model (see the README, "Redis: many gateways"):
--
--   KEYS[1]   the projection's checkpoint hash: <prefix>:cp:{<projection>}
--             e.g. tidemark:cp:{user-view}
--   ARGV[1]   the channel: <prefix>:checkpoints, e.g. tidemark:checkpoints
--   ARGV[2]   the projection name, e.g. user-view
--   ARGV[3]   the instance name, or * for every instance of the projection
--   ARGV[4..] log, position pairs: users 1234 orders 88
--             (position: the last position PROCESSED, a decimal u64)
--
-- Each field <instance>/<log> of the hash is raised to the given position, never
-- lowered. Positions are compared as decimal strings (length, then lexicographic):
-- they are u64 and Lua numbers are doubles, exact only up to 2^53.
-- When any field was raised, publishes "<projection>\n<instance>\n<log>=<pos>,..."
-- (the raised fields) on the channel. Returns the number of fields raised.
-- Invalid arguments are refused as a whole (nothing is written).

local MAX_U64 = '18446744073709551615'

-- The canonical decimal form of a u64 (no leading zeros), or nil.
local function canonical(text)
  if type(text) ~= 'string' or not string.match(text, '^%d+$') then
    return nil
  end
  local trimmed = string.gsub(text, '^0+', '')
  if trimmed == '' then
    trimmed = '0'
  end
  if #trimmed > #MAX_U64 or (#trimmed == #MAX_U64 and trimmed > MAX_U64) then
    return nil
  end
  return trimmed
end

-- a > b for canonical decimal strings.
local function greater(a, b)
  if #a ~= #b then
    return #a > #b
  end
  return a > b
end

local nargs = #ARGV
if nargs < 5 or (nargs - 3) % 2 ~= 0 then
  return redis.error_reply('ERR tidemark checkpoint: expected ARGV channel, projection, instance, then log/position pairs')
end
local channel, projection, instance = ARGV[1], ARGV[2], ARGV[3]
if instance == '' or string.find(instance, '/', 1, true) or string.find(instance, '\n', 1, true) then
  return redis.error_reply('ERR tidemark checkpoint: instance must be non-empty, without / or newline (* = every instance)')
end
if string.find(projection, '\n', 1, true) then
  return redis.error_reply('ERR tidemark checkpoint: projection must not contain a newline')
end

local updates = {}
for i = 4, nargs, 2 do
  local log, position = ARGV[i], canonical(ARGV[i + 1])
  if log == '' or string.find(log, '[,=\n]') then
    return redis.error_reply('ERR tidemark checkpoint: invalid log name ' .. log)
  end
  if position == nil then
    return redis.error_reply('ERR tidemark checkpoint: position of ' .. log .. ' is not a decimal u64')
  end
  updates[#updates + 1] = { log, position }
end

local raised = {}
for _, update in ipairs(updates) do
  local field = instance .. '/' .. update[1]
  local current = redis.call('HGET', KEYS[1], field)
  current = current and canonical(current)
  if not current or greater(update[2], current) then
    redis.call('HSET', KEYS[1], field, update[2])
    raised[#raised + 1] = update[1] .. '=' .. update[2]
  end
end

if #raised > 0 then
  redis.call('PUBLISH', channel, projection .. '\n' .. instance .. '\n' .. table.concat(raised, ','))
end
return #raised
