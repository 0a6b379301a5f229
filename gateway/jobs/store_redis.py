"""The Redis job store: records in hashes, queues in sorted sets, event logs in Redis Streams,
leases as expiring keys renewed by the runner's heartbeat, and every transition in one Lua script.

Keys (prefix `capmesh:`): `job:<id>` (hash), `job:<id>:events` (stream; entry ids are event ids),
`job:<id>:log` (the same events as a list, once the job has finished a while), `job:<id>:result`,
`job:<id>:lease` (the owner, expiring), `jobq:<capability>` (queue, score from priority then
sequence), `jobs:delayed` (retries by ready time), `jobs:running`, `jobs:deadlines`, `jobs:index`
(by creation), `jobs:finished` (by finish time, until their events are compacted),
`jobs:label:<len(key)>:<key>=<value>` (a label's jobs by creation, expiring with the last of them),
`jobs:caps`, `jobs:seq`, `jobreq:<request_id>`; pub/sub channel
`jobs:signals` carries "wake:<capability>" and "cancel:<job_id>" between gateways.

What a finished job keeps, for its retention (24 h result, 7 days record): its hash, its event
stream and its result. Finishing drops what only running needed (the request, the queue score) and
empty fields, and writes the hash anew: Redis stores a hash whose values are all 64 bytes or less
as one compact listpack (~0.6 KB here), but once a larger value (a request) made it a hash table
(~1.6 KB) it stays one. An event stream costs ~4.7 KB however few its events (Redis allocates
each stream node's 4 KB at once), so a while after a job finished (`compact`, called by the
maintenance loop once no watcher can still be blocked on the stream) its events move to a plain
list, which costs what they weigh; readers take whichever form exists.
"""

from __future__ import annotations

import asyncio
import inspect
import re

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from capmesh.gateway.server.jobs.record import JobRecord
from capmesh.gateway.server.jobs.store import QueueFull, Signal
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.services.runtime.errors import InvalidArgument
from capmesh.services.runtime.tasks import stop_tasks

log = structlog.get_logger("capmesh.jobs")

_EVENT_ID = re.compile(r"\d+-\d+")

# State numbers as strings, as the scripts see them.
_S_QUEUED, _S_RUNNING = str(jobs_pb2.JOB_STATE_QUEUED), str(jobs_pb2.JOB_STATE_RUNNING)
_TERMINAL = (
    "{"
    + ",".join(
        f"['{s}']=true" for s in (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED)
    )
    + "}"
)

_SUBMIT = """
local P, id, rid, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if rid ~= '' then
  local existing = redis.call('GET', P..'jobreq:'..rid)
  if existing and redis.call('EXISTS', P..'job:'..existing) == 1 then return {'existing', existing} end
end
local q = P..'jobq:'..cap
local queued = redis.call('ZCARD', q)
if queued >= tonumber(ARGV[5]) then return {'full', tostring(queued)} end
local seq = redis.call('INCR', P..'jobs:seq')
local score = string.format('%.0f', (100 - tonumber(ARGV[6])) * 1000000000 + seq)
local h = P..'job:'..id
redis.call('HSET', h, 'score', score, unpack(ARGV, 11))
redis.call('PEXPIRE', h, ARGV[9])
redis.call('ZADD', q, score, id)
redis.call('ZADD', P..'jobs:deadlines', ARGV[7], id)
redis.call('ZADD', P..'jobs:index', ARGV[8], id)
for _, label in ipairs(KEYS) do
  redis.call('ZADD', label, ARGV[8], id)
  if redis.call('PTTL', label) < tonumber(ARGV[9]) then redis.call('PEXPIRE', label, ARGV[9]) end
end
redis.call('SADD', P..'jobs:caps', cap)
if rid ~= '' then redis.call('SET', P..'jobreq:'..rid, id, 'PX', ARGV[9]) end
local ahead = redis.call('ZCOUNT', q, '-inf', '('..score)
local events = h..':events'
redis.call('XADD', events, '*', 'e', ARGV[10], 'pos', ahead)
redis.call('PEXPIRE', events, ARGV[9])
return {'created', id}
"""

