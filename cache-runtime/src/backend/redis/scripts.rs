//! The Lua scripts of the Redis backend: every operation but a hit is one
//! call of one of these, naming all the keys it touches (all of one group,
//! so of one cluster slot) in `KEYS`.

use once_cell::sync::Lazy;
use redis::Script;

/// The scripts of reads and writes, loaded on first contact (all but the
/// repair of keys of the wrong type).
pub(super) static PRELOADED: [&Lazy<Script>; 11] = [
    &EPOCH,
    &LOOKUP,
    &FILL,
    &RELEASE,
    &LOCK_MANY,
    &FILL_MANY,
    &BEGIN_WRITE,
    &END_WRITE,
    &REPLACE,
    &EVICT_GROUP,
    &PIN,
];

/// Lua that gives dependency records a new token when a write changes what
/// they name: `now` is the server's clock in microseconds, which a token
/// starts with; `bump(k)` replaces an existing record's token (keeping its
/// TTL) and leaves an absent one absent; `written(k)` gives the group's
/// record a new token whether or not it exists, and no TTL: it is the
/// group's write clock, which says when a record that does not exist was
/// last written at the latest.
macro_rules! bump_lua {
    () => {
        r"
local clock = redis.call('TIME')
local now = clock[1] .. string.format('%06d', tonumber(clock[2]))
local function bump(k)
  local old = redis.call('GET', k)
  if old then redis.call('SET', k, now .. ':' .. string.sub(redis.sha1hex(old), 1, 12), 'KEEPTTL') end
end
local function written(k)
  local old = redis.call('GET', k) or ''
  redis.call('SET', k, now .. ':' .. string.sub(redis.sha1hex(old), 1, 12))
end
"
    };
}

/// Lua that reads a group's generation (see `backend/epochs.rs`). A fresh
/// generation `fresh` that starts with `*` asks that generations start
/// with this server's epoch, the head of its `run_id`: `epoch(fresh)` gives
/// the epoch (`''` when not asked, or when the user may not run `INFO`)
/// and the fresh token. `live_gen(k, fresh, create)` gives the generation
/// in `k` when it is of this epoch; one of another was written before the
/// server restarted or failed over, and counts as absent: a new one is
/// made when `create`, else it gives nil.
macro_rules! gen_lua {
    () => {
        r"
local function epoch(fresh)
  if string.sub(fresh, 1, 1) ~= '*' then return '', fresh end
  local info = redis.pcall('INFO', 'server')
  local id = type(info) == 'string' and string.match(info, 'run_id:(%x%x%x%x%x%x%x%x)')
  if not id then return '', string.sub(fresh, 2) end
  return id .. '.', string.sub(fresh, 2)
end
local function live_gen(k, fresh, create)
  local gen = redis.call('GET', k)
  local e, token = epoch(fresh)
  if gen and string.sub(gen, 1, #e) == e then return gen end
  if not create then return nil end
  gen = e .. token
  redis.call('SET', k, gen)
  return gen
end
"
    };
}

/// KEYS: any key of the node to ask. Returns the server's `run_id`, whose
/// head is the epoch that its generations start with.
pub(super) static EPOCH: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
",
    )
});

