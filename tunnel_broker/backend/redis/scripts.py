"""Lua scripts that keep a tunnel record and its indexes consistent in one step."""

from __future__ import annotations

# The *owed* set of a tunnel (KEYS[3] below) names the pods that may still hold events of
# it not yet delivered; a pod holding the tunnel delivers none of its own until every
# other pod is off that set (docs/design.md, "Event order across pods").

# KEYS[1] tunnel record, KEYS[2] user index, KEYS[3] owed set, KEYS[4] resume state,
# KEYS[5] resume buffer, KEYS[6] the app's index, KEYS[7] the app's usage bucket of the hour
# ARGV: node, conn, user_id, identity, meta, groups(json), connected_at, tunnel_id,
#       group key prefix, max tunnels per user (0: no check), "1" if the tunnel has a
#       socket open on this pod, "1" if the socket speaks the reliable protocol, "1" if
#       it resumes (else the tunnel's sequences start afresh), pushes it may keep, its
#       resume window (seconds), the app's max tunnels (0: no check), seconds usage
#       buckets are kept
# A tunnel with a record is in the app's index, open or waiting for a resume: only a
# tunnel without one is new, and counts against the limits (a takeover or a resume does
# not). The bucket's ``peak_tunnels`` is raised to the count.
# A takeover from another pod puts that pod on the owed set. The record's *life* is the
# connection whose ``tunnel.connected`` began the tunnel's current lifecycle: a takeover
# keeps it (``unrecorded.py``); a record of this pod without a socket here is of one that
# ended (or was refused), so a new socket begins a new life. Returns {previous node or
# "", previous conn or "", merged groups json, owed pods json, life, pushes numbered so far,
# last client message accepted, the name of the tunnel's sequences}, or {"!"} when a new
# tunnel would exceed the user's limit, {"!app"} the app's.
ATTACH = """
local old_node = redis.call('HGET', KEYS[1], 'node') or ''
local old_conn = redis.call('HGET', KEYS[1], 'conn') or ''
local life = ARGV[2]
if old_node ~= '' and (old_node ~= ARGV[1] or ARGV[11] == '1') then
  life = redis.call('HGET', KEYS[1], 'life') or old_conn
end
local limit = tonumber(ARGV[10])
if old_node == '' and limit > 0 and redis.call('ZCARD', KEYS[2]) >= limit then
  return {'!'}
end
local app_limit = tonumber(ARGV[16])
if old_node == '' and app_limit > 0 and redis.call('ZCARD', KEYS[6]) >= app_limit then
  return {'!app'}
end
local groups = cjson.decode(ARGV[6])
local seen = {}
for _, g in ipairs(groups) do seen[g] = true end
if old_node ~= '' then
  local old_groups = redis.call('HGET', KEYS[1], 'groups')
  if old_groups then
    for _, g in ipairs(cjson.decode(old_groups)) do
      if not seen[g] then table.insert(groups, g); seen[g] = true end
    end
  end
end
local merged = '[]'
if #groups > 0 then merged = cjson.encode(groups) end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'conn', ARGV[2], 'user', ARGV[3],
  'identity', ARGV[4], 'meta', ARGV[5], 'groups', merged, 'connected_at', ARGV[7],
  'life', life)
redis.call('HDEL', KEYS[1], 'state')
if ARGV[12] == '1' then redis.call('HSET', KEYS[1], 'rel', '1', 'rmax', ARGV[14], 'rwin', ARGV[15])
else redis.call('HDEL', KEYS[1], 'rel', 'rmax', 'rwin') end
if ARGV[13] ~= '1' or old_node == '' then
  redis.call('DEL', KEYS[4], KEYS[5])
  if ARGV[12] == '1' then redis.call('HSET', KEYS[4], 'seqs', ARGV[2]) end
end
redis.call('ZADD', KEYS[2], 0, ARGV[8])
redis.call('ZADD', KEYS[6], 0, ARGV[8])
local open = redis.call('ZCARD', KEYS[6])
if open > tonumber(redis.call('HGET', KEYS[7], 'peak_tunnels') or '0') then
  redis.call('HSET', KEYS[7], 'peak_tunnels', open)
end
if redis.call('TTL', KEYS[7]) == -1 then redis.call('EXPIRE', KEYS[7], ARGV[17]) end
for _, g in ipairs(groups) do redis.call('ZADD', ARGV[9] .. g, 0, ARGV[8]) end
if old_node ~= '' and old_node ~= ARGV[1] then redis.call('SADD', KEYS[3], old_node) end
local owed = redis.call('SMEMBERS', KEYS[3])
local owed_json = '[]'
if #owed > 0 then owed_json = cjson.encode(owed) end
return {old_node, old_conn, merged, owed_json, life,
  redis.call('HGET', KEYS[4], 'sent') or '0', redis.call('HGET', KEYS[4], 'accepted') or '0',
  redis.call('HGET', KEYS[4], 'seqs') or ''}
"""

