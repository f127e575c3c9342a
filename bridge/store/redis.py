"""The shared store for several replicas: everything in one Redis (standalone, not Cluster).

Each write that must be atomic is one Lua script, so replicas racing on one incident (the two
copies of an HA notification arriving at two pods) cannot both win: compare-and-set on the
incident's (ref, version), the processed-event id and the outbox items in one step.

Outbox: one list per incident (its items in order) and two sorted sets of incident refs whose
oldest item is due, scored by when (creations first). A replica takes an incident's head item
by setting a claim key with an expiry, so a replica killed mid-send strands nothing: the claim
lapses after `claim_ttl` and another replica takes the item.

Keys (prefix `pab:`): inc:<ref> (hash), cur:<key> -> ref, curkeys (zset of the keys, for a
group's lookup by lexical range), open (set), finished (zset),
q:<ref> (list of item ids), item:<id> (hash), seq, due:create / due:other (zsets),
claim:<ref>, dead (list), ev:<event id> (expiring), rate / pause (the global rate limit),
looks (zset: when the scheduler looks next), fp:<fingerprint> / fps:<ref> / silenced /
route:<name> (sets: which open incidents hold an alert, which show a silence, which are of a
route), changed:firing / changed:resolved (zsets of every incident held, by Incident.changed_at:
the order of change), indexed (which of those indexes the data has), settings (hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge.briefs import BRIEF_PATHS, Brief
from bridge.errors import ClaimLost, ConflictError, DuplicateEvent, StoreError
from bridge.model import LOOK_FIELDS, Delivery, Incident, IncidentState, LookFacts
from bridge.ratelimit import (
    BUSY_FOR,
    JITTER,
    PAUSE_REPORT_THRESHOLD,
    STARTS_KEPT_FOR,
    URGENT,
    Pace,
    no_report,
)
from bridge.store.base import (
    MAX_SEVERITIES,
    OPEN_PAGE,
    OTHER,
    PRESS,
    Backlog,
    DeadLetter,
    Look,
    NewOutboxItem,
    OutboxItem,
    Place,
    Stored,
    SwapRecord,
    open_pages,
    shows_silence,
    without_alerts,
)
from bridge.timeline import MAX_EVENTS, Event

PREFIX = "pab:"
# the due lists, in the order the lanes are served (see store.base.PRESS); `due:create` and
# `due:other` are what an older version queued into, still read after an upgrade
LANES = (
    "due:p0",
    *(f"due:p{n}" for n in range(1, MAX_SEVERITIES + 1)),
    "due:create",
    f"due:p{OTHER}",
    "due:other",
)
EVENT_TTL_SECONDS = 86400
# alerts looked up in one round trip by `holding`
HOLDING_PER_TRIP = 1000
# `indexed` holds this once the open incidents are indexed by alert and by route and every
# incident held has its place in the order of change (1: by alert; 2: and by route)
INDEX_VERSION = "3"
# the scheduler's looks recorded by one script call (each holds Redis for a moment)
LOOKS_PER_CALL = 500

# Shared Lua: queue items for an incident (an edit already waiting behind the head absorbs
# new edits, as in the SQLite store), and put the incident's head item on a due list.
_LIB = (
    """
local P = ARGV[1]
local LANES = {LANE_LIST}
-- an item's lane; items queued by an older version have none
local function lane_of(priority, kind)
  return priority or ((kind == 'create') and '1' or 'OTHER_LANE')
end
local function schedule_head(ref)
  for _, lane in ipairs(LANES) do redis.call('ZREM', P..lane, ref) end
  local head = redis.call('LINDEX', P..'q:'..ref, 0)
  if head then
    local h = redis.call('HMGET', P..'item:'..head, 'kind', 'not_before', 'priority')
    redis.call('ZADD', P..'due:p'..lane_of(h[3], h[1]), h[2], ref)
  end
end
local function add_items(ref, now, first)
  local q = P..'q:'..ref
  local waiting = false
  for _, id in ipairs(redis.call('LRANGE', q, 1, -1)) do
    if redis.call('HGET', P..'item:'..id, 'kind') == 'edit' then waiting = true end
  end
  local n = tonumber(ARGV[first])
  for i = 0, n - 1 do  -- someone waits: the incident's queue goes first
    if ARGV[first + 4 + i * 4] == 'PRESS_LANE' then
      for _, id in ipairs(redis.call('LRANGE', q, 0, -1)) do
        redis.call('HSET', P..'item:'..id, 'priority', 'PRESS_LANE')
      end
      break
    end
  end
  for i = 0, n - 1 do
    local kind = ARGV[first + 1 + i * 4]
    if not (kind == 'edit' and waiting) then
      local id = redis.call('INCR', P..'seq')
      redis.call('HSET', P..'item:'..id, 'ref', ref, 'kind', kind,
        'content', ARGV[first + 2 + i * 4], 'actor', ARGV[first + 3 + i * 4],
        'priority', ARGV[first + 4 + i * 4],
        'created_at', now, 'not_before', now, 'attempts', 0)
      redis.call('RPUSH', q, id)
      redis.call('INCR', P..'depth')
    end
  end
  schedule_head(ref)
end
local function add_events(ref, list)
  if #list == 0 then return end
  local key = P..'tl:'..ref
  for _, event in ipairs(list) do redis.call('RPUSH', key, event) end
  local over = redis.call('LLEN', key) - MAX_EVENTS
  if over > 0 then
    redis.call('LTRIM', key, over, -1)
    redis.call('HINCRBY', P..'tl-dropped', ref, over)
  end
end
local function record_event(event_id, now)
  if event_id == '' then return true end
  return redis.call('SET', P..'ev:'..event_id, now, 'NX', 'EX', EVENT_TTL)
