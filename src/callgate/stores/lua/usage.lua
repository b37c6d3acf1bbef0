-- usage: expire what is due, then read every counter in the same step.
-- ARGV[4..] = window key, period, window key, period... Returns
-- {used (flat hash), cooldowns (flat hash), queued records (id, record...), leases, window counts}.
local function main()
  expire_and_promote()
  flush()  -- the counters are read whole below
  local queued = {}
  for number in pairs(queued_numbers()) do
    for _, member in ipairs(redis.call("ZRANGE", P .. "q:" .. number, 0, -1)) do
      local id = string.sub(member, 17)
      local text = redis.call("GET", P .. "r:" .. id)
      if text then
        queued[#queued + 1] = id
        queued[#queued + 1] = text
      end
    end
  end
  local counts = {}
  for i = 4, #ARGV, 2 do
    counts[#counts + 1] = count_since(ARGV[i], NOW - tonumber(ARGV[i + 1]))
  end
  return {redis.call("HGETALL", K_USED), redis.call("HGETALL", K_COOL), queued,
          in_use("#leases"), counts}
end

local out = main()
flush()
return out
