"""Prometheus metrics, with Wire's names for what sftd exports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .dataplane import Counter


class SftCollector:
    """Reads the live state on every scrape, so values never drift from it."""

    def __init__(self, version: str, state: Callable[[], dict[str, float]],
                 dataplane_name: Callable[[], str],
                 counters: Callable[[], dict[Counter, int]],
                 conference_packets: Callable[[], dict[str, int]],
                 detail_counters: Callable[[], dict[str, int]] = dict,
                 loop_restarts: Callable[[], dict[str, int]] = dict,
                 refused: Callable[[], dict[str, int]] = dict,
                 legs_by_interface: Callable[[], dict[str, int]] = dict,
                 bpf_failures: Callable[[], dict[str, int]] = dict,
                 userspace_media_drops: Callable[[], dict[str, int]] = dict,
                 legs_without_media: Callable[[], dict[str, int]] = dict) -> None:
        self._version = version
        self._state = state
        self._dataplane_name = dataplane_name
        self._counters = counters
        self._conference_packets = conference_packets
        self._detail_counters = detail_counters
        self._loop_restarts = loop_restarts
        self._refused = refused
        self._legs_by_interface = legs_by_interface
        self._userspace_media_drops = userspace_media_drops
        self._legs_without_media = legs_without_media
        self._bpf_failures = bpf_failures
        self._started = time.monotonic()

    def collect(self) -> Iterable[Metric]:
        state = self._state()
        yield GaugeMetricFamily("sft_uptime", "Seconds since sftd started",
                                  value=time.monotonic() - self._started)
        info = GaugeMetricFamily("sft_build_info", "sftd build", labels=["version"])
        info.add_metric([self._version], 1)
        yield info
        yield GaugeMetricFamily("sft_participants", "Participants on this SFT",
                                value=state["participants"])
        yield GaugeMetricFamily("sft_calls", "Conferences (calls) on this SFT",
                                value=state["calls"])
        yield CounterMetricFamily("sft_participants", "Participants created since start",
                                  value=state["participants_total"])
        yield CounterMetricFamily("sft_calls", "Conferences created since start",
                                  value=state["calls_total"])
        yield GaugeMetricFamily("sft_draining", "1 while draining after SIGTERM",
                                value=state["draining"])
        plane = GaugeMetricFamily("sft_dataplane_info", "Active data plane",
                                  labels=["dataplane"])
        plane.add_metric([self._dataplane_name()], 1)
        yield plane
        legs = GaugeMetricFamily("sft_legs", "Legs whose media the data plane serves, by the "
                                 "interface their path takes", labels=["dataplane", "interface"])
        for interface, count in sorted(self._legs_by_interface().items()):
            legs.add_metric([self._dataplane_name(), interface], count)
        yield legs
        yield _by_label("sft_dataplane_packets", "Data-plane packets and bytes by counter "
                        "(RX/TX and drops by reason)", "counter",
                        {counter.name: value for counter, value in self._counters().items()})
        yield _by_label("sft_dataplane_detail", "Data-plane detail counters (kernel drop "
                        "reasons, keystream misses, media that reached user space)", "counter",
                        self._detail_counters())
        yield _by_label("sft_userspace_media_dropped", "Media that reached user space on the "
                        "kernel plane and was not forwarded, by reason", "reason",
                        self._userspace_media_drops())
        yield _by_label("sft_legs_without_media", "Legs connected for 5 s whose media went "
                        "nowhere (silent, not_forwarded, not_received), each counted once",
                        "reason", self._legs_without_media())
        yield _by_label("sft_conference_forwarded_packets",
                        "Packets forwarded per live conference", "conference",
                        self._conference_packets())
        yield _by_label("sft_background_restarts",
                        "Background loops restarted after a failure", "loop",
                        self._loop_restarts())
        yield _by_label("sft_refused", "Client input refused by a cap (candidates, joins the "
                        "data plane has no room for)", "what", self._refused())
        yield _by_label("sft_bpf_failures", "Failed BPF calls and ring-buffer records the "
                        "controller could not handle, by operation (the log says what to do)",
                        "operation", self._bpf_failures())
        yield GaugeMetricFamily("sft_capacity_participants_remaining",
                                "Estimated participants this node can still take",
                                value=state["capacity_remaining"])


def _by_label(name: str, documentation: str, label: str,
              values: dict[str, int]) -> CounterMetricFamily:
    """A counter family with one sample per label value, in label order."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value_label, value in sorted(values.items()):
        family.add_metric([value_label], value)
    return family


def make_registry(collector: SftCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