end
local function release(ref, owner)
  if redis.call('GET', P..'claim:'..ref) == owner then redis.call('DEL', P..'claim:'..ref) end
end
-- another replica holds this incident's claim: what this one did must not be recorded
local function taken(ref, owner)
  local holder = redis.call('GET', P..'claim:'..ref)
  return holder and holder ~= owner
end
-- which open incidents hold an alert (fp:<fingerprint>: set of refs; fps:<ref>: what was
-- indexed for the ref, so all of it leaves when the incident does), which show a silence,
-- and which are of a route (route:<name>: set of refs; the name kept in the incident's hash)
local function unindex(ref)
  local own = P..'fps:'..ref
  for _, fp in ipairs(redis.call('SMEMBERS', own)) do
    redis.call('SREM', P..'fp:'..fp, ref)
  end
  redis.call('DEL', own)
  redis.call('SREM', P..'silenced', ref)
  local route = redis.call('HGET', P..'inc:'..ref, 'route')
  if route then redis.call('SREM', P..'route:'..route, ref) end
end
local function index(ref, silenced, fingerprints, route)
  redis.call('HSET', P..'inc:'..ref, 'route', route)
  redis.call('SADD', P..'route:'..route, ref)
  for _, fp in ipairs(cjson.decode(fingerprints)) do
    if redis.call('SADD', P..'fps:'..ref, fp) == 1 then redis.call('SADD', P..'fp:'..fp, ref) end
  end
  if silenced == '1' then
    redis.call('SADD', P..'silenced', ref)
  else
    redis.call('SREM', P..'silenced', ref)
  end
end
local function record_delivery(ref, message_id, thread_id, rendered, sent_at, digest)
  redis.call('HSET', P..'inc:'..ref, 'message_id', message_id, 'thread_id', thread_id,
    'rendered_version', rendered, 'create_attempted', sent_at, 'create_digest', digest)
  if message_id ~= '' then redis.call('SET', P..'msg:'..message_id, ref) end
end
""".replace("EVENT_TTL", str(EVENT_TTL_SECONDS))
    .replace("MAX_EVENTS", str(MAX_EVENTS))
    .replace("LANE_LIST", ", ".join(f"'{lane}'" for lane in LANES))
    .replace("OTHER_LANE", str(OTHER))
    .replace("PRESS_LANE", str(PRESS))
)

# ARGV: P, key, ref, version, body, finished_at, replaces_ref, replaces_version, now,
#       event_id, shows a silence ('1' or ''), its alerts' fingerprints (a JSON list), its
#       route, its changed_at (seconds), firing ('1' or ''), then the items (count, then
#       kind/content/actor/priority), then the timeline events (JSON each)
_SAVE = (
    _LIB
    + """
local key, ref = ARGV[2], ARGV[3]
local cur = redis.call('GET', P..'cur:'..key)
if cur then
  local version = redis.call('HGET', P..'inc:'..cur, 'version')
  if cur ~= ARGV[7] or version ~= ARGV[8] then return 'CONFLICT' end
elseif ARGV[7] ~= '' then
  return 'CONFLICT'
end
if not record_event(ARGV[10], ARGV[9]) then return 'DUPLICATE' end
redis.call('HSET', P..'inc:'..ref, 'body', ARGV[5], 'version', ARGV[4], 'key', key)
if ARGV[6] == '' then
  redis.call('HDEL', P..'inc:'..ref, 'finished_at')
  redis.call('SADD', P..'open', ref)
  redis.call('ZREM', P..'finished', ref)
  redis.call('ZADD', P..'looks', ARGV[9], ref)  -- the scheduler looks at what changed
  index(ref, ARGV[11], ARGV[12], ARGV[13])
else
  redis.call('HSET', P..'inc:'..ref, 'finished_at', ARGV[6])
  redis.call('SREM', P..'open', ref)
  redis.call('ZADD', P..'finished', ARGV[6], ref)
  redis.call('ZREM', P..'looks', ref)
  unindex(ref)
end
if cur and cur ~= ref then
  redis.call('SREM', P..'open', cur)
  redis.call('ZREM', P..'looks', cur)
  unindex(cur)
end
redis.call('SET', P..'cur:'..key, ref)
redis.call('ZADD', P..'curkeys', 0, key)
local state, other = 'changed:firing', 'changed:resolved'
if ARGV[15] == '' then state, other = other, state end
redis.call('ZREM', P..other, ref)
redis.call('ZADD', P..state, ARGV[14], ref)
add_items(ref, ARGV[9], 16)
add_events(ref, {unpack(ARGV, 17 + tonumber(ARGV[16]) * 4)})
return 'OK'
"""
)

# ARGV: P, ref, now, event_id, items..., then timeline events (JSON each)
_ENQUEUE = (
    _LIB
    + """
if not record_event(ARGV[4], ARGV[3]) then return 'DUPLICATE' end
add_items(ARGV[2], ARGV[3], 5)
add_events(ARGV[2], {unpack(ARGV, 6 + tonumber(ARGV[5]) * 4)})
return 'OK'
"""
)

# ARGV: P, now, limit, owner, claim_ms -> flat list of item hashes (as field/value lists)
_CLAIM = (
    _LIB
    + """
local out = {}
local limit = tonumber(ARGV[3])
for _, due in ipairs(LANES) do
  if #out >= limit then break end
  local refs = redis.call('ZRANGEBYSCORE', P..due, '-inf', ARGV[2], 'LIMIT', 0, limit * 4)
  for _, ref in ipairs(refs) do
    if #out >= limit then break end
    local claim = P..'claim:'..ref
    if redis.call('SET', claim, ARGV[4], 'NX', 'PX', ARGV[5])
        or redis.call('GET', claim) == ARGV[4] then
      redis.call('PEXPIRE', claim, ARGV[5])
      local id = redis.call('LINDEX', P..'q:'..ref, 0)
      if id then
        local item = redis.call('HGETALL', P..'item:'..id)
        table.insert(item, 'id')
        table.insert(item, id)
        table.insert(out, item)
      else
        release(ref, ARGV[4])
        schedule_head(ref)
      end
    end
  end
end
return out
"""
)

# ARGV: P, item_id, owner, then: mode ('finish' | 'retry' | 'dead'), not_before, error, now,
#       the timeline event of the delivery ('' for none),
#       and for 'finish' optionally the delivery: message_id, thread_id, rendered, sent_at,
#       digest
_SETTLE = (
    _LIB
    + """
local id = ARGV[2]
local ref = redis.call('HGET', P..'item:'..id, 'ref')
if not ref then return 0 end
if taken(ref, ARGV[3]) then return 'LOST' end
if ARGV[9] then record_delivery(ref, ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]) end
if ARGV[8] ~= '' then add_events(ref, {ARGV[8]}) end
if ARGV[4] == 'retry' then
  redis.call('HINCRBY', P..'item:'..id, 'attempts', 1)
  redis.call('HDEL', P..'item:'..id, 'begun_at')
  redis.call('HSET', P..'item:'..id, 'not_before', ARGV[5], 'last_error', ARGV[6])