_CLAIM = f"""
local P, q = ARGV[1], ARGV[1]..'jobq:'..ARGV[2]
while true do
  local popped = redis.call('ZPOPMIN', q)
  if #popped == 0 then return false end
  local id = popped[1]
  local h = P..'job:'..id
  if redis.call('HGET', h, 'state') == '{_S_QUEUED}' and redis.call('HGET', h, 'cancel') ~= '1' then
    redis.call('SET', h..':lease', ARGV[3], 'PX', ARGV[4])
    redis.call('SADD', P..'jobs:running', id)
    redis.call('HINCRBY', h, 'attempt', 1)
    redis.call('HSET', h, 'state', '{_S_RUNNING}', 'owner', ARGV[3], 'start_time', ARGV[5], 'backend_id', '')
    return id
  end
end
"""

_RENEW = """
local h = ARGV[1]..'job:'..ARGV[2]
if redis.call('GET', h..':lease') ~= ARGV[3] then return {0, 0} end
redis.call('PEXPIRE', h..':lease', ARGV[4])
if redis.call('HGET', h, 'cancel') == '1' then return {1, 1} end
return {1, 0}
"""

_RECORD = """
local h = ARGV[1]..'job:'..ARGV[2]
if redis.call('GET', h..':lease') ~= ARGV[3] then return 0 end
if #ARGV >= 5 then redis.call('HSET', h, unpack(ARGV, 5)) end
if ARGV[4] ~= '' then redis.call('XADD', h..':events', '*', 'e', ARGV[4]) end
return 1
"""

_REQUEUE = f"""
local P, id = ARGV[1], ARGV[2]
local h = P..'job:'..id
if redis.call('GET', h..':lease') ~= ARGV[3] then return 0 end
if #ARGV >= 6 then redis.call('HSET', h, unpack(ARGV, 6)) end
redis.call('HSET', h, 'state', '{_S_QUEUED}', 'owner', '')
redis.call('XADD', h..':events', '*', 'e', ARGV[4])
redis.call('DEL', h..':lease')
redis.call('SREM', P..'jobs:running', id)
redis.call('ZADD', P..'jobs:delayed', ARGV[5], id)
return 1
"""

_FINISH = f"""
local P, id, owner = ARGV[1], ARGV[2], ARGV[3]
local h = P..'job:'..id
local state = redis.call('HGET', h, 'state')
if not state or ({_TERMINAL})[state] then return 0 end
if owner == '' then
  if redis.call('SISMEMBER', P..'jobs:running', id) == 1 then return 0 end
elseif redis.call('GET', h..':lease') ~= owner then
  return 0
end
redis.call('HSET', h, 'state', ARGV[4], 'owner', '')
if #ARGV >= 10 then redis.call('HSET', h, unpack(ARGV, 10)) end
local kept, all = {{}}, redis.call('HGETALL', h)
for i = 1, #all, 2 do
  if all[i + 1] ~= '' and all[i] ~= 'request' and all[i] ~= 'score' then
    kept[#kept + 1] = all[i]
    kept[#kept + 1] = all[i + 1]
  end
end
redis.call('DEL', h)
redis.call('HSET', h, unpack(kept))
if ARGV[6] ~= '' then redis.call('SET', h..':result', ARGV[6], 'PX', ARGV[7]) end
redis.call('XADD', h..':events', '*', 'e', ARGV[5])
redis.call('DEL', h..':lease')
redis.call('SREM', P..'jobs:running', id)
redis.call('ZREM', P..'jobq:'..redis.call('HGET', h, 'capability'), id)
redis.call('ZREM', P..'jobs:delayed', id)
redis.call('ZREM', P..'jobs:deadlines', id)
redis.call('PEXPIRE', h, ARGV[8])
redis.call('PEXPIRE', h..':events', ARGV[9])
redis.call('ZADD', P..'jobs:finished', redis.call('TIME')[1], id)
return 1
"""

_CANCEL = f"""
local h = ARGV[1]..'job:'..ARGV[2]
local state = redis.call('HGET', h, 'state')
if not state then return 0 end
if not ({_TERMINAL})[state] then redis.call('HSET', h, 'cancel', '1') end
return 1
"""

