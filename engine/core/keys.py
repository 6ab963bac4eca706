"""The only place that builds Redis key names.

Every key of one queue carries the queue name as a hash tag (``{ns}:{queue}:...`` with the
braces around the queue), so each multi-key script touches a single Redis Cluster slot and
queues spread over shards. Keys that span queues live under ``{ns}:`` without a tag and are
never touched by a script together with a queue's keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.core.errors import ConfigurationError
from engine.core.priority import DEFAULT_PRIORITY, split_lane

# Names end up inside key names and URLs: keep them to a safe, readable alphabet, and
# forbid braces so a queue name can never break its own hash tag.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")

GROUP = "workers"
"""The consumer group every worker of a queue reads with."""


def outbox_extra(outbox: str) -> str:
    """Beside an outbox stream: how many events it holds beyond one per entry. Scripts that
    write a batch of events as one entry add to it and the shipper's acknowledgement takes
    away, so the outbox's backlog in events is its length plus this."""
    return outbox + ":extra"


def outbox_job_prefix(outbox: str) -> str:
    """The job key prefix of the queue an outbox stream belongs to."""
    return outbox.removesuffix("outbox") + "job:"


def outbox_waiting(outbox: str) -> str:
    """The index of waiting jobs (QueueKeys.waiting) of the queue an outbox stream belongs to."""
    return outbox.removesuffix("outbox") + "waiting"


def check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"invalid {kind} name {value!r}: use 1-100 letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return value


