"""A task queue's depth as Prometheus gauges, read from PostgreSQL at every scrape: the
autoscaling signal (k8s/components/queue-autoscaling). Every process of a queue's service
reports the same numbers, so any one of them being scraped is enough."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY


class QueueDepth:
    """``total``: ``read()``, a count or the sum of per-job counts (NaN while the database
    does not answer); ``per_job{job}``, when named: each job's count. One read per scrape."""

    def __init__(self, read: Callable[[], int | dict[str, int]], total: tuple[str, str],
                 per_job: tuple[str, str] | None = None) -> None:
        self.read, self.total, self.per_job = read, total, per_job

    def _families(self, counts: dict[str, int], total: float) -> list[GaugeMetricFamily]:
        families = [GaugeMetricFamily(*self.total, value=total)]
        if self.per_job:
            by_job = GaugeMetricFamily(*self.per_job, labels=["job"])
            for job_id, count in sorted(counts.items()):
                by_job.add_metric([job_id], count)
            families.append(by_job)
        return families

    def describe(self) -> list[GaugeMetricFamily]:
        return self._families({}, 0.0)

    def collect(self) -> list[GaugeMetricFamily]:
        try:
            counts = self.read()
            if isinstance(counts, int):
                counts, total = {}, float(counts)
            else:
                total = float(sum(counts.values()))
        except Exception:  # noqa: BLE001 - a scrape must not fail because PostgreSQL is down
            counts, total = {}, float("nan")
        return self._families(counts, total)


def export_queue_depth(read: Callable[[], int | dict[str, int]], total: tuple[str, str],
                       per_job: tuple[str, str] | None = None) -> None:
    """Register the gauges (once per process: a second registration of a name raises)."""
    REGISTRY.register(QueueDepth(read, total, per_job))