# KEYS[1] tunnel record, KEYS[2] user index, KEYS[3] owed set, KEYS[4] resume state,
# KEYS[5] resume buffer, KEYS[6] the app's index, KEYS[7] the app's usage bucket of the hour
# ARGV: conn, tunnel_id, group key prefix, pod to put on the owed set (or ""), pod to
#       take off it (or ""), seconds usage buckets are kept
# Removes the record only if it still belongs to connection ``conn``, and updates the
# owed set either way; the bucket's ``peak_tunnels`` is raised to the count before the
# removal (an hour without a connect still has its peak). Returns {1 if removed else 0,
# the pod now holding the tunnel or "", the life of its record or ""}.
DETACH = """
local removed = 0
if redis.call('HGET', KEYS[1], 'conn') == ARGV[1] then
  local groups = redis.call('HGET', KEYS[1], 'groups')
  if groups then
    for _, g in ipairs(cjson.decode(groups)) do redis.call('ZREM', ARGV[3] .. g, ARGV[2]) end
  end
  redis.call('ZREM', KEYS[2], ARGV[2])
  local open = redis.call('ZCARD', KEYS[6])
  if open > tonumber(redis.call('HGET', KEYS[7], 'peak_tunnels') or '0') then
    redis.call('HSET', KEYS[7], 'peak_tunnels', open)
    if redis.call('TTL', KEYS[7]) == -1 then redis.call('EXPIRE', KEYS[7], ARGV[6]) end
  end
  redis.call('ZREM', KEYS[6], ARGV[2])
  redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
  removed = 1
end
if ARGV[5] ~= '' then redis.call('SREM', KEYS[3], ARGV[5]) end
if ARGV[4] ~= '' then redis.call('SADD', KEYS[3], ARGV[4]) end
return {removed, redis.call('HGET', KEYS[1], 'node') or '',
  redis.call('HGET', KEYS[1], 'life') or ''}
"""

# KEYS[1] the app's index, KEYS[2...] tunnel records; ARGV: their tunnel ids
# Drops the ids whose record is gone from the index; returns how many.
PRUNE_INDEX = """
local pruned = 0
for i, tunnel_id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    pruned = pruned + redis.call('ZREM', KEYS[1], tunnel_id)
  end
end
return pruned
"""

# KEYS[1] tunnel record, KEYS[2] owed set; ARGV: pods to take off the owed set
# Returns {the pod now holding the tunnel or "", owed pods left json}.
SETTLE = """
for _, node in ipairs(ARGV) do redis.call('SREM', KEYS[2], node) end
local owed = redis.call('SMEMBERS', KEYS[2])
local owed_json = '[]'
if #owed > 0 then owed_json = cjson.encode(owed) end
return {redis.call('HGET', KEYS[1], 'node') or '', owed_json}
"""

