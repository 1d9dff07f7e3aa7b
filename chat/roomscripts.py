"""The room state's Lua scripts, one per atomic step; each touches the keys of one room (one hash tag),
and the send step its user's send bucket when that sits on the same shard."""

from chat.limits import BUCKET_LUA

# Whether the shard's state is this deployment's and was written on the master that runs now:
# its identity key names the deployment (chat.models.Deployment) and the master_replid it was
# written under. A promoted replica has a new replid; a Redis holding another database's state
# names another deployment. Either way the caller replaces the identity (IDENTITY_SCRIPT) with a
# new generation, and every room whose epoch began under an older one starts a new epoch.
SHARD_CHECK_LUA = """
local function shard_generation(identity_key, deployment)
  local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
  local identity = redis.call('HMGET', identity_key, 'deployment', 'replid', 'gen')
  if identity[1] ~= deployment or identity[2] ~= replid then return false end
  return identity[3]
end
"""

# KEYS: the shard's identity. ARGV: the deployment, a new generation. Compare-and-set, so the
# instances that find the identity stale at once agree on one new generation. Returns it.
IDENTITY_SCRIPT = SHARD_CHECK_LUA + """
local current = shard_generation(KEYS[1], ARGV[1])
if current then return current end
local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
redis.call('HSET', KEYS[1], 'deployment', ARGV[1], 'replid', replid, 'gen', ARGV[2])
return ARGV[2]
"""

# A room's idempotency entries (chat/idempotency.py): `index` (the room's `cidx` hash) holds, per
# time bucket j of `width` seconds, the first (f<j>) and current (s<j>) number of hashes the bucket
# is spread over and its count (n<j>); an entry sits in hash `<base><j>:<s>:<pick % s>` for the s of
# the moment it was written. The hashes' names are made here, not passed as KEYS: they carry the
# room's hash tag like `base`, so they sit on the room's shard (Redis Cluster is not supported).
CLIENT_ID_LUA = """
local function cid_bucket(width)
  return math.floor(tonumber(redis.call('TIME')[1]) / width)
end
local function cid_find(index, base, field, pick, width, window)
  local b = cid_bucket(width)
  for j = b, b - math.ceil(window / width) - 1, -1 do
    local first = redis.call('HGET', index, 'f' .. j)
    if first then
      local s, last = tonumber(first), tonumber(redis.call('HGET', index, 's' .. j))
      while s <= last do
        local key = base .. j .. ':' .. s .. ':' .. (pick % s)
        local value = redis.call('HGET', key, field)
        if value then return value, key end
        s = s * 2
      end
    end
  end
  return false, false
end
local function cid_add(index, base, field, pick, value, width, window)
  local b = cid_bucket(width)
  local expires = (b + 1) * width + window
  local s = tonumber(redis.call('HGET', index, 's' .. b))
  if not s then
    -- A new bucket starts with as many hashes as the last one filled, about 64 entries each (a
    -- listpack hash holds up to 128), and the fields of buckets past the window go.
    local last = tonumber(redis.call('HGET', index, 'n' .. (b - 1))) or 0
    s = 1
    while s * 64 < last do s = s * 2 end
    local oldest = b - math.ceil(window / width) - 1
    for _, name in ipairs(redis.call('HKEYS', index)) do
      if tonumber(string.sub(name, 2)) < oldest then redis.call('HDEL', index, name) end
    end
    redis.call('HSET', index, 'f' .. b, s, 's' .. b, s)
  end
  if redis.call('HINCRBY', index, 'n' .. b, 1) > s * 96 then
    s = s * 2  -- the bucket fills faster than the last: later entries spread over twice the hashes
    redis.call('HSET', index, 's' .. b, s)
  end
  local key = base .. b .. ':' .. s .. ':' .. (pick % s)
  redis.call('HSET', key, field, value)
  redis.call('EXPIREAT', key, expires)
  redis.call('EXPIREAT', index, expires)
end
"""

# KEYS: the room's idempotency index. ARGV: the entries' key base, the entry's field and pick, the
# bucket width and the window (s). Kafka has the entry's message: a retry is answered, not re-sent.
ACK_SCRIPT = CLIENT_ID_LUA + """
local value, key = cid_find(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
if value and string.sub(value, -1) ~= 'a' then redis.call('HSET', key, ARGV[2], value .. 'a') end
return value and 1 or 0
"""

# KEYS: the room's idempotency index. ARGV: the entries' key base, the bucket width, the window,
# then (field, pick, value) per entry. Puts back entries of stored messages (their values acked) in
# a room's new epoch, after Redis lost them.
RESTORE_SCRIPT = CLIENT_ID_LUA + """
for i = 4, #ARGV, 3 do
  if not cid_find(KEYS[1], ARGV[1], ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[2]), tonumber(ARGV[3])) then
    cid_add(KEYS[1], ARGV[1], ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[2]), tonumber(ARGV[3]))
  end
end
return 1
"""