/// KEYS: entry, gen, lease. ARGV: mode (peek|lease|lock|refresh|force|forcelock|keep),
/// new token, lease ms, fresh gen. Returns the envelope on a hit, `{token,
/// gen}` for a lease, `{holder, gen, 'held'}` when another caller holds it,
/// nil otherwise. `keep` takes the lease beside a live value, leaving it.
pub(super) static LOOKUP: Lazy<Script> = Lazy::new(|| {
    Script::new(concat!(
        gen_lua!(),
        r"
local mode = ARGV[1]
local gen = live_gen(KEYS[2], ARGV[4], mode ~= 'peek')
if not gen then return nil end
local e = redis.call('GET', KEYS[1])
local live = e and string.sub(e, 1, #gen) == gen
local l = redis.call('HMGET', KEYS[3], 't', 'lg')
local held = l[1] and l[2] == gen
if mode == 'refresh' then
  if not live or held then return nil end
  redis.call('HSET', KEYS[3], 't', ARGV[2], 'lg', gen)
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  return {ARGV[2], gen}
end
if live and mode ~= 'force' and mode ~= 'forcelock' and mode ~= 'keep' then
  return string.sub(e, #gen + 1)
end
if mode == 'peek' then
  if held then return {l[1], gen, 'held'} end
  return nil
end
if held then
  if mode == 'lock' or mode == 'forcelock' or mode == 'keep' then return {l[1], gen, 'held'} end
  return {l[1], gen}
end
redis.call('HSET', KEYS[3], 't', ARGV[2], 'lg', gen)
redis.call('PEXPIRE', KEYS[3], ARGV[3])
if not (live and mode == 'keep') then redis.call('DEL', KEYS[1]) end
return {ARGV[2], gen}
",
    ))
});

/// A bulk call's leases. KEYS: gen, then each key's entry and lease.
/// ARGV: lease ms, fresh gen, then each key's token and mode (`lock`;
/// `forcelock` past its value; `keep` beside its value, left in place).
/// Returns, per key, the envelope on a hit, `{token, gen}` for a lease
/// taken, `{holder, gen, 'held'}` when another caller holds it.
pub(super) static LOCK_MANY: Lazy<Script> = Lazy::new(|| {
    Script::new(concat!(
        gen_lua!(),
        r"
local gen = live_gen(KEYS[1], ARGV[2], true)
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local entry, lease = KEYS[2 * i], KEYS[2 * i + 1]
  local token, mode = ARGV[2 * i + 1], ARGV[2 * i + 2]
  local e = redis.call('GET', entry)
  local l = redis.call('HMGET', lease, 't', 'lg')
  local live = e and string.sub(e, 1, #gen) == gen
  if live and mode == 'lock' then
    out[i] = string.sub(e, #gen + 1)
  elseif l[1] and l[2] == gen then
    out[i] = {l[1], gen, 'held'}
  else
    redis.call('HSET', lease, 't', token, 'lg', gen)
    redis.call('PEXPIRE', lease, ARGV[1])
    if not (live and mode == 'keep') then redis.call('DEL', entry) end
    out[i] = {token, gen}
  end
end
return out
",
    ))
});

/// A bulk call's fills. KEYS: gen, then each key's entry and lease. ARGV:
/// per key, its lease token, lease gen, envelope and ttl ms. Stores each
/// whose lease still holds; returns how many.
pub(super) static FILL_MANY: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local gen = redis.call('GET', KEYS[1])
local stored = 0
for i = 1, (#KEYS - 1) / 2 do
  local entry, lease = KEYS[2 * i], KEYS[2 * i + 1]
  local at = 4 * (i - 1)
  if gen == ARGV[at + 2] and redis.call('HGET', lease, 't') == ARGV[at + 1] then
    redis.call('SET', entry, gen .. ARGV[at + 3], 'PX', ARGV[at + 4])
    redis.call('DEL', lease)
    stored = stored + 1
  end
end
return stored
",
    )
});

/// KEYS: lease. ARGV: lease token. Drops the lease if it is still this one.
pub(super) static RELEASE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// KEYS: entry, gen, lease. ARGV: lease token, lease gen, envelope, ttl ms
/// (0: the entry's own, and nothing stored once it is gone).
pub(super) static FILL: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[3], 't') ~= ARGV[1] then return 0 end
local px = ARGV[4]
if px == '0' then
  px = redis.call('PTTL', KEYS[1])
  if px <= 0 then
    redis.call('DEL', KEYS[3])
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2] .. ARGV[3], 'PX', px)
redis.call('DEL', KEYS[3])
return 1
",
    )
});

