"""deploy/grafana/sftd-dashboard.json and deploy/prometheus/sftd-alerts.yaml:
well-formed, and using only the metrics sftd exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What sftd exports on -M:-r /metrics (the server's contract).
METRICS = {
    "sft_uptime", "sft_build_info", "sft_participants", "sft_calls", "sft_participants_total",
    "sft_calls_total", "sft_draining", "sft_dataplane_info", "sft_dataplane_packets_total",
    "sft_capacity_participants_remaining", "sft_dataplane_detail_total", "sft_bpf_failures_total",
    "sft_legs_without_media_total", "sft_userspace_media_dropped_total",
}
# label values of sft_dataplane_packets_total and sft_dataplane_detail_total used here
COUNTERS = {"RX_PACKETS", "DROP_AUTH", "DROP_LEASE_EXPIRED", "TC_EVENT_LOST",
            "TC_STREAM_STATE_FAILED"}


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bsft_[a-z_]+", expr))


def test_dashboard(yaml):
    dash = json.loads((REPO / "deploy/grafana/sftd-dashboard.json").read_text())
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert exprs
    for e in exprs:
        assert metrics_in(e) and metrics_in(e) <= METRICS, e
        assert e.count("(") == e.count(")") and e.count("{") == e.count("}"), e
        assert set(re.findall(r'counter="([A-Z_]+)"', e)) <= COUNTERS, e
    for p in panels:
        assert p["type"] == "row" or p["datasource"]["uid"] == "${datasource}", p["title"]
    # panels must not overlap on Grafana's 24-column grid
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine
    assert {"datasource", "namespace", "pod"} <= {v["name"] for v in dash["templating"]["list"]}


def test_alert_rules(yaml):
    doc = yaml.safe_load((REPO / "deploy/prometheus/sftd-alerts.yaml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"SftdNearCapacity", "SftdSrtpAuthFailuresRising", "SftdDraining"} <= names
    for r in rules:
        assert metrics_in(r["expr"]) and metrics_in(r["expr"]) <= METRICS, r["alert"]
        assert set(re.findall(r'counter="([A-Z_]+)"', r["expr"])) <= COUNTERS
        assert r["expr"].count("(") == r["expr"].count(")")
        assert r["labels"]["severity"] in {"info", "warning", "critical"}
        assert r["annotations"]["summary"]
        if "for" in r:
            assert re.fullmatch(r"\d+[smh]", r["for"])


def test_chart_ships_the_same_rules():
    chart_copy = REPO / "charts/sftd/files/sftd-alerts.yaml"
    assert chart_copy.read_text() == (REPO / "deploy/prometheus/sftd-alerts.yaml").read_text()