else
  if ARGV[4] == 'dead' then
    local h = redis.call('HGETALL', P..'item:'..id)
    table.insert(h, 'id') table.insert(h, id)
    table.insert(h, 'error') table.insert(h, ARGV[6])
    table.insert(h, 'failed_at') table.insert(h, ARGV[7])
    redis.call('RPUSH', P..'dead', cjson.encode(h))
  end
  redis.call('LREM', P..'q:'..ref, 1, id)
  redis.call('DEL', P..'item:'..id)
  redis.call('DECR', P..'depth')
end
schedule_head(ref)
release(ref, ARGV[3])
return 1
"""
)

# ARGV: P, item_id, owner, at
_BEGIN = (
    _LIB
    + """
local ref = redis.call('HGET', P..'item:'..ARGV[2], 'ref')
if not ref then return 0 end
if taken(ref, ARGV[3]) then return 'LOST' end
redis.call('HSET', P..'item:'..ARGV[2], 'begun_at', ARGV[4])
return 1
"""
)

# ARGV: P, ref, owner, message_id, thread_id, rendered, sent_at, digest
_RECORD = (
    _LIB
    + """
if taken(ARGV[2], ARGV[3]) then return 'LOST' end
record_delivery(ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return 'OK'
"""
)

# ARGV: P, then for each look: ref, version, when the scheduler looks next ('' = not until it
# changes)
_LOOK = """
local P = ARGV[1]
for i = 2, #ARGV, 3 do
  local ref, version, at = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HGET', P..'inc:'..ref, 'version') == version
      and redis.call('SISMEMBER', P..'open', ref) == 1 then
    if at == '' then
      redis.call('ZREM', P..'looks', ref)
    else
      redis.call('ZADD', P..'looks', at, ref)
    end
  end
end
return 1
"""

# the Lua functions `without_alerts(text)`: an incident's body with its alerts cut out (the
# object between `"alerts":{` and `},"truncated_alerts":`, which the model writes next to each
# other and nothing before them can contain; a body without them: whole), and `decoded(text)`:
# the body decoded without its alerts (most of its text) where the cut leaves JSON
_CUT_ALERTS = """
local function without_alerts(body)
  local _, open = string.find(body, '"alerts":{', 1, true)
  local close = open and string.find(body, '},"truncated_alerts":', open, true)
  if close then return string.sub(body, 1, open) .. string.sub(body, close) end
  return body
end
local function decoded(body)
  local cut, value = pcall(cjson.decode, without_alerts(body))
  if cut then return value end
  return cjson.decode(body)
end
"""


def _picking(paths: Sequence[Sequence[str]], field: str) -> str:
    """A script: ARGV P, then the refs -> one JSON list of [ref, the hash's `field` ('' if
    unset), [the values at `paths` in its body (a path is keys, one after another; null where
    it leads nowhere)]] for each incident still held: one answer to parse, only the fields
    travel, and the body is decoded without its alerts."""
    lua_paths = ", ".join("{" + ", ".join(f"'{key}'" for key in path) + "}" for path in paths)
    return (
        _CUT_ALERTS
        + f"""
local P = ARGV[1]
local PATHS = {{{lua_paths}}}
local out = {{}}
for i = 2, #ARGV do
  local h = redis.call('HMGET', P..'inc:'..ARGV[i], 'body', '{field}')
  if h[1] then
    local body = decoded(h[1])
    local values = {{}}
    for j, path in ipairs(PATHS) do
      local value = body
      for _, key in ipairs(path) do
        if type(value) == 'table' then value = value[key] else value = nil end
      end
      if value == nil then value = cjson.null end
      values[j] = value
    end
    out[#out + 1] = {{ARGV[i], h[2] or '', values}}
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""
    )


# what the scheduler times an incident by (LOOK_FIELDS), and its version
_LOOK_FACTS = _picking([(name,) for name in LOOK_FIELDS], "version")
# what the summaries keep of an incident (BRIEF_PATHS), and its message
_BRIEFS = _picking(BRIEF_PATHS, "message_id")

# ARGV: P, refs... -> for each incident still held, its hash (field, value, ...) with its body's
# alerts cut out (`without_alerts`)
_WITHOUT_ALERTS = (
    _CUT_ALERTS
    + """
local P = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local flat = redis.call('HGETALL', P..'inc:'..ARGV[i])
  for j = 1, #flat, 2 do
    if flat[j] == 'body' then flat[j + 1] = without_alerts(flat[j + 1]) end
  end
  if #flat > 0 then out[#out + 1] = flat end
end
return out
"""
)