/// KEYS: writers, gen. ARGV: writer token, lease ms, fresh gen. Returns the gen.
pub(super) static BEGIN_WRITE: Lazy<Script> = Lazy::new(|| {
    Script::new(concat!(
        gen_lua!(),
        r"
local n = tonumber(redis.call('HGET', KEYS[1], 'n')) or 0
if n > 0 then redis.call('HSET', KEYS[1], 'c', '1') end
redis.call('HSET', KEYS[1], 'w', ARGV[1], 'n', n + 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return live_gen(KEYS[2], ARGV[3], true)
",
    ))
});

/// KEYS: entry, writers, gen, lease, the key's dependency record, the
/// group's. ARGV: writer token, gen at begin, mode (store|evict|abort),
/// envelope, ttl ms. Returns 1 when it stored.
pub(super) static END_WRITE: Lazy<Script> = Lazy::new(|| {
    Script::new(concat!(
        bump_lua!(),
        r"
if ARGV[3] ~= 'abort' then
  bump(KEYS[5])
  written(KEYS[6])
end
local w = redis.call('HMGET', KEYS[2], 'w', 'c', 'n')
local sole = w[1] == ARGV[1] and not w[2] and redis.call('GET', KEYS[3]) == ARGV[2]
local stored = 0
if ARGV[3] == 'store' and sole then
  redis.call('SET', KEYS[1], ARGV[2] .. ARGV[4], 'PX', ARGV[5])
  redis.call('DEL', KEYS[4])
  stored = 1
elseif ARGV[3] ~= 'abort' then
  redis.call('DEL', KEYS[1], KEYS[4])
end
local n = (tonumber(w[3]) or 1) - 1
if n <= 0 then redis.call('DEL', KEYS[2]) else redis.call('HSET', KEYS[2], 'n', n) end
return stored
",
    ))
});

/// KEYS: entry, writers, gen, lease, the key's dependency record, the
/// group's; and for a write-behind, its pending record and stream. ARGV: envelope,
/// ttl ms and fresh gen to store, or nothing to only invalidate; and for a
/// write-behind, the key's JSON and entry text. Returns 1 when a live value was there, or
/// for a write-behind the id of its stream entry. A write-behind's `XADD`
/// goes first: refused (no stream rights, Redis full), it leaves all as it was.
pub(super) static REPLACE: Lazy<Script> = Lazy::new(|| {
    Script::new(concat!(
        bump_lua!(),
        gen_lua!(),
        r"
local logged
if KEYS[8] then logged = redis.call('XADD', KEYS[8], '*', 'k', ARGV[5]) end
bump(KEYS[5])
written(KEYS[6])
local gen = live_gen(KEYS[3], ARGV[3] or '', ARGV[1] ~= nil)
local e = redis.call('GET', KEYS[1])
local existed = gen and e and string.sub(e, 1, #gen) == gen
if ARGV[1] then
  redis.call('SET', KEYS[1], gen .. ARGV[1], 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[4])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'c', '1') end
if logged then
  redis.call('HSET', KEYS[7], 'k', ARGV[4], 'v', ARGV[1], 'id', logged, 'a', 0)
end
if logged then return logged end
if existed then return 1 end
return 0
",
    ))
});

/// KEYS: gen, when the group was last evicted, the group's dependency
/// record. ARGV: a new generation.
/// Evicts the group in one write, whatever its size.
pub(super) static EVICT_GROUP: Lazy<Script> = Lazy::new(|| {
    Script::new(concat!(
        bump_lua!(),
        gen_lua!(),
        r"
local e, token = epoch(ARGV[1])
redis.call('SET', KEYS[1], e .. token)
redis.call('SET', KEYS[2], now)
written(KEYS[3])
return 1
",
    ))
});

/// KEYS: gen, when the group was last evicted, the group's record (its
/// write clock), then dependency records of the group. ARGV: their TTL in
/// ms, a fresh generation, then a fresh token per record. Makes what is
/// absent: a record's token and the eviction time start with the time of
/// the group's last write (0 for none), when they were last written at the
/// latest. Extends each record to live at least the TTL. Returns the
/// clock, the generation, the eviction time and each record's token.
pub(super) static PIN: Lazy<Script> = Lazy::new(|| {
    Script::new(concat!(
        gen_lua!(),
        r"
local clock = redis.call('TIME')
local now = clock[1] .. string.format('%06d', tonumber(clock[2]))
local ttl = tonumber(ARGV[1])
local gen = live_gen(KEYS[1], ARGV[2], true)
local written = string.match(redis.call('GET', KEYS[3]) or '0', '^%d+') or '0'
local evicted = redis.call('GET', KEYS[2])
if not evicted then
  evicted = written
  redis.call('SET', KEYS[2], written)
end
local out = {now, gen, evicted}
for i = 4, #KEYS do
  local r = redis.call('GET', KEYS[i])
  if r then
    local left = redis.call('PTTL', KEYS[i])
    if left >= 0 and left < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  else
    r = written .. '-' .. ARGV[i - 1]
    redis.call('SET', KEYS[i], r, 'PX', ttl)
  end
  out[#out + 1] = r
end
return out
",
    ))
});

/// KEYS: the keys an operation touches; ARGV: the type each must hold.
/// Deletes those holding another type; returns how many.
pub(super) static REPAIR: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local repaired = 0
for i = 1, #KEYS do
  local found = redis.call('TYPE', KEYS[i]).ok
  if found ~= ARGV[i] and found ~= 'none' then
    redis.call('DEL', KEYS[i])
    repaired = repaired + 1
  end
end
return repaired
",
    )
});