_PROMOTE = f"""
local P = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', P..'jobs:delayed', '-inf', ARGV[2])
local caps = {{}}
for _, id in ipairs(due) do
  redis.call('ZREM', P..'jobs:delayed', id)
  local h = P..'job:'..id
  if redis.call('HGET', h, 'state') == '{_S_QUEUED}' and redis.call('HGET', h, 'cancel') ~= '1' then
    local cap = redis.call('HGET', h, 'capability')
    redis.call('ZADD', P..'jobq:'..cap, redis.call('HGET', h, 'score'), id)
    caps[#caps + 1] = cap
  end
end
return caps
"""

_RECOVER = f"""
local P = ARGV[1]
local found = {{}}
for _, id in ipairs(redis.call('SMEMBERS', P..'jobs:running')) do
  local h = P..'job:'..id
  if redis.call('EXISTS', h..':lease') == 0 then
    redis.call('SREM', P..'jobs:running', id)
    if redis.call('EXISTS', h) == 1 then
      if redis.call('HGET', h, 'cancel') == '1' then
        found[#found + 1] = id
        found[#found + 1] = 'cancel'
      else
        local cap = redis.call('HGET', h, 'capability')
        redis.call('HSET', h, 'state', '{_S_QUEUED}', 'owner', '', 'backend_id', '')
        redis.call('ZADD', P..'jobq:'..cap, redis.call('HGET', h, 'score'), id)
        redis.call('XADD', h..':events', '*', 'e', ARGV[2], 'attempt', redis.call('HGET', h, 'attempt'))
        found[#found + 1] = id
        found[#found + 1] = cap
      end
    end
  end
end
return found
"""


# A finished job's event stream becomes a list: per entry its id, its number of fields, then the
# fields and values (RPUSH in slices: Lua's unpack has a stack limit).
_COMPACT = """
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', P..'jobs:finished', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  redis.call('ZREM', P..'jobs:finished', id)
  local events, log = P..'job:'..id..':events', P..'job:'..id..':log'
  local ttl = redis.call('PTTL', events)
  if ttl > 0 then
    local flat = {}
    for _, entry in ipairs(redis.call('XRANGE', events, '-', '+')) do
      flat[#flat + 1] = entry[1]
      flat[#flat + 1] = tostring(#entry[2] / 2)
      for _, part in ipairs(entry[2]) do flat[#flat + 1] = part end
    end
    redis.call('DEL', events)
    for first = 1, #flat, 1000 do
      redis.call('RPUSH', log, unpack(flat, first, math.min(first + 999, #flat)))
    end
    redis.call('PEXPIRE', log, ttl)
  end
end
return #ids
"""
_COMPACT_BATCH = 200  # finished jobs compacted per call; the maintenance loop calls again next tick


