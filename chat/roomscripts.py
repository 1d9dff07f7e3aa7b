"""The room state's Lua scripts, one per atomic step; each touches the keys of one room (one hash tag)."""

# The room's send step as one atomic script, so the order of seqs in a room is the order of
# publishes: idempotency by client_id, the room's next seq, the recent buffer and its id index
# (trimmed together), and the publish on the room's channel in the channels-redis pub/sub wire
# format (a msgpack map on `<prefix>__group__<group>`). Every key and the channel carry the room's
# hash tag, so it runs on the room's shard; the user's token bucket is taken before it, on the
# user's shard (chat/limits.py). Each published message carries `prev`, the seq before it in the
# room ("-1" when the counter was just re-seeded), so an instance can tell when it missed one.
SEND_SCRIPT = """
local entry = redis.call('GET', KEYS[2])
if entry then return {'dup', entry} end
local prev = redis.call('GET', KEYS[1])
if not prev and ARGV[5] == '' then return {'seed', ''} end
if not prev then
  redis.call('SET', KEYS[1], ARGV[5])
  prev = '-1'
end
redis.call('INCR', KEYS[1])
local seq = redis.call('GET', KEYS[1])  -- as a string: Lua would print a large number as a float
local text = ARGV[1] .. seq .. ARGV[2]
local keep = -(tonumber(ARGV[6]) + 1)
redis.call('SET', KEYS[2], ARGV[3] .. ':' .. seq, 'EX', tonumber(ARGV[4]))
redis.call('ZADD', KEYS[3], seq, text)
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, keep)
redis.call('ZADD', KEYS[5], seq, ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, keep)
redis.call('PUBLISH', KEYS[4], cmsgpack.pack({type='room.frame', room=ARGV[7], text=text, seq=seq, prev=prev}))
return {'ok', seq}
"""

# KEYS: the room's id index, its recent buffer. ARGV: the message id. The buffered frame, if any.
FIND_SCRIPT = """
local seq = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not seq then return false end
local rows = redis.call('ZRANGEBYSCORE', KEYS[2], seq, seq)
return rows[1] or false
"""

# KEYS: the user's typing state in the room. ARGV: 1 for a start or 0 for a stop, the throttle (ms).
# At most one start and one stop relayed per throttle, and a stop only after a relayed start.
TYPING_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local every = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'start', 'stop', 'shown')
if ARGV[1] == '1' then
  if state[1] and now - tonumber(state[1]) < every then return 0 end
  redis.call('HSET', KEYS[1], 'start', now, 'shown', 1)
else
  if state[3] ~= '1' or (state[2] and now - tonumber(state[2]) < every) then return 0 end
  redis.call('HSET', KEYS[1], 'stop', now, 'shown', 0)
end
redis.call('PEXPIRE', KEYS[1], every + 60000)
return 1
"""

REPLACE_SCRIPT = """
if redis.call('ZCOUNT', KEYS[1], ARGV[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: the room's online users, the user's connections. ARGV: username, conn_id, expiry, now, ttl.
PRESENCE_JOIN_SCRIPT = """
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[1])
if was and tonumber(was) > tonumber(ARGV[4]) then return 0 end
return 1
"""

# KEYS as above. ARGV: username, conn_id, now. Returns 1 when the user has no live connection left.
PRESENCE_LEAVE_SCRIPT = """
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[2])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""
