-- renew: push a lease's expiry to now + its TTL, never past its max_end (kernel.renew).
-- ARGV[4] = call id, ARGV[5] = TTL in seconds ("" keeps the lease's), ARGV[6] = account
-- (absent: any account). Returns {status, {record id, record} or {}}.
local function main()
  housekeeping()
  promote()
  local r = get(ARGV[6], ARGV[4])
  if r == nil then
    return {"unknown", false}
  end
  if r.s == "leased" then
    local ttl = tonumber(ARGV[5])
    if ttl ~= nil and ttl ~= 0 then
      r.t = ttl
    end
    r.e = math.min(NOW + r.t, r.m)
    put(r)
    return {"renewed", shown(r)}
  end
  if r.s == "queued" then
    return {"queued", shown(r)}
  end
  if r.s == "ended" and r.eb == "expired" then
    return {"expired", shown(r)}
  end
  return {"ended", shown(r)}
end

local out = main()
flush()
return out