# KEYS[1] tunnel record; ARGV: group, tunnel_id, group key prefix, "join"|"leave",
#       max groups per tunnel (joins only)
# Returns the owning node, "" if the tunnel is not open, or "!" when a join would put the
# tunnel in more than the max groups (nothing changed).
MEMBERSHIP = """
local node = redis.call('HGET', KEYS[1], 'node')
if not node then return '' end
local groups = cjson.decode(redis.call('HGET', KEYS[1], 'groups') or '[]')
if ARGV[4] == 'join' and #groups >= tonumber(ARGV[5]) then
  for _, g in ipairs(groups) do if g == ARGV[1] then return node end end
  return '!'
end
local out = {}
local present = false
for _, g in ipairs(groups) do
  if g == ARGV[1] then present = true
    if ARGV[4] == 'join' then table.insert(out, g) end
  else table.insert(out, g) end
end
if ARGV[4] == 'join' and not present then
  table.insert(out, ARGV[1])
  redis.call('ZADD', ARGV[3] .. ARGV[1], 0, ARGV[2])
elseif ARGV[4] == 'leave' then
  redis.call('ZREM', ARGV[3] .. ARGV[1], ARGV[2])
end
local encoded = '[]'
if #out > 0 then encoded = cjson.encode(out) end
redis.call('HSET', KEYS[1], 'groups', encoded)
return node
"""

# Journals (journal.py): each pod keeps its undelivered events of an app in a stream,
# entries ``{r = record}`` with ids the pod chooses, increasing; records start with the
# tunnel id and a newline. The app's stored-bytes hash has a field per pod.

# KEYS[1] this pod's journal of the app, KEYS[2] the app's stored-bytes hash
# ARGV: node, number of appends n, n (id, record) pairs, then (id, size) pairs to delete
# Returns the app's stored bytes, all pods together.
JOURNAL_WRITE = """
local n = tonumber(ARGV[2])
local delta = 0
local i = 3
for _ = 1, n do
  redis.call('XADD', KEYS[1], ARGV[i], 'r', ARGV[i + 1])
  delta = delta + #ARGV[i + 1]
  i = i + 2
end
while i < #ARGV do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then delta = delta - tonumber(ARGV[i + 1]) end
  i = i + 2
end
if delta ~= 0 then redis.call('HINCRBY', KEYS[2], ARGV[1], delta) end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(v) end
return total
"""

# KEYS[1] the journal taken, KEYS[2] the adopter's journal of the same app, KEYS[3] the
#   app's stored-bytes hash
# ARGV: the pod leaving, the pod adopting, owed key prefix, adopter's id prefix
#   ("<ms>-"), adopter's next sequence number, most entries to take, last id to take
#   ("+"; a pod adopting its previous run's journal, which is its own, takes the ids
#   below its prefix: "(<ms>-0")
# Moves up to that many of the oldest entries to the adopter's journal, and puts the
# adopter in the leaving pod's place on the owed sets of their tunnels (order.py).
# Returns {1 if nothing is left to take (another pod's journal is deleted) else 0,
# records...}.
TAKE_JOURNAL = """
local own = KEYS[1] == KEYS[2]
local entries = redis.call('XRANGE', KEYS[1], '-', ARGV[7], 'COUNT', tonumber(ARGV[6]))
local seq = tonumber(ARGV[5])
local seen = {}
local out = {0}
local moved = 0
for _, entry in ipairs(entries) do
  local record = entry[2][2]
  local tunnel = string.match(record, '^([^\\n]*)')
  if not seen[tunnel] then
    seen[tunnel] = true
    redis.call('SREM', ARGV[3] .. tunnel, ARGV[1])
    redis.call('SADD', ARGV[3] .. tunnel, ARGV[2])
  end
  redis.call('XDEL', KEYS[1], entry[1])
  redis.call('XADD', KEYS[2], ARGV[4] .. seq, 'r', record)
  seq = seq + 1
  moved = moved + #record
  table.insert(out, record)
end
if own then
  if #redis.call('XRANGE', KEYS[1], '-', ARGV[7], 'COUNT', 1) == 0 then out[1] = 1 end
  return out
end
if moved > 0 then
  redis.call('HINCRBY', KEYS[3], ARGV[1], -moved)
  redis.call('HINCRBY', KEYS[3], ARGV[2], moved)
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  out[1] = 1
end
return out
"""


# A reliable tunnel's socket dropped and it waits for a resume: presence says so, if the
# record is still this connection's. KEYS: record. ARGV: conn.
PARK = """
if redis.call('HGET', KEYS[1], 'conn') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'resumable')
return 1
"""