# ARGV: P, ref, shows a silence ('1' or ''), fingerprints (JSON list), route: an incident
# saved by a version that kept no index (or no route index), indexed if still open
_INDEX = (
    _LIB
    + """
if redis.call('SISMEMBER', P..'open', ARGV[2]) == 1 then
  index(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
end
return 1
"""
)

# ARGV: P, owner, claim_ms, refs... -> the refs still held (their claims extended)
_HOLD = """
local held = {}
for i = 4, #ARGV do
  local claim = ARGV[1]..'claim:'..ARGV[i]
  if redis.call('GET', claim) == ARGV[2] then
    redis.call('PEXPIRE', claim, ARGV[3])
    table.insert(held, ARGV[i])
  end
end
return held
"""

# ARGV: P, now -> number replayed
_REPLAY = (
    _LIB
    + """
local dead = redis.call('LRANGE', P..'dead', 0, -1)
redis.call('DEL', P..'dead')
for _, raw in ipairs(dead) do
  local flat = cjson.decode(raw)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  ARGV[3] = '1' ARGV[4] = h['kind'] ARGV[5] = h['content'] ARGV[6] = h['actor'] or ''
  ARGV[7] = lane_of(h['priority'], h['kind'])
  add_items(h['ref'], ARGV[2], 3)
end
return #dead
"""
)

# ARGV: P, finished_before, dead_before -> number of incidents forgotten
_PRUNE = (
    _LIB
    + """
while true do
  local oldest = redis.call('LINDEX', P..'dead', 0)
  if not oldest then break end
  local flat = cjson.decode(oldest)
  local failed_at = nil
  for i = 1, #flat, 2 do if flat[i] == 'failed_at' then failed_at = tonumber(flat[i + 1]) end end
  if failed_at and failed_at >= tonumber(ARGV[3]) then break end
  redis.call('LPOP', P..'dead')
end
local removed = 0
for _, ref in ipairs(redis.call('ZRANGEBYSCORE', P..'finished', '-inf', ARGV[2])) do
  if redis.call('LLEN', P..'q:'..ref) == 0 then
    local key = redis.call('HGET', P..'inc:'..ref, 'key')
    local message = redis.call('HGET', P..'inc:'..ref, 'message_id')
    if message and message ~= '' then redis.call('DEL', P..'msg:'..message) end
    if key and redis.call('GET', P..'cur:'..key) == ref then
      redis.call('DEL', P..'cur:'..key)
      redis.call('ZREM', P..'curkeys', key)
    end
    redis.call('DEL', P..'inc:'..ref)
    redis.call('DEL', P..'tl:'..ref)
    redis.call('HDEL', P..'tl-dropped', ref)
    redis.call('ZREM', P..'finished', ref)
    redis.call('ZREM', P..'changed:firing', ref)
    redis.call('ZREM', P..'changed:resolved', ref)
    removed = removed + 1
  end
end
return removed
"""
)


# Connections to Redis at most; a call beyond them waits for one to be free. (redis-py's own
# pool refuses the 101st concurrent call at once: a storm's store calls failed with 503s, and
# the shared rate limiter, which lets its caller go when Redis cannot answer, stopped pacing.)
CONNECTIONS = 50

# The adaptive pace all replicas share (bridge.ratelimit.Pace, the same arithmetic): hash
# P..'pace' {r: requests/s now, kept within [least, most] of the configuration each script is
# given; c: what the last remembered 429 refused, 0 if none; ct: when, in ms; k: 1 if a 429
# came within the memory before it (confirmed: the pace stays under c)}.
_PACE = """
local function pace(P, least, most, start)
  local r = tonumber(redis.call('HGET', P..'pace', 'r') or start)
  return math.min(most, math.max(least, r)), tonumber(redis.call('HGET', P..'pace', 'c') or '0')
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# GCRA over Redis' own clock at the shared pace: ARGV P, burst, least, most, start -> ms to wait
# (0: go)
_RATE = (
    _PACE
    + """