# The room's send step as one atomic script, so the order of seqs in a room is the order of
# publishes: idempotency by client_id, the room's next seq in its current epoch, the recent buffer
# and its id index (trimmed together), and the publish on the room's channel in the channels-redis
# pub/sub wire format (a msgpack map on `<prefix>__group__<group>`). Every room key and the channel
# carry the room's hash tag, so it runs on the room's shard; the user's token bucket is taken
# before it, on the user's shard (chat/limits.py). The room's meta hash holds seq, epoch and the
# shard generation the epoch began under; a missing hash or an older generation needs a seed
# (services.rooms.room_seq_seed) and starts a new epoch, whose buffer starts empty: what the old
# one buffered may lack acked messages, which a replay must then read from Postgres. Each published
# message carries `prev`, the seq before it ("-1" in a new epoch), and `epoch`, so an instance can
# tell when it missed one. When the user's keys sit on the room's shard, the user's send bucket
# (KEYS[7]; ARGV 15 and 16: its burst and rate) is taken here too, instead of in a step of its own.
SEND_SCRIPT = SHARD_CHECK_LUA + CLIENT_ID_LUA + BUCKET_LUA + """
local generation = shard_generation(KEYS[6], ARGV[8])
if not generation then return {'identity', ''} end
if ARGV[15] ~= '' then  -- the user's send bucket, when it lives on this shard too: one round trip
  local wait = bucket_take(KEYS[7], tonumber(ARGV[15]), tonumber(ARGV[16]))
  if wait > 0 then return {'limited', tostring(wait)} end
end
local width, window, pick = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[11])
local entry = cid_find(KEYS[2], ARGV[9], ARGV[10], pick, width, window)
if entry then return {'dup', entry} end
local meta = redis.call('HMGET', KEYS[1], 'seq', 'epoch', 'gen')
local prev, epoch = meta[1], meta[2]
if not prev or meta[3] ~= generation then
  if ARGV[5] == '' then return {'seed', ''} end
  redis.call('DEL', KEYS[3], KEYS[5])
  redis.call('HSET', KEYS[1], 'seq', ARGV[5], 'epoch', ARGV[5], 'gen', generation)
  prev, epoch = '-1', ARGV[5]
end
redis.call('HINCRBY', KEYS[1], 'seq', 1)
local seq = redis.call('HGET', KEYS[1], 'seq')  -- as a string: Lua would print a large number as a float
local text = ARGV[1] .. seq .. ARGV[2]
local keep = -(tonumber(ARGV[6]) + 1)
cid_add(KEYS[2], ARGV[9], ARGV[10], pick, ARGV[4] .. seq, width, window)
redis.call('ZADD', KEYS[3], seq, text)
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, keep)
redis.call('ZADD', KEYS[5], seq, ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, keep)
-- A quiet room's buffer leaves Redis; a replay then reads Postgres once the workers stored the room.
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[14]))
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[14]))
redis.call('PUBLISH', KEYS[4], cmsgpack.pack({type='room.frame', room=ARGV[7], text=text, seq=seq, prev=prev,
                                              epoch=epoch}))
return {'ok', seq}
"""

# KEYS: the room's buffer, its meta hash, the shard's identity. ARGV: after, limit, the deployment.
# Up to `limit` buffered frames past `after`, the buffer's oldest seq and the room's last, read
# together; nothing
# while the room's epoch predates the shard's generation (its buffer may lack acked messages).
REPLAY_SCRIPT = SHARD_CHECK_LUA + """
local generation = shard_generation(KEYS[3], ARGV[3])
if not generation or redis.call('HGET', KEYS[2], 'gen') ~= generation then return {{}, false, false} end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
return {rows, oldest[2] or false, redis.call('HGET', KEYS[2], 'seq')}
"""

# A message's current state in Redis: its frame in the recent buffer (found through the id index)
# while the room's epoch is of the shard's generation, else in the room's `changed` hash of that
# generation, which holds the state of older messages changed since. A hash per generation: after
# a failover or restart the old one may lack changes Kafka has, so the first change reads Postgres
# (once the workers stored the room) and starts the new one. Returns the frame (a message, or a
# tombstone once deleted) and its seq when buffered. The hash's name is made from `changed_base`,
# which carries the room's hash tag.
CURRENT_LUA = """
local function message_current(ids, recent, meta, changed_base, generation, id)
  if redis.call('HGET', meta, 'gen') == generation then
    local seq = redis.call('ZSCORE', ids, id)
    if seq then
      local rows = redis.call('ZRANGEBYSCORE', recent, seq, seq)
      if rows[1] then return rows[1], seq end
    end
  end
  return redis.call('HGET', changed_base .. generation, id), false
end
"""

