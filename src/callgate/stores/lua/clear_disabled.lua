-- clear_disabled: on reload, forget disabled keys and cooldowns that are over, then promote.
local function main()
  local flat = redis.call("HGETALL", K_COOL)
  for i = 1, #flat, 2 do
    local untl = tonumber(flat[i + 1])
    if untl == math.huge or untl <= NOW then
      redis.call("HDEL", K_COOL, flat[i])
    end
  end
  cooling = nil
  promote()
  return 1
end

local out = main()
flush()
return out