local P = ARGV[1]
local now = now_ms()
local pause = tonumber(redis.call('GET', P..'pause') or '0')
if now < pause then return pause - now end
local r = pace(P, tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])
local interval, burst = 1000 / r, tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', P..'rate') or '0'), now)
local early = tat - now - interval * (burst - 1)
if early > 0 then return math.ceil(early) end
-- and never more calls in a window than the pace allows (bridge.ratelimit.window)
local calls = math.max(1, math.floor(r))
local span = calls * 1000 / r + JITTER_MS
redis.call('ZREMRANGEBYSCORE', P..'win', '-inf', now - KEPT_MS)
local since = '(' .. (now - span)
if redis.call('ZCOUNT', P..'win', since, '+inf') >= calls then
  local first = redis.call('ZRANGEBYSCORE', P..'win', since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return math.max(1, math.ceil(tonumber(first[2]) + span - now))
end
redis.call('ZADD', P..'win', now, redis.call('INCR', P..'win-seq'))
redis.call('PEXPIRE', P..'win', KEPT_MS + 1000)
redis.call('SET', P..'rate', tat + interval, 'PX', math.ceil(interval * burst) + 1000)
return 0
""".replace("KEPT_MS", str(int(STARTS_KEPT_FOR * 1000))).replace("JITTER_MS", str(JITTER * 1000))
)

# a 429: ARGV P, pause_ms, least, most, start, cut, took_ms (the refused call's round trip),
# memory_ms.
# Every replica stops until Redis' clock passes now + pause_ms; the pace is cut once per event
# (not again while the pause lasts).
_PAUSE = (
    _PACE
    + """
local P = ARGV[1]
local now = now_ms()
local until_ms = now + tonumber(ARGV[2])
local current = tonumber(redis.call('GET', P..'pause') or '0')
local least = tonumber(ARGV[3])
local r, before = pace(P, least, tonumber(ARGV[4]), ARGV[5])
if now >= current then
  local before_at = tonumber(redis.call('HGET', P..'pace', 'ct') or '0')
  local confirmed = 0
  if before > 0 and now <= before_at + tonumber(ARGV[8]) then confirmed = 1 end
  -- what Pachca refused: the calls of all replicas in the second up to the refused one's
  -- start (or the pace, if lower); to the millisecond, that one's start and the calls begun in
  -- the same one are counted (as the lone limiter's clock, finer, counts them)
  local sent = now - tonumber(ARGV[7])
  local observed = redis.call('ZCOUNT', P..'win', '(' .. (sent - 1000), sent)
  local c = math.max(least, math.min(r, math.max(observed, r / 2)))
  r = math.max(least, c * tonumber(ARGV[6]))
  redis.call('HSET', P..'pace', 'c', c, 'r', r, 'ct', now, 'k', confirmed)
end
if until_ms > current then redis.call('SET', P..'pause', until_ms, 'PX', ARGV[2]) end
return tostring(r)
"""
)

# an accepted call while calls wait for the pace: ARGV P, least, most, start, fast, memory_ms
_GROW = (
    _PACE
    + """
local P = ARGV[1]
local least, most, start = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local r, c = pace(P, least, most, ARGV[4])
local set_at = tonumber(redis.call('HGET', P..'pace', 'ct') or '0')
if c > 0 and now_ms() > set_at + tonumber(ARGV[6]) then
  c = 0  -- probe again
  redis.call('HSET', P..'pace', 'c', 0, 'k', 0)
end
local grown = math.min(most, r + tonumber(ARGV[5]) * start / r)
if c > 0 and redis.call('HGET', P..'pace', 'k') == '1' then
  grown = math.min(grown, math.max(r, c - 1, start))
end
redis.call('HSET', P..'pace', 'r', grown)
return tostring(grown)
"""
)


class SharedRateLimiter:
    """One pace for all replicas: at most `burst` calls at once, then one per 1/pace s, and
    never more in a window than the pace allows (bridge.ratelimit.window), counted in Redis.
    A 429 seen by any replica pauses them all for Retry-After and cuts the pace they share,
    which grows back with the calls Pachca accepts (bridge.ratelimit)."""

    def __init__(
        self, store: RedisStore, rate: float, burst: int, most: float | None = None
    ) -> None:
        self._store = store
        self.pace = Pace(rate, max(rate, most or rate))
        self.rate = rate
        self._burst = max(1, burst)
        self._busy_until = 0.0
        self._urgent = 0  # URGENT callers of this replica waiting
        self._rate = store._redis.register_script(_RATE)
        self._pause = store._redis.register_script(_PAUSE)
        self._grow = store._redis.register_script(_GROW)
        self.on_pause: Callable[[float], None] = no_report

    def _bounds(self) -> list[float]:
        return [self.pace.least, self.pace.most, self.pace.start]

    async def acquire(self) -> None:
        """A shared token; in this replica, `URGENT` callers go before the others (across
        replicas, calls are not ranked)."""
        urgent = URGENT.get()
        self._urgent += urgent
        try:
            await self._take(urgent)
        finally:
            self._urgent -= urgent

    async def _take(self, urgent: bool) -> None:
        while True:
            if not urgent and self._urgent:
                await asyncio.sleep(1 / self.rate)  # the next token is an urgent caller's
                continue
            try:
                wait_ms = int(
                    await self._rate(args=[self._store.prefix, self._burst, *self._bounds()])
                )
            except RedisError:
                return  # Redis down: the store fails loudly elsewhere; do not block Pachca
            if wait_ms <= 0:
                return
            if wait_ms >= PAUSE_REPORT_THRESHOLD * 1000:
                self.on_pause(wait_ms / 1000)
            else:
                self._busy_until = time.monotonic() + BUSY_FOR  # the pace holds calls back
            await asyncio.sleep(wait_ms / 1000)

    async def rate_limited(self, retry_after: float | None, took: float = 0.0) -> None:
        pause_ms = int((retry_after or 1.0) * 1000)
        p = self.pace
        with contextlib.suppress(RedisError):
            self.rate = float(
                await self._pause(
                    args=[
                        self._store.prefix,
                        pause_ms,
                        *self._bounds(),
                        p.cut,
                        int(took * 1000),
                        p.memory * 1000,
                    ]
                )
            )

    async def succeeded(self) -> None:
        if time.monotonic() >= self._busy_until:
            return
        p = self.pace
        with contextlib.suppress(RedisError):
            self.rate = float(
                await self._grow(
                    args=[self._store.prefix, *self._bounds(), p.fast, p.memory * 1000]
                )
            )


def _delivery_argv(delivery: Delivery) -> list[str]:
    return [
        "" if delivery.message_id is None else str(delivery.message_id),
        "" if delivery.thread_id is None else str(delivery.thread_id),
        str(delivery.rendered_version),
        repr(delivery.create_sent_at or 0),
        delivery.create_digest or "",
    ]


def _stored(fields: dict[str, str] | None) -> Stored | None:
    """An incident's hash as read from Redis (None: gone)."""
    if not fields or "body" not in fields:
        return None
    return Stored(
        Incident.model_validate_json(fields["body"]),
        Delivery(
            message_id=int(fields["message_id"]) if fields.get("message_id") else None,
            thread_id=int(fields["thread_id"]) if fields.get("thread_id") else None,
            rendered_version=int(fields.get("rendered_version", 0)),
            create_sent_at=_sent_at(fields.get("create_attempted")),
            create_digest=fields.get("create_digest") or None,
        ),
    )


def _sent_at(value: str | None) -> float | None:
    """When a create of unknown outcome was sent: "0" or nothing for none ("1", as older
    versions wrote, for long ago)."""
    sent = float(value) if value else 0.0
    return sent or None


def _item(fields: dict[str, str]) -> OutboxItem:
    actor = fields.get("actor") or ""
    return OutboxItem(
        id=int(fields["id"]),
        ref=fields["ref"],
        kind=fields["kind"],
        content=fields.get("content", ""),
        created_at=float(fields["created_at"]),
        attempts=int(fields.get("attempts", 0)),
        actor=int(actor) if actor else None,
        priority=int(fields.get("priority") or (1 if fields["kind"] == "create" else OTHER)),
        begun_at=float(fields["begun_at"]) if fields.get("begun_at") else None,
    )


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def _items_argv(items: list[NewOutboxItem]) -> list[str]:
    argv = [str(len(items))]
    for item in items:
        actor = "" if item.actor is None else str(item.actor)
        argv += [item.kind, item.content, actor, str(item.priority)]
    return argv


class RedisStore:
    claims_lapse = True

    def __init__(
        self, url: str, password: str | None = None, claim_ttl: float = 60.0, prefix: str = PREFIX
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.claim_ms = int(claim_ttl * 1000)
        # who holds a claim: unique per process
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            password=password,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=5,
            max_connections=CONNECTIONS,
            timeout=5,  # waiting for a free connection, then a StoreError like any other
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._scripts = {
            name: self._redis.register_script(source)
            for name, source in (
                ("save", _SAVE),
                ("enqueue", _ENQUEUE),
                ("claim", _CLAIM),
                ("settle", _SETTLE),
                ("begin", _BEGIN),
                ("replay", _REPLAY),
                ("prune", _PRUNE),
                ("record", _RECORD),
                ("hold", _HOLD),
                ("look", _LOOK),
                ("look facts", _LOOK_FACTS),
                ("briefs", _BRIEFS),
                ("without alerts", _WITHOUT_ALERTS),
                ("index", _INDEX),
            )
        }

    async def _eval(self, script: str, *argv: str) -> Any:
        try:
            return await self._scripts[script](args=[self.prefix, *argv])
        except RedisError as exc:
            raise StoreError(f"redis {script}: {exc}") from exc

    async def _do(self, what: str, call: Any) -> Any:
        try:
            return await call
        except RedisError as exc:
            raise StoreError(f"redis {what}: {exc}") from exc

    async def open(self) -> None:
        await self.ping()
        if await self._do("open", self._redis.get(self._k("indexed"))) != INDEX_VERSION:
            await self._index_open()

    async def _index_open(self) -> None:
        """Data written by a version that kept no alert index, no route index or no order of
        change: index the open incidents and place every one held, once (replicas starting
        together may each do it: indexing is idempotent)."""
        await self._place_held()
        async for page in open_pages(self):
            for incident in page:
                await self._eval(
                    "index",
                    incident.ref,
                    "1" if shows_silence(incident) else "",
                    json.dumps(sorted(incident.alerts)),
                    incident.route,
                )
        await self._do("open", self._redis.set(self._k("indexed"), INDEX_VERSION))

    async def _place_held(self) -> None:
        """Every incident held gets its place in the order of change (`changed:*`)."""
        prefix = self._k("inc", "")
        try:
            refs = [str(k).removeprefix(prefix) async for k in self._redis.scan_iter(prefix + "*")]
        except RedisError as exc:
            raise StoreError(f"redis scan: {exc}") from exc
        for start in range(0, len(refs), OPEN_PAGE):
            pipe = self._redis.pipeline(transaction=False)
            for stored in await self.load_many(refs[start : start + OPEN_PAGE], alerts=False):
                incident = stored.incident
                firing = incident.state is IncidentState.FIRING
                pipe.zadd(
                    self._k("changed:firing" if firing else "changed:resolved"),
                    {incident.ref: incident.changed_at.timestamp()},
                )
            await self._do("open", pipe.execute())

    async def shown_silenced(self) -> list[str]:
        return sorted(await self._do("silenced", self._redis.smembers(self._k("silenced"))))

    async def holding(self, fingerprints: Sequence[str]) -> list[str]:
        refs: set[str] = set()
        for start in range(0, len(fingerprints), HOLDING_PER_TRIP):
            pipe = self._redis.pipeline(transaction=False)
            for fingerprint in fingerprints[start : start + HOLDING_PER_TRIP]:
                pipe.smembers(self._k("fp", fingerprint))
            for members in await self._do("holding", pipe.execute()):
                refs.update(members)
        return sorted(refs)

    async def setting(self, name: str) -> str | None:
        value = await self._do("setting", self._redis.hget(self._k("settings"), name))
        return str(value) if value is not None else None

    async def put_setting(self, name: str, value: str) -> None:
        await self._do("setting", self._redis.hset(self._k("settings"), name, value))

    async def close(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> None:
        await self._do("ping", self._redis.ping())

    async def checkpoint(self) -> None:
        return None  # Redis persists on its own

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _stored(self, ref: str | None) -> Stored | None:
        if not ref:
            return None
        fields = await self._do("load", self._redis.hgetall(self._k("inc", ref)))
        return _stored(fields)

    async def open_refs(self) -> list[str]:
        return sorted(await self._do("open", self._redis.smembers(self._k("open"))))

    async def open_refs_on(self, routes: Sequence[str]) -> list[str]:
        pipe = self._redis.pipeline(transaction=False)
        for route in routes:
            pipe.sinter([self._k("route", route), self._k("open")])
        refs: set[str] = set()
        for members in await self._do("open", pipe.execute()):
            refs.update(members)
        return sorted(refs)

    async def load_many(self, refs: list[str], alerts: bool = True) -> list[Stored]:
        """One round trip for the page (a pipeline of HGETALLs); without alerts, one script
        call per LOOKS_PER_CALL that cuts them out of the bodies (what is parsed here is a
        tenth of an incident of ten alerts)."""
        if alerts:
            pipe = self._redis.pipeline(transaction=False)
            for ref in refs:
                pipe.hgetall(self._k("inc", ref))
            return [s for s in map(_stored, await self._do("load", pipe.execute())) if s]
        hashes = []
        for start in range(0, len(refs), LOOKS_PER_CALL):
            for flat in await self._eval("without alerts", *refs[start : start + LOOKS_PER_CALL]):
                hashes.append(dict(zip(flat[::2], flat[1::2], strict=True)))
        found = [s for s in map(_stored, hashes) if s]
        return [without_alerts(s) if s.incident.alerts else s for s in found]

    async def load_incident(self, key: str) -> Stored | None:
        ref = await self._do("load", self._redis.get(self._k("cur", key)))
        return await self._stored(ref)

    async def load_by_ref(self, ref: str) -> Stored | None:
        return await self._stored(ref)

    async def load_group(self, prefix: str) -> list[Stored]:
        """By the `curkeys` sorted set (all current keys, score 0, read by lexical range)."""
        low, high = b"[" + prefix.encode(), b"(" + prefix.encode() + b"\xff"
        keys = await self._do("load", self._redis.zrangebylex(self._k("curkeys"), low, high))
        found = []
        for key in keys:
            ref = await self._do("load", self._redis.get(self._k("cur", str(key))))
            stored = await self._stored(ref)
            if stored is not None:
                found.append(stored)
        return found

    async def open_incidents(self) -> list[Incident]:
        return [incident async for page in open_pages(self) for incident in page]

    async def looks_due(self, before: float, limit: int) -> list[str]:
        refs = await self._do(
            "looks",
            self._redis.zrangebyscore(self._k("looks"), "-inf", f"({before}", 0, limit),
        )
        return [str(ref) for ref in refs]

    async def look_again(self, looks: Sequence[Look]) -> None:
        for start in range(0, len(looks), LOOKS_PER_CALL):
            args = []
            for ref, version, at in looks[start : start + LOOKS_PER_CALL]:
                args += [ref, str(version), "" if at is None else repr(at)]
            await self._eval("look", *args)

    async def _picked(self, script: str, refs: list[str]) -> list[list[Any]]:
        """[ref, field, values] of each incident still held, picked out of its body by
        `script` (see `_picking`), a call per LOOKS_PER_CALL incidents."""
        rows: list[list[Any]] = []
        for start in range(0, len(refs), LOOKS_PER_CALL):
            rows += json.loads(await self._eval(script, *refs[start : start + LOOKS_PER_CALL]))
        return rows

    async def look_facts(self, refs: list[str]) -> list[LookFacts]:
        return [
            LookFacts.from_json(ref, int(version), values)
            for ref, version, values in await self._picked("look facts", refs)
        ]

    async def briefs(self, refs: list[str]) -> list[Brief]:
        by_ref = {
            ref: Brief.from_json(ref, int(message) if message else None, values)
            for ref, message, values in await self._picked("briefs", refs)
        }
        return [b for b in (by_ref.get(ref) for ref in refs) if b is not None]

    async def all_incidents(self) -> list[Stored]:
        out = []
        try:
            async for key in self._redis.scan_iter(match=self._k("inc", "*"), count=500):
                stored = await self._stored(str(key).removeprefix(self._k("inc", "")))
                if stored is not None:
                    out.append(stored)
        except RedisError as exc:
            raise StoreError(f"redis scan: {exc}") from exc
        return out

    async def changed(
        self, firing: bool, since: float, below: Place | None, limit: int
    ) -> list[Place]:
        """From the state's sorted set, most recent first; members of `below`'s score are in
        reverse ref order there too, so those not after it are skipped (read on past them)."""
        key = self._k("changed:firing" if firing else "changed:resolved")
        top = repr(below.changed_at) if below is not None else "+inf"
        places: list[Place] = []
        offset = 0
        while len(places) < limit:
            found = await self._do(
                "changed",
                self._redis.zrevrangebyscore(
                    key, top, repr(since), start=offset, num=limit, withscores=True
                ),
            )
            places += [
                place
                for place in (Place(score, str(ref)) for ref, score in found)
                if below is None or place < below
            ]
            if len(found) < limit:
                break
            offset += len(found)
        return places[:limit]

    async def find_by_message(self, message_id: int) -> str | None:
        ref = await self._do("message", self._redis.get(self._k("msg", str(message_id))))
        return str(ref) if ref else None

    async def save_incident(
        self,
        incident: Incident,
        replaces: tuple[str, int] | None,
        items: list[NewOutboxItem],
        now: float,
        event_id: str | None = None,
        timeline: Sequence[Event] = (),
    ) -> None:
        finished = str(incident.changed_at.timestamp()) if incident.finished else ""
        answer = await self._eval(
            "save",
            incident.key,
            incident.ref,
            str(incident.version),
            incident.model_dump_json(),
            finished,
            replaces[0] if replaces else "",
            str(replaces[1]) if replaces else "",
            str(now),
            event_id or "",
            "1" if shows_silence(incident) else "",
            json.dumps(sorted(incident.alerts)),
            incident.route,
            repr(incident.changed_at.timestamp()),
            "1" if incident.state is IncidentState.FIRING else "",
            *_items_argv(items),
            *(event.to_json() for event in timeline),
        )
        if answer == "CONFLICT":
            raise ConflictError(f"incident {incident.key!r} changed under this write")
        if answer == "DUPLICATE":
            raise DuplicateEvent(str(event_id))

    async def enqueue(
        self,
        ref: str,
        items: list[NewOutboxItem],
        now: float,
        event_id: str | None = None,
        timeline: Sequence[Event] = (),
    ) -> None:
        answer = await self._eval(
            "enqueue",
            ref,
            str(now),
            event_id or "",
            *_items_argv(items),
            *(event.to_json() for event in timeline),
        )
        if answer == "DUPLICATE":
            raise DuplicateEvent(str(event_id))

    async def set_swap(self, schedule: str, who: str, start: float, end: float) -> None:
        body = json.dumps({"who": who, "start": start, "end": end})
        await self._do("swap", self._redis.hset(self._k("swaps"), schedule, body))

    async def clear_swap(self, schedule: str) -> None:
        await self._do("swap", self._redis.hdel(self._k("swaps"), schedule))

    async def swaps(self, now: float) -> list[SwapRecord]:
        raw = await self._do("swaps", self._redis.hgetall(self._k("swaps")))
        out = []
        for schedule, body in raw.items():
            fields = json.loads(body)
            if float(fields["end"]) > now:
                out.append(
                    SwapRecord(
                        str(schedule), fields["who"], float(fields["start"]), float(fields["end"])
                    )
                )
        return out

    async def save_calendar(self, schedule: str, text: str) -> None:
        await self._do("calendar", self._redis.hset(self._k("calendars"), schedule, text))

    async def calendar(self, schedule: str) -> str | None:
        text = await self._do("calendar", self._redis.hget(self._k("calendars"), schedule))
        return str(text) if text is not None else None

    async def event_seen(self, event_id: str) -> bool:
        return bool(await self._do("event", self._redis.exists(self._k("ev", event_id))))

    async def record_delivery(self, ref: str, delivery: Delivery) -> None:
        """Recorded only while no other replica holds the incident's claim (ClaimLost)."""
        if await self._eval("record", ref, self.owner, *_delivery_argv(delivery)) == "LOST":
            raise ClaimLost(f"incident {ref} is now delivered by another replica")

    async def hold(self, refs: list[str]) -> list[str]:
        """Extend this replica's claims on `refs` (a delivery is still running); returns the
        refs it still holds."""
        if not refs:
            return []
        return [str(r) for r in await self._eval("hold", self.owner, str(self.claim_ms), *refs)]

    async def due_items(self, now: float, limit: int) -> list[OutboxItem]:
        """Claims what it returns: other replicas skip these incidents until the items are
        settled or the claim lapses."""
        found = await self._eval("claim", str(now), str(limit), self.owner, str(self.claim_ms))
        return [_item(_pairs(flat)) for flat in found]

    async def _settle(
        self,
        item_id: int,
        mode: str,
        not_before: float = 0.0,
        error: str = "",
        now: float = 0.0,
        delivery: Delivery | None = None,
        note: Event | None = None,
    ) -> None:
        extra = _delivery_argv(delivery) if delivery is not None else []
        answer = await self._eval(
            "settle",
            str(item_id),
            self.owner,
            mode,
            str(not_before),
            error,
            str(now),
            note.to_json() if note is not None else "",
            *extra,
        )
        if answer == "LOST":
            raise ClaimLost(f"item {item_id} is now delivered by another replica")

    async def begin_item(self, item_id: int, at: float) -> None:
        if await self._eval("begin", str(item_id), self.owner, repr(at)) == "LOST":
            raise ClaimLost(f"item {item_id} is now delivered by another replica")

    async def finish_item(
        self,
        item_id: int,
        delivery: tuple[str, Delivery] | None = None,
        note: Event | None = None,
    ) -> None:
        # the delivery is recorded in the same script, and only if the claim is still ours
        await self._settle(item_id, "finish", delivery=delivery[1] if delivery else None, note=note)

    async def retry_item(
        self, item_id: int, not_before: float, error: str, note: Event | None = None
    ) -> None:
        await self._settle(item_id, "retry", not_before, error, note=note)

    async def dead_letter(
        self, item: OutboxItem, error: str, now: float, note: Event | None = None
    ) -> None:
        await self._settle(item.id, "dead", error=error, now=now, note=note)

    async def timeline(self, ref: str) -> tuple[list[Event], int]:
        raw = await self._do("timeline", self._redis.lrange(self._k("tl", ref), 0, -1))
        dropped = await self._do("timeline", self._redis.hget(self._k("tl-dropped"), ref))
        return [Event.from_json(text) for text in raw], int(dropped or 0)

    async def dead_letters(self) -> list[DeadLetter]:
        raw = await self._do("dead", self._redis.lrange(self._k("dead"), 0, -1))
        letters = []
        for entry in raw:
            fields = _pairs(json.loads(entry))
            letters.append(DeadLetter(_item(fields), fields["error"], float(fields["failed_at"])))
        return letters

    async def replay_dead_letters(self, now: float) -> int:
        return int(await self._eval("replay", str(now)))

    async def prune(self, finished_before: float, events_before: float, dead_before: float) -> int:
        # processed event ids expire by themselves (EVENT_TTL_SECONDS); dead letters are kept
        # in the order they failed, so the old ones are at the list's head
        return int(await self._eval("prune", str(finished_before), str(dead_before)))

    async def outbox_stats(self, now: float) -> Backlog:
        """Depth from a counter kept by the scripts; age of the earliest due head (its
        `not_before`, which is its creation time unless it is waiting for a retry)."""
        try:
            depth = int(await self._redis.get(self._k("depth")) or 0)
            dead = int(await self._redis.llen(self._k("dead")))
            earliest: list[float] = []
            for name in LANES:
                firsts = await self._redis.zrange(self._k(name), 0, 0, withscores=True)
                earliest += [float(pair[1]) for pair in firsts]
        except RedisError as exc:
            raise StoreError(f"redis stats: {exc}") from exc
        return Backlog(depth, max(0.0, now - min(earliest)) if earliest else 0.0, dead)
