-- configure: replace the limits (caps, windows, timers, accounts, digest) in one step.
-- Leases, queues, windows' events and cooldowns are kept. ARGV[1] = the prefix P,
-- ARGV[4..] = field, value, field, value...: "c:<key>" caps and "w:<key>" windows go to
-- P.."caps" (without that prefix), the rest to the limits hash. The only script run
-- without the shared prelude, whose first act is to check the digest this one writes.
local K_LIMITS = KEYS[1]
local K_CAPS = ARGV[1] .. "caps"
redis.call("DEL", K_LIMITS, K_CAPS)
local batches = {[K_LIMITS] = {}, [K_CAPS] = {}}
local function send(key, force)
  local batch = batches[key]
  if #batch > 0 and (force or #batch >= 1000) then
    redis.call("HSET", key, unpack(batch))
    batches[key] = {}
  end
end
for i = 4, #ARGV - 1, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  local kind = string.sub(field, 1, 2)
  local key = K_LIMITS
  if kind == "c:" or kind == "w:" then
    key, field = K_CAPS, string.sub(field, 3)
  end
  local batch = batches[key]
  batch[#batch + 1] = field
  batch[#batch + 1] = value
  send(key, false)
end
send(K_CAPS, true)
send(K_LIMITS, true)
return 1