def _event_order(event_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = event_id.partition("-")
    return int(milliseconds), int(sequence)


def _stored(event: jobs_pb2.JobEvent) -> bytes:
    """An event as its job's log keeps it: without its job id, which the log's key says (a third
    of a progress event's bytes); `_event` puts it back on reading."""
    if not event.job_id:
        return event.SerializeToString()
    stored = jobs_pb2.JobEvent()
    stored.CopyFrom(event)
    stored.ClearField("job_id")
    return stored.SerializeToString()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _flatten(fields: dict) -> list:
    flat: list = []
    for key, value in fields.items():
        flat += [key, int(value) if isinstance(value, bool) else (repr(value) if isinstance(value, float) else value)]
    return flat


class RedisJobStore:
    durable = True

    def __init__(self, redis, prefix: str = "capmesh:") -> None:
        self._redis = redis
        self._p = prefix
        self._scripts = {
            name: redis.register_script(body)
            for name, body in (
                ("submit", _SUBMIT),
                ("claim", _CLAIM),
                ("renew", _RENEW),
                ("record", _RECORD),
                ("requeue", _REQUEUE),
                ("finish", _FINISH),
                ("cancel", _CANCEL),
                ("promote", _PROMOTE),
                ("recover", _RECOVER),
                ("compact", _COMPACT),
            )
        }
        self._channel = f"{prefix}jobs:signals"
        self._listener: asyncio.Task | None = None
        # Blocking reads (watchers) get their own pool: a watcher that goes away cancels its read
        # midway, and that connection is then dropped without touching the scheduler's.
        pool = redis.connection_pool
        self._blocking = Redis(
            connection_pool=type(pool)(connection_class=pool.connection_class, **pool.connection_kwargs)
        )

    def _job(self, job_id: str) -> str:
        return f"{self._p}job:{job_id}"

    async def _run(self, name: str, *args, keys: list[str] | None = None) -> object:
        return await self._scripts[name](keys=keys or [], args=[self._p, *args])

    def _label(self, key: str, value: str) -> str:
        """The index of jobs carrying the label (the key's length keeps `a=b`+`c` apart from `a`+`b=c`)."""
        return f"{self._p}jobs:label:{len(key)}:{key}={value}"

    async def submit(self, record, queued_event, *, queue_limit, hold_s):
        outcome, value = await self._run(
            "submit",
            record.job_id,
            record.request_id,
            record.capability,
            queue_limit,
            record.priority,
            int(record.deadline * 1000),
            int(record.create_time * 1000),
            _ms(hold_s),
            _stored(queued_event),
            *_flatten(record.to_fields()),
            keys=[self._label(k, v) for k, v in record.labels.items()],
        )
        outcome, value = outcome.decode(), value.decode()
        if outcome == "full":
            raise QueueFull(int(value))
        existing = await self.get(value)
        return existing, outcome == "created"

    async def get(self, job_id):
        records = await self._get_many([job_id])
        return records[0]

    async def _get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        """Records in one round trip (plus one for the queue positions of queued ones)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self._job(job_id))
                pipe.get(self._job(job_id) + ":result")
            answers = await pipe.execute()
        records: list[JobRecord | None] = []
        queued: list[tuple[JobRecord, bytes]] = []
        for index, job_id in enumerate(job_ids):
            raw, result = answers[2 * index], answers[2 * index + 1]
            record = JobRecord.from_fields(job_id, raw, result) if raw else None
            records.append(record)
            if record is not None and record.state == jobs_pb2.JOB_STATE_QUEUED and b"score" in raw:
                queued.append((record, raw[b"score"]))
        if queued:
            async with self._redis.pipeline(transaction=False) as pipe:
                for record, score in queued:
                    pipe.zcount(f"{self._p}jobq:{record.capability}", "-inf", f"({score.decode()}")
                for (record, _), ahead in zip(queued, await pipe.execute()):
                    record.queue_position = ahead
        return records

    async def page(self, offset, limit, labels=None):
        # One label's index is enough to read only candidates; the caller's filter checks the rest.
        index = self._label(*next(iter(labels.items()))) if labels else f"{self._p}jobs:index"
        ids = [i.decode() for i in await self._redis.zrevrange(index, offset, offset + limit - 1)]
        records = await self._get_many(ids) if ids else []
        expired = [job_id for job_id, record in zip(ids, records) if record is None]
        if expired:  # the index forgets expired jobs lazily
            await self._redis.zrem(index, *expired)
        return [record for record in records if record is not None]

    async def delete(self, job_id):
        key = self._job(job_id)
        record = await self.get(job_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key, key + ":events", key + ":log", key + ":result", key + ":lease")
            pipe.zrem(f"{self._p}jobs:finished", job_id)
            pipe.zrem(f"{self._p}jobs:index", job_id)
            for key, value in (record.labels if record is not None else {}).items():
                pipe.zrem(self._label(key, value), job_id)
            if record is not None and record.request_id:
                pipe.delete(f"{self._p}jobreq:{record.request_id}")
            await pipe.execute()

    async def capabilities(self):
        return sorted(c.decode() for c in await self._redis.smembers(f"{self._p}jobs:caps"))

    async def queue_length(self, capability):
        return await self._redis.zcard(f"{self._p}jobq:{capability}")

    async def claim(self, capability, owner, lease_s, now):
        job_id = await self._run("claim", capability, owner, _ms(lease_s), repr(now))
        return await self.get(job_id.decode()) if job_id else None

    async def renew(self, job_id, owner, lease_s):
        held, cancel = await self._run("renew", job_id, owner, _ms(lease_s))
        return bool(held), bool(cancel)

    async def record(self, job_id, owner, fields, event):
        body = _stored(event) if event is not None else b""
        return bool(await self._run("record", job_id, owner, body, *_flatten(fields)))

    async def requeue(self, job_id, owner, ready_at, fields, event):
        return bool(await self._run("requeue", job_id, owner, _stored(event), int(ready_at * 1000), *_flatten(fields)))

    async def finish(self, job_id, owner, state, fields, event, *, result, result_ttl_s, record_ttl_s):
        return bool(
            await self._run(
                "finish",
                job_id,
                owner,
                state,
                _stored(event),
                result,
                _ms(result_ttl_s),
                _ms(record_ttl_s),
                _ms(min(record_ttl_s, result_ttl_s)),
                *_flatten(fields),
            )
        )

    async def request_cancel(self, job_id):
        if not await self._run("cancel", job_id):
            return None
        return await self.get(job_id)

    async def promote_due(self, now):
        return [c.decode() for c in await self._run("promote", int(now * 1000))]

    async def recover_expired(self, event):
        flat = await self._run("recover", _stored(event))
        pairs = [(flat[i].decode(), flat[i + 1].decode()) for i in range(0, len(flat), 2)]
        return [(job_id, what == "cancel") for job_id, what in pairs]

    async def overdue(self, now):
        due = await self._redis.zrangebyscore(f"{self._p}jobs:deadlines", "-inf", int(now * 1000))
        return [i.decode() for i in due]

    def validate_event_id(self, event_id):
        if event_id and not _EVENT_ID.fullmatch(event_id):
            raise InvalidArgument.single("after_event_id", "is not an event id of this job", reason="INVALID_EVENT_ID")

    def _event(self, job_id: str, entry_id: bytes, fields: dict[bytes, bytes]) -> tuple[str, jobs_pb2.JobEvent]:
        event = jobs_pb2.JobEvent.FromString(fields[b"e"])
        event.event_id, event.job_id = entry_id.decode(), job_id
        if b"pos" in fields:
            event.progress.queue_position = int(fields[b"pos"])
        if b"attempt" in fields:
            event.attempt = int(fields[b"attempt"])
        return event.event_id, event

    async def compact(self, finished_before):
        await self._run("compact", int(finished_before), _COMPACT_BATCH)

    def _logged(self, log: list[bytes], after: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The entries of a compacted event log (see `_COMPACT`) after the id `after`."""
        entries, index = [], 0
        while index < len(log):
            entry_id, count = log[index], int(log[index + 1])
            parts = log[index + 2 : index + 2 + 2 * count]
            index += 2 + 2 * count
            if not after or _event_order(entry_id.decode()) > _event_order(after):
                entries.append((entry_id, dict(zip(parts[::2], parts[1::2], strict=True))))
        return entries

    async def events_after(self, job_id, after, block_s):
        self.validate_event_id(after)
        key = self._job(job_id) + ":events"
        # One round trip reads both forms: the stream of a job not finished (or finished lately),
        # the list of one compacted since.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrange(key, f"({after}" if after else "-", "+")
            pipe.lrange(self._job(job_id) + ":log", 0, -1)
            entries, log = await pipe.execute()
        if not entries and log:
            entries = self._logged(log, after)
        elif not entries and block_s > 0:
            answer = await self._blocking.xread({key: after or "0-0"}, block=_ms(block_s))
            entries = answer[0][1] if answer else []
        return [self._event(job_id, entry_id, fields) for entry_id, fields in entries]

    async def publish(self, signal):
        await self._redis.publish(self._channel, signal)

    async def start(self, on_signal: Signal):
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)

        async def listen() -> None:
            try:
                while True:
                    try:
                        async for message in pubsub.listen():
                            outcome = on_signal(message["data"].decode())
                            if inspect.isawaitable(outcome):
                                await outcome
                    except (RedisError, OSError) as exc:
                        # Redis away: the maintenance loop still polls; resubscribe when it is back.
                        log.warning("jobs.signals_lost", error=str(exc))
                        await asyncio.sleep(1.0)
                        await pubsub.subscribe(self._channel)
            finally:
                await pubsub.aclose()

        self._listener = asyncio.create_task(listen(), name="capmesh-jobs-signals")

    async def close(self):
        await stop_tasks([self._listener])
        await self._blocking.aclose()
