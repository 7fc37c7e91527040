"""The wa-archive Grafana dashboard, generated with grafana-foundation-sdk (Grafana is not installed here).

    .venv/bin/python deploy/grafana/dashboard.py            # (re)writes deploy/grafana/wa-archive.json
    .venv/bin/python deploy/grafana/dashboard.py --check    # exit 1 when the committed JSON is out of date

Every query is plain PromQL (no Grafana variables inside expressions), so `panel_queries()` can be run as-is
against the real Prometheus. Queries whose series appear only after a first event (dead letters, media) fall back
to 0 with `or on() vector(0)`, so a healthy, idle system still shows a value. Metric catalogue: docs/METRICS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, Threshold, ThresholdsMode

OUTPUT = Path(__file__).resolve().with_name("wa-archive.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# The alert thresholds of deploy/prometheus/rules.yml, drawn on the panels.
RPO_SECONDS = 15 * 60
LAG_SECONDS_WARNING = 5 * 60
RETENTION_RUN_MAX_AGE_SECONDS = 26 * 3600
ERASURE_WARNING_AGE_SECONDS = 25 * 86400
ERASURE_DEADLINE_WARNING_SECONDS = 5 * 86400  # WaErasureDeadlineNear
WAL_ARCHIVE_MAX_AGE_SECONDS = 15 * 60  # WaPgWalArchivingStalled
BASE_BACKUP_MAX_AGE_SECONDS = 26 * 3600  # WaPgBaseBackupStale


def _query(expr: str, legend: str = "__auto", ref_id: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE).range()


def _thresholds(red_above: float, yellow_above: float | None = None) -> dash.ThresholdsConfig:
    steps = [Threshold(value=None, color="green")]
    if yellow_above is not None:
        steps.append(Threshold(value=yellow_above, color="yellow"))
    steps.append(Threshold(value=red_above, color="red"))
    return dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def _thresholds_below(red_below: float, yellow_below: float) -> dash.ThresholdsConfig:
    """Red under ``red_below``, yellow under ``yellow_below``, green above (a time left, say)."""
    steps = [
        Threshold(value=None, color="red"),
        Threshold(value=red_below, color="yellow"),
        Threshold(value=yellow_below, color="green"),
    ]
    return dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def _graph(title: str, description: str, unit: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _stat(title: str, description: str, unit: str, query: prometheus.Dataquery) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(6)
        .height(5)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(query.instant())
    )


def build_dashboard() -> dash.Dashboard:
    """The dashboard: freshness first (what the RPO is about), then ingest, archiver, retention and GDPR."""
    board = (
        dash.Dashboard("wa-archive")
        .uid("wa-archive")
        .description("Freshness, lag and health of the WhatsApp archive. Alerts: deploy/prometheus/rules.yml.")
        .tags(["wa-archive"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )

    board = (
        board.with_row(dash.Row("Freshness"))
        .with_panel(
            _graph(
                "Staleness per business number",
                "time() - max(last durable archive of the number, archiver caught-up heartbeat). "
                "WaArchiveStale fires above the RPO (15m) for 5m.",
                "s",
                _query("wa_archive:staleness_seconds", "{{phone_number_id}}"),
            ).thresholds(_thresholds(RPO_SECONDS, RPO_SECONDS / 2))
        )
        .with_panel(
            _graph(
                "Archive lag",
                "Age of the oldest event acknowledged by Kafka but not yet archived, per archiver.",
                "s",
                _query("max by (instance) (wa_archiver_lag_seconds)", "{{instance}}"),
            ).thresholds(_thresholds(LAG_SECONDS_WARNING))
        )
        .with_panel(
            _stat(
                "Business numbers never archived",
                "Numbers ingest acknowledged after the last caught-up heartbeat, of which nothing is archived.",
                "none",
                _query("count(wa_archive:never_archived_last_acknowledged_timestamp_seconds) or on() vector(0)"),
            ).thresholds(_thresholds(1))
        )
        .with_panel(
            _stat(
                "Since the archiver was last caught up",
                "time() - the caught-up heartbeat of the consumer group.",
                "s",
                _query("time() - wa_archiver:caught_up_timestamp_seconds"),
            ).thresholds(_thresholds(RPO_SECONDS, LAG_SECONDS_WARNING))
        )
        .with_panel(
            _stat(
                "Services up",
                "Scrape targets of the three services that answer.",
                "none",
                _query('sum(up{job=~"wa-ingest|wa-archiver|wa-retention"})'),
            )
        )
        .with_panel(
            _stat(
                "Records waiting",
                "Records in Kafka not yet archived and committed, over all partitions.",
                "none",
                _query("wa_archiver:lag_records:sum"),
            )
        )
    )

    board = (
        board.with_row(dash.Row("Ingest"))
        .with_panel(
            _graph(
                "Ingest requests/s by outcome",
                "ok: produced and acknowledged; unavailable: 503, Kafka did not acknowledge; bad_signature: 401.",
                "reqps",
                _query("sum by (route, outcome) (rate(wa_ingest_requests_total[5m]))", "{{route}} {{outcome}}"),
            )
        )
        .with_panel(
            _graph(
                "Kafka produce latency",
                "From the first send of a webhook's events to the last acknowledgement.",
                "s",
                _query("histogram_quantile(0.99, sum by (le) (rate(wa_ingest_produce_seconds_bucket[5m])))", "p99"),
                _query(
                    "histogram_quantile(0.5, sum by (le) (rate(wa_ingest_produce_seconds_bucket[5m])))",
                    "p50",
                    ref_id="B",
                ),
            )
        )
        .with_panel(
            _graph(
                "Records acknowledged by Kafka/s by route",
                "What ingest journaled: one record per webhook POST, one per outbound report.",
                "ops",
                _query("sum by (route) (rate(wa_ingest_records_produced_total[5m]))", "{{route}}"),
            )
        )
        .with_panel(
            _graph(
                "Signature failures/s",
                "POSTs whose X-Hub-Signature-256 matched no app secret. WaIngestSignatureFailures: > 10% and > 0.1/s.",
                "reqps",
                _query("sum(rate(wa_ingest_signature_failures_total[5m]))", "bad signature"),
            )
        )
    )

    board = (
        board.with_row(dash.Row("Archiver"))
        .with_panel(
            _graph(
                "Events archived/s by kind",
                "Events made durable (object written, index committed).",
                "ops",
                _query("sum by (kind) (rate(wa_archiver_events_archived_total[5m]))", "{{kind}}"),
            )
        )
        .with_panel(
            _graph(
                "Lag in records per partition",
                "High watermark - committed offset.",
                "none",
                _query("sum by (partition) (wa_archiver_lag_records)", "partition {{partition}}"),
            )
        )
        .with_panel(
            _graph(
                "Dead letters (last 15m) by reason",
                "Records that can never be archived, sent to wa.events.dlq.v1.",
                "none",
                _query(
                    "sum by (reason) (increase(wa_archiver_dead_letters_total[15m])) or on() vector(0)", "{{reason}}"
                ),
            ).thresholds(_thresholds(1))
        )
        .with_panel(
            _graph(
                "Media downloads/s",
                "Downloads by outcome and failures by reason. WaArchiverMediaFailing: failures > 10% for 15m.",
                "ops",
                _query("sum by (outcome) (rate(wa_archiver_media_total[15m])) or on() vector(0)", "{{outcome}}"),
                _query(
                    "sum by (reason) (rate(wa_archiver_media_failures_total[15m])) or on() vector(0)",
                    "failed: {{reason}}",
                    ref_id="B",
                ),
            )
        )
    )

    return (
        board.with_row(dash.Row("Retention and GDPR"))
        .with_panel(
            _stat(
                "Since the last successful retention run",
                "WaRetentionRunMissing fires above 26h.",
                "s",
                _query("time() - max(wa_retention_last_run_success_timestamp_seconds)"),
            ).thresholds(_thresholds(RETENTION_RUN_MAX_AGE_SECONDS, 24 * 3600))
        )
        .with_panel(
            _stat(
                "Pending erasure requests",
                "GDPR Art. 17 requests received and not completed (including those blocked by a legal hold).",
                "none",
                _query("max(wa_retention_erasure_requests_pending)"),
            )
        )
        .with_panel(
            _stat(
                "Oldest pending erasure",
                "The law allows one month; WaErasureDeadlineNear fires at 25 days.",
                "s",
                _query("max(wa_retention_oldest_pending_erasure_age_seconds)"),
            ).thresholds(_thresholds(ERASURE_WARNING_AGE_SECONDS, 20 * 86400))
        )
        .with_panel(
            _stat(
                "Nearest erasure deadline",
                "Time left before the nearest deadline of an open erasure request (one month, three when extended);"
                " negative when overdue. WaErasureDeadlineNear fires under 5 days, WaErasureOverdue past it.",
                "s",
                _query("min(wa_retention_erasure_nearest_deadline_seconds)"),
            ).thresholds(_thresholds_below(ERASURE_DEADLINE_WARNING_SECONDS, 10 * 86400))
        )
        .with_panel(
            _stat(
                "Legal holds in force",
                "A hold blocks deletion and erasure of what it covers.",
                "none",
                _query("max(wa_retention_legal_holds_active)"),
            )
        )
        # The archive's own state: PostgreSQL's backups (services/backups). No exporter, no backup: the age is
        # then counted from 1970, red, never an empty panel that looks calm.
        .with_row(dash.Row("PostgreSQL backups"))
        .with_panel(
            _stat(
                "Since the last archived WAL segment",
                "What PostgreSQL committed after it lives only on the database server. WaPgWalArchivingStalled fires"
                " above 15 minutes while segments wait; a quiet database archives nothing and is not stale.",
                "s",
                _query("time() - (max(wa_pg_backup_last_wal_archived_timestamp_seconds) or on() vector(0))"),
            ).thresholds(_thresholds(WAL_ARCHIVE_MAX_AGE_SECONDS, 5 * 60))
        )
        .with_panel(
            _stat(
                "Since the last base backup",
                "A restore replays the WAL archived since. WaPgBaseBackupStale fires above 26h.",
                "s",
                _query("time() - (max(wa_pg_backup_last_base_timestamp_seconds) or on() vector(0))"),
            ).thresholds(_thresholds(BASE_BACKUP_MAX_AGE_SECONDS, 24 * 3600))
        )
        .with_panel(
            _graph(
                "WAL archiving",
                "Segments waiting to be archived, and failed attempts of archive_command.",
                "none",
                _query("max(wa_pg_backup_wal_ready_segments) or on() vector(0)", "waiting"),
                _query(
                    "sum(rate(wa_pg_backup_wal_archive_failures_total[5m])) or on() vector(0)",
                    "failures/s",
                    ref_id="B",
                ),
            )
        )
    )


def dashboard_json() -> str:
    """The dashboard as committed: stable panel ids, stable key order, two-space indent, trailing newline."""
    model = build_dashboard().build()
    # Grafana needs ids unique within a dashboard; the SDK leaves panels without one and every row at 0.
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return json.dumps(model, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def _panels(panels: list[Any]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def panel_queries() -> list[str]:
    """Every PromQL expression of the dashboard, in panel order (for tests against the real Prometheus)."""
    model = json.loads(dashboard_json())
    return [target["expr"] for panel in _panels(model["panels"]) for target in panel.get("targets") or []]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {OUTPUT.name} differs from what is generated")
    args = parser.parse_args(argv)
    generated = dashboard_json()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != generated:
            print(f"{OUTPUT} is out of date: run `.venv/bin/python deploy/grafana/dashboard.py`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(generated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
