"""The collector's metric families: name, type, labels and help of every series it exports,
in one list (docs/metrics.md, the dashboards and the exporter's tests are checked against it)."""

from __future__ import annotations

from .exposition import MetricSpec

_R = ("run", "rank")
_S = MetricSpec
SPECS: tuple[MetricSpec, ...] = (
    _S(
        "gradwatch_build_info",
        "info",
        ("version", "python", "prometheus_client"),
        "Versions of this collector, its Python and prometheus_client.",
    ),
    _S("gradwatch_collector_start_time_seconds", "gauge", (), "Unix time the collector started."),
    _S(
        "gradwatch_messages_total",
        "counter",
        (),
        "ZeroMQ messages read; each is accepted or rejected (received + rejected = messages).",
    ),
    _S("gradwatch_frames_received_total", "counter", ("kind",), "Frames accepted, by wire kind."),
    _S("gradwatch_frames_rejected_total", "counter", ("reason",), "Messages dropped, by reason."),
    _S(
        "gradwatch_peers_refused_total",
        "counter",
        ("reason",),
        "ZeroMQ peers refused at the handshake (CURVE), by reason.",
    ),
    _S("gradwatch_limit_hits_total", "counter", ("limit",), "Things refused by a limit."),
    _S("gradwatch_rule_errors_total", "counter", ("rule",), "Exceptions raised by a rule."),
    _S(
        "gradwatch_store_write_failures_total",
        "counter",
        (),
        "Database writes that failed (alerts stay in memory and are retried).",
    ),
    _S("gradwatch_alerts_unsaved", "gauge", (), "Alert changes not saved to the database yet."),
    _S("gradwatch_ingest_latency_seconds", "histogram", (), "Handling time of one frame."),
    _S(
        "gradwatch_ingest_lag_seconds",
        "histogram",
        (),
        "Collector time at handling minus the frame's own time.",
    ),
    _S("gradwatch_ingest_queue_depth", "gauge", (), "Messages read and not handled yet."),
    _S("gradwatch_ingest_behind", "gauge", (), "1 while ingest is behind (load shedding)."),
    _S(
        "gradwatch_frames_shed_total",
        "counter",
        (),
        "Stats frames judged without the sheddable rules (ingest behind).",
    ),
    _S(
        "gradwatch_alertmanager_notifications_total",
        "counter",
        ("result",),
        "Alerts posted to Alertmanager, by result (success, failure, dropped).",
    ),
    _S("gradwatch_alerts_firing", "gauge", ("rule", "severity", "run"), "Firing alerts."),
    _S("gradwatch_runs", "gauge", (), "Runs exported (live, or ended within the grace period)."),
    _S("gradwatch_run_world_size", "gauge", ("run",), "Ranks in the run (from the hellos)."),
    _S(
        "gradwatch_run_info",
        "info",
        (*_R, "host", "device", "gpu_uuid", "optimizer", "torch"),
        "Where a rank runs.",
    ),
    _S("gradwatch_last_frame_timestamp_seconds", "gauge", _R, "Collector time of the last frame."),
    _S("gradwatch_rank_ended", "gauge", _R, "1 once the rank said bye, else 0."),
    _S("gradwatch_agent_frames_dropped_total", "counter", _R, "Frames the agent could not send."),
    _S("gradwatch_step", "gauge", _R, "Latest optimizer step."),
    _S("gradwatch_optimizer_steps_total", "counter", _R, "Optimizer steps of this process."),
    _S(
        "gradwatch_step_duration_seconds",
        "histogram",
        _R,
        "Wall time of every optimizer step (sampled or not).",
    ),
    _S("gradwatch_loss", "gauge", _R, "Training loss at the latest sampled step."),
    _S("gradwatch_grad_norm", "gauge", _R, "Global L2 norm of the tracked gradients."),
    _S("gradwatch_learning_rate", "gauge", (*_R, "group"), "Learning rate per param group."),
    _S("gradwatch_step_time_seconds", "gauge", _R, "Wall time of the latest step."),
    _S("gradwatch_tokens_per_second", "gauge", _R, "Training throughput in tokens."),
    _S("gradwatch_samples_per_second", "gauge", _R, "Training throughput in samples."),
    _S("gradwatch_tokens_total", "counter", _R, "Tokens trained on by this process."),
    _S("gradwatch_samples_total", "counter", _R, "Samples trained on by this process."),
    _S("gradwatch_mfu_ratio", "gauge", _R, "Model FLOPs utilisation (0..1)."),
    _S("gradwatch_grad_scale", "gauge", _R, "GradScaler loss scale."),
    _S("gradwatch_memory_bytes", "gauge", (*_R, "kind"), "Device memory and process RSS."),
    _S("gradwatch_cuda_ooms_total", "counter", _R, "CUDA allocator out-of-memory errors."),
    _S("gradwatch_cuda_alloc_retries_total", "counter", _R, "CUDA allocator retries."),
    _S("gradwatch_scaler_skipped_steps_total", "counter", _R, "Steps GradScaler skipped."),
    _S("gradwatch_parameters", "gauge", (*_R, "state"), "Parameters by health state."),
    _S(
        "gradwatch_grad_abs",
        "gauge",
        (*_R, "stat"),
        "Percentiles (p1..p99) of sampled absolute gradients.",
    ),
    _S("gradwatch_update_step", "gauge", _R, "Step of the latest update statistics."),
    _S("gradwatch_update_ratio", "gauge", (*_R, "stat"), "Update/weight norm across params."),
    _S("gradwatch_param_grad_norm", "gauge", (*_R, "parameter"), "Top-k largest grad norms."),
    _S("gradwatch_param_update_ratio", "gauge", (*_R, "parameter"), "Top-k smallest ratios."),
    _S("gradwatch_scrape_duration_seconds", "gauge", (), "Time this scrape took."),
)
METRIC_NAMES: tuple[str, ...] = tuple(s.name for s in SPECS)