# KEYS: the room's id index, recent buffer, meta hash, the shard's identity. ARGV: the message id,
# the deployment, the changed hashes' base name.
CURRENT_SCRIPT = SHARD_CHECK_LUA + CURRENT_LUA + """
local generation = shard_generation(KEYS[4], ARGV[2])
if not generation then return {'identity', ''} end
local row = message_current(KEYS[1], KEYS[2], KEYS[3], ARGV[3], generation, ARGV[1])
return {'ok', row or ''}
"""

# KEYS as CURRENT_SCRIPT, then the room's channel. ARGV: the message id, the deployment, the changed
# hashes' base name, the rev the change was made from, the new frame, the idle expiry (s), the frame
# for the room's clients ('' for none), the room id. Compare-and-set on the message's rev, so
# concurrent changes of one message (reactions from every instance, an edit) each build on the last:
# a change made from an older rev gets the current frame back and is made again. Redis holding
# nothing for the message (the caller read Postgres) takes the change; a second change made from
# Postgres meanwhile then meets the first one's rev. The live frame is published here, so clients
# get a message's changes in rev order.
CHANGE_SCRIPT = SHARD_CHECK_LUA + CURRENT_LUA + """
local generation = shard_generation(KEYS[4], ARGV[2])
if not generation then return {'identity', ''} end
local row, seq = message_current(KEYS[1], KEYS[2], KEYS[3], ARGV[3], generation, ARGV[1])
if row and (tonumber(cjson.decode(row)['rev']) or 1) ~= tonumber(ARGV[4]) then return {'conflict', row} end
if seq then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], seq, seq)
  redis.call('ZADD', KEYS[2], seq, ARGV[5])
else
  local changed = ARGV[3] .. generation
  redis.call('HSET', changed, ARGV[1], ARGV[5])
  redis.call('EXPIRE', changed, tonumber(ARGV[6]))
end
if ARGV[7] ~= '' then
  redis.call('PUBLISH', KEYS[5], cmsgpack.pack({type='room.frame', room=ARGV[8], text=ARGV[7]}))
end
return {'ok', ''}
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

# KEYS: the room's online users, the user's connections, the room's meta. ARGV: username, conn_id,
# expiry, now, ttl. Returns {1 when the user was not online before, the room's seq or '', who is
# online}: what a joining socket's hello needs, in one call.
PRESENCE_JOIN_SCRIPT = """
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[1])
local new = 1
if was and tonumber(was) > tonumber(ARGV[4]) then new = 0 end
return {new, redis.call('HGET', KEYS[3], 'seq') or '', redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[4], '+inf')}
"""

# KEYS: the room's online set, its channel. ARGV: now, the event to publish, then who was read as
# online. Publishes only if that is still who is online (1; else 0): a room's presence frames then
# reach its sockets in the order their lists were read, and a list read before a change never
# arrives after one read since (two instances announcing at once).
PRESENCE_PUBLISH_SCRIPT = """
local current = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
if #current ~= #ARGV - 2 then return 0 end
local read = {}
for i = 3, #ARGV do read[ARGV[i]] = true end
for _, name in ipairs(current) do
  if not read[name] then return 0 end
end
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
"""

# KEYS: n users' connection sets, the n rooms' online sets (one per connection), then the online
# sets to trim. ARGV: expiry, ttl, now, n, the n conn ids, the n usernames. Re-adding (not XX) heals
# the sets after Redis restarts empty. Returns how many expired users each trimmed set lost, and the
# positions (1-based) of the connections whose user was not online in their room until now.
PRESENCE_REFRESH_SCRIPT = """
local n = tonumber(ARGV[4])
local now = tonumber(ARGV[3])
local back = {}
for i = 1, n do
  redis.call('ZADD', KEYS[i], ARGV[1], ARGV[4 + i])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
  local was = redis.call('ZSCORE', KEYS[n + i], ARGV[4 + n + i])
  if not was or tonumber(was) <= now then back[#back + 1] = i end
  redis.call('ZADD', KEYS[n + i], 'GT', ARGV[1], ARGV[4 + n + i])
end
local removed = {}
for j = 2 * n + 1, #KEYS do
  removed[#removed + 1] = redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', ARGV[3])
end
return {removed, back}
"""

# KEYS as above. ARGV: username, conn_id, now. Returns 1 when the user has no live connection left.
PRESENCE_LEAVE_SCRIPT = """
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[2])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""
