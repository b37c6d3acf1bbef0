-- release: free a lease or cancel a queued call, then promote (kernel.release); idempotent.
-- ARGV[4] = call id, ARGV[5] = account (absent: any account). Returns {released, cancelled}.
local function main()
  housekeeping()
  local r = get(ARGV[5], ARGV[4])
  local released, cancelled = 0, 0
  if r ~= nil and r.s == "leased" then
    end_lease(r, "released")
    released = 1
  elseif r ~= nil and r.s == "queued" then
    r.s = "ended"
    r.eb = "cancelled"
    r.u = NOW + ENDED
    r.c = nil
    put(r)
    cancelled = 1
  end
  promote()
  return {released, cancelled}
end

local out = main()
flush()
return out
