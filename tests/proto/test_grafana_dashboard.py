"""packaging/grafana-dashboard.json: importable into Grafana (a Prometheus data source asked
for on import), and every query names metrics and labels that pyntpd exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pyntpd.proto.control import ControlSnapshot, PeerInfo
from pyntpd.proto.metrics_text import Status, exposition
from pyntpd.proto.server import ServerCounters

DASHBOARD = Path(__file__).resolve().parents[2] / "packaging" / "grafana-dashboard.json"

# PromQL's words that are not metric names (functions, aggregations, modifiers).
PROMQL_WORDS = {
    "abs", "avg", "by", "count", "group_left", "group_right", "ignoring", "increase", "irate",
    "label_values", "max", "min", "on", "rate", "sum", "time", "without", "bool",
}


def exported() -> dict[str, set[str]]:
    """Every sample name pyntpd exports, with its label names (a status with every part)."""
    peer = PeerInfo(associd=1, srcadr="192.0.2.1", srcport=123, reach=255, tally="*",
                    received=1, offset=0.001)
    clock = PeerInfo(associd=2, srcadr="127.127.28.0", srcport=0, srchost="SHM(0)",
                     refclock=True, received=3, dropped={"bad_sample": 1})
    status = Status.build(ControlSnapshot(peers=(peer, clock), reftime=1 << 32),
                          ServerCounters(),
                          version="v", start_time=0.0, now=1.7e9, http={"ok": 1})
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition(status)):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in doc["templating"]["list"]]
    return found


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names in its matcher) for each metric the expression selects."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values may hold anything
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    found = []
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", expr):
        word, matcher = match.group(1), match.group(2) or ""
        if word in PROMQL_WORDS or expr[match.end():].lstrip().startswith("("):
            continue
        preceding = expr[:match.start()]
        # Label names listed in by (...) or after a comma inside label_values(...)
        if re.search(r"\b(by|without|on|ignoring)\s*\([^)]*$", preceding) or \
                re.search(r",\s*$", preceding):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*[=!]~?", matcher))
        found.append((word, labels))
    return found


def test_the_dashboard_is_an_importable_grafana_document():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "pyntpd" and doc["title"]
    assert [i["pluginId"] for i in doc["__inputs"]] == ["prometheus"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"] and panel["fieldConfig"]["defaults"]["unit"], panel["title"]


def test_every_query_names_a_metric_pyntpd_exports_with_labels_it_has():
    names = exported()
    # Grafana adds instance and job to every series; the variables filter by them.
    scrape_labels = {"instance", "job"}
    checked = 0
    for expr in queries():
        found = selectors(expr)
        assert found, f"no metric in {expr!r}"
        for metric, labels in found:
            assert metric in names, f"{metric} in {expr!r} is not exported"
            assert labels <= names[metric] | scrape_labels, (metric, labels - names[metric])
            checked += 1
    assert checked >= 30


def test_every_exported_source_and_system_gauge_has_a_panel():
    shown = {metric for expr in queries() for metric, _ in selectors(expr)}
    gauges = {n for n in exported() if n.startswith(("ntp_system_", "ntp_source_"))
              and not n.endswith("_total")}
    assert gauges <= shown, gauges - shown


def test_the_selector_reader_finds_metrics_not_functions_or_labels():
    found = selectors('sum by (reason) (rate(ntp_x_total{instance=~"$i", a="b{c}"}[5m])) > 0')
    assert found == [("ntp_x_total", {"instance", "a"})]