@dataclass(frozen=True, slots=True)
class QueueKeys:
    namespace: str
    queue: str
    """A queue, a partition, or a priority lane of one (``queue!p``, engine.core.priority):
    a lane has a stream of its own and shares the queue's other keys."""

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:{{{self.queue.partition('!')[0]}}}:"

    @property
    def stream(self) -> str:
        _, priority = split_lane(self.queue)
        return self.prefix + ("stream" if priority == DEFAULT_PRIORITY else f"stream:{priority}")

    @property
    def acked(self) -> str:
        """How many acknowledged entries still linger in ``stream`` (scripts/finish.lua):
        its waiting entries are its length minus the pending and these."""
        return self.stream + ":acked"

    @property
    def lanes(self) -> str:
        """Set of the priorities other than the default the queue has had jobs of: the
        lanes (streams) workers read besides its own stream."""
        return self.prefix + "lanes"

    @property
    def delayed(self) -> str:
        return self.prefix + "delayed"

    @property
    def dlq(self) -> str:
        return self.prefix + "dlq"

    @property
    def stats(self) -> str:
        return self.prefix + "stats"

    @property
    def job_prefix(self) -> str:
        return self.prefix + "job:"

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    @property
    def outbox(self) -> str:
        """Stream of job-log events, drained into PostgreSQL by the shipper."""
        return self.prefix + "outbox"

    @property
    def outbox_extra(self) -> str:
        return outbox_extra(self.outbox)

    @property
    def joblog_flag(self) -> str:
        """Exists while a shipper drains this queue's outbox; scripts write events only then,
        so the outbox never grows without a reader."""
        return self.prefix + "joblog"

    def throughput(self, minute: int) -> str:
        """Completed/failed counts of one minute (minutes since the epoch), kept two hours."""
        return f"{self.prefix}tput:{minute}"

    @property
    def cron_leader(self) -> str:
        """The scheduler lock of this queue's schedules: a random token, with a lease."""
        return self.prefix + "cron:leader"

    @property
    def cron_last(self) -> str:
        """Zset schedule name -> last fired tick (ms); only ever moves forward."""
        return self.prefix + "cron:last"

    @property
    def cron_paused(self) -> str:
        """Hash schedule name -> when it was paused (ms): its ticks are skipped meanwhile."""
        return self.prefix + "cron:paused"

    def cron_runs(self, schedule: str) -> str:
        """List of a schedule's recent runs (engine.cron.CronRun JSON), newest first, capped."""
        return f"{self.prefix}cron:runs:{schedule}"

    def logs(self, job_id: str) -> str:
        """List of a job's log lines; ``finish.lua`` derives it as job key + ":logs"."""
        return self.job(job_id) + ":logs"

    @property
    def waiting(self) -> str:
        """Hash job id -> stream entry id (and priority, ``"<entry id> <p>"``, outside the
        default lane) of the queue's fresh jobs that have not started: such a job has no hash
        of its own until it starts (enqueue.lua), its entry holds the rest. A key per waiting
        job was two thirds of the memory it took."""
        return self.prefix + "waiting"

    @property
    def cancels(self) -> str:
        """Set of the running jobs asked to stop (cancel.lua): finish.lua records such a job
        cancelled whatever its attempt came to. Absent while none is, so finish.lua checks it
        once per batch rather than each job's status."""
        return self.prefix + "cancels"

    @property
    def logged(self) -> str:
        """Set of the running jobs that have log lines (log.lua): finish.lua expires their
        list (``logs``) with their hash."""
        return self.prefix + "logged"

    @property
    def waiters(self) -> str:
        """Exists (with a TTL, renewed) while someone waits on a job of the queue: finish.lua
        announces a job's end on its done channel only then."""
        return self.prefix + "waiters"

    @property
    def flow(self) -> str:
        """Hash of the queue's flow control (engine.core.flow): paused, concurrency, rate;
        absent for a queue without any, which start.lua then reads as one HMGET."""
        return self.prefix + "flow"

    @property
    def running(self) -> str:
        """Zset entry id -> lease deadline (ms) of the jobs holding a concurrency slot."""
        return self.prefix + "running"

    @property
    def rate(self) -> str:
        """The rate limiter's theoretical arrival time (ms): when the next start is due."""
        return self.prefix + "rate"

    @property
    def idem_prefix(self) -> str:
        return self.prefix + "idem:"

    # Pub/sub channels under the queue's hash tag, so a script publishes in its own slot and,
    # in a cluster, SPUBLISH reaches only the node (and replicas) of that slot.

    @property
    def wake_channel(self) -> str:
        """Tells this queue's promoters a delayed job was added (maybe due earlier)."""
        return self.prefix + "wake"

    @property
    def cancel_channel(self) -> str:
        """On which the cancellation of one of this queue's running jobs is requested."""
        return self.prefix + "cancel"

    def done_channel(self, job_id: str) -> str:
        """Announces a job's final status; ``done_channel("")`` is the scripts' prefix."""
        return self.prefix + "done:" + job_id


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str

    def queue(self, name: str) -> QueueKeys:
        return QueueKeys(self.namespace, name)

    @property
    def queues(self) -> str:
        """Set of every queue name seen, for stats and id lookups."""
        return f"{self.namespace}:queues"

    @property
    def partitions(self) -> str:
        """Hash queue name -> its partition count, for queues declared partitioned, so that
        producers and workers that disagree on it are refused."""
        return f"{self.namespace}:partitions"

    @property
    def tasks(self) -> str:
        """Hash task name -> JSON task spec, announced by workers for code-less producers."""
        return f"{self.namespace}:tasks"

    @property
    def schedules(self) -> str:
        """Hash schedule name -> JSON (expression, time zone, queue), announced by schedulers."""
        return f"{self.namespace}:schedules"

    @property
    def workers(self) -> str:
        """Zset worker id -> when it was last seen (s, the worker's clock): who may be alive."""
        return f"{self.namespace}:workers"

    def worker(self, worker_id: str) -> str:
        """A worker's latest heartbeat (JSON), expiring by itself when it stops beating."""
        return f"{self.namespace}:worker:{worker_id}"

    def revoked_session(self, session_id: str) -> str:
        """Exists while a logged-out dashboard session must be refused (expires with it)."""
        return f"{self.namespace}:dashboard:revoked:{session_id}"

    @property
    def prune_lock(self) -> str:
        """Held for an hour by the worker that pruned the job history (one per hour)."""
        return f"{self.namespace}:prune"