# The reliable protocol's pushes (``resumes.py``). KEYS: for each tunnel its record,
# resume state and resume buffer (all of one app: one hash slot). ARGV: "t" text | "b"
# bytes (base64), payload, the pod that must hold the tunnels (or "": any). One call for
# one payload to many tunnels, so a broadcast sends its payload to Redis once.
# Numbers the push and keeps it until acknowledged, for each tunnel that is reliable (and
# held by that pod); the record's ``rmax`` bounds the pushes kept; both keys go with the
# record (DETACH). Returns {holder or "", number} per tunnel: number 0 not reliable (or
# not held there), -1 its buffer is full.
NUMBER_PUSH = """
local out = {}
for i = 1, #KEYS, 3 do
  local node = redis.call('HGET', KEYS[i], 'node')
  local seq = 0
  if not node then
    node = ''
  elseif redis.call('HGET', KEYS[i], 'rel') == '1' and (ARGV[3] == '' or node == ARGV[3]) then
    local kept = tonumber(redis.call('HGET', KEYS[i], 'rmax') or '1000')
    if redis.call('XLEN', KEYS[i + 2]) >= kept then
      seq = -1
    else
      seq = redis.call('HINCRBY', KEYS[i + 1], 'sent', 1)
      redis.call('XADD', KEYS[i + 2], seq .. '-1', 'k', ARGV[1], 'p', ARGV[2])
    end
  end
  out[#out + 1] = node
  out[#out + 1] = seq
end
return out
"""

# KEYS[1] resume state; ARGV: a client message number. Raises ``accepted`` to it.
MARK_ACCEPTED = """
if tonumber(redis.call('HGET', KEYS[1], 'accepted') or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'accepted', ARGV[1])
end
return 1
"""


# An app's message quota in one period (``backend/allowance.py``, whose ``settle`` is
# this script in Python): KEYS[1] the period's hash. ARGV: pod, its cumulative use in
# the period, allowance it keeps, allowance it needs now (all or nothing), allowance it
# would take, "1" to give back all it holds, the quota, how long a reservation lasts
# (ms), the largest share of what is left one reservation takes (1/n), when the hash
# expires (unix seconds). A reservation of another pod that lapsed is counted as used
# (what that pod used of it is unknown) and that pod marked, so that its next report
# adds nothing twice. Returns {granted, used, held by other pods, free after the grant}.
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pod = ARGV[1]
local total, held = tonumber(ARGV[2]), tonumber(ARGV[3])
local need, want, quota = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local reported = tonumber(redis.call('HGET', KEYS[1], 'c:' .. pod) or '0')
if redis.call('HDEL', KEYS[1], 'r:' .. pod) == 0 and total > reported then
  used = used + total - reported
end
if total > reported then redis.call('HSET', KEYS[1], 'c:' .. pod, string.format('%d', total)) end
local others = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local name = fields[i]
  if string.sub(name, 1, 2) == 'e:' and name ~= 'e:' .. pod then
    local other = string.sub(name, 3)
    local h = tonumber(redis.call('HGET', KEYS[1], 'h:' .. other) or '0')
    if tonumber(fields[i + 1]) <= now then
      used = used + h
      redis.call('HDEL', KEYS[1], 'h:' .. other, name)
      redis.call('HSET', KEYS[1], 'r:' .. other, '1')
    else
      others = others + h
    end
  end
end
local granted = 0
local free = quota - used - others - held
if ARGV[6] == '1' then
  redis.call('HDEL', KEYS[1], 'h:' .. pod, 'e:' .. pod)
else
  if free >= math.max(need, 1) then
    granted = math.min(free, math.max(need, math.min(want, math.floor(free / tonumber(ARGV[9])))))
  end
  redis.call('HSET', KEYS[1], 'h:' .. pod, string.format('%d', held + granted),
    'e:' .. pod, string.format('%d', now + tonumber(ARGV[8])))
end
redis.call('HSET', KEYS[1], 'used', string.format('%d', used))
redis.call('EXPIREAT', KEYS[1], ARGV[10])
return {granted, used, others, free - granted}
"""
