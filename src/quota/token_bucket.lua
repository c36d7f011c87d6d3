-- One request from a key's token bucket, atomically, timed by the Redis server's clock.
-- KEYS[1]: the bucket (hash: tokens, at = last update in microseconds)
-- ARGV[1]: rate (tokens per second), ARGV[2]: burst (bucket size)
-- Returns {allowed (0/1), whole tokens left, microseconds until one token (0 if allowed)}.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
-- A clock that went backwards (failover to another Redis) refills nothing.
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000000)
  at = now
end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%d', at))
-- Idle past a full refill, a missing bucket is the same as a full one.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, math.floor(tokens), wait}
