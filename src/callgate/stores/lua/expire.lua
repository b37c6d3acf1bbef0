-- expire: expire due leases and stale queue entries, then promote (kernel.expire).
-- Returns how many leases expired.
local expired = expire_and_promote()
flush()
return expired
