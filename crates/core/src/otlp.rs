//! OpenTelemetry spans of what hookrelay does with a traced event, exported
//! over OTLP/gRPC when `telemetry.otlp_endpoint` is set (off by default).
//!
//! An event published with a `traceparent` (see [`crate::trace`]) gets, in
//! the publisher's trace, a consumer span `hookrelay.ingest` (from the
//! stream's timestamp to its fan-out) and a client span `hookrelay.deliver`
//! per webhook request, whose span id is the parent id of the request's own
//! `traceparent`: the receiver's spans hang under the attempt that sent
//! them. Both are children of the publisher's span, so the ingest and the
//! deliveries of an event read as siblings whichever process ran them.
//! Events without a `traceparent` start no trace.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;
use crate::event::Event;
use crate::trace::TraceParent;

/// Span name of an event's ingest.
pub const INGEST_SPAN: &str = "hookrelay.ingest";
/// Span name of one webhook request.
pub const DELIVER_SPAN: &str = "hookrelay.deliver";

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The collector could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("telemetry.otlp_endpoint {endpoint:?}: {source}")]
pub struct OtlpError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// The installed exporter; [`Exporter::shutdown`] sends what is queued.
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// Installs the process's exporter when `telemetry.otlp_endpoint` is set.
/// Call from within the Tokio runtime; a second install is ignored.
pub fn install(config: &TelemetryConfig, role: &str) -> Result<Option<Exporter>, OtlpError> {
    if config.otlp_endpoint.is_empty() || TRACER.get().is_some() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&config.otlp_endpoint)
        .with_timeout(config.otlp_timeout)
        .build()
        .map_err(|source| OtlpError {
            endpoint: config.otlp_endpoint.clone(),
            source,
        })?;
    let exporter = OnRuntime {
        inner: Arc::new(exporter),
        runtime: tokio::runtime::Handle::current(),
        endpoint: config.otlp_endpoint.clone(),
        failing: Arc::new(AtomicBool::new(false)),
    };
    // service.name from OTEL_SERVICE_NAME if set; OTEL_RESOURCE_ATTRIBUTES
    // add to it.
    let mut resource =
        Resource::builder().with_attribute(KeyValue::new("hookrelay.role", role.to_owned()));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("hookrelay");
    }
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("hookrelay");
    if TRACER.set(tracer).is_err() {
        return Ok(None);
    }
    tracing::info!(endpoint = %config.otlp_endpoint, "exporting spans over OTLP");
    Ok(Some(Exporter { provider }))
}

impl Exporter {
    /// Exports the spans still queued and stops; at most a few seconds.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The batch processor's thread needs this runtime to export while
        // shutdown blocks: block elsewhere.
        let done = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(5))
        })
        .await;
        if let Ok(Err(error)) = done {
            tracing::warn!(%error, "spans queued at shutdown were not all exported");
        }
    }
}

/// The OTLP exporter run on the process's Tokio runtime: the SDK's batch
/// processor exports from a thread of its own, where tonic would find no
/// reactor. Says when the collector becomes unreachable and when it is
/// back, not at every batch.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
    endpoint: String,
    failing: Arc<AtomicBool>,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = Arc::clone(&self.inner);
        let result = match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(result) => result,
            Err(error) => Err(OTelSdkError::InternalFailure(error.to_string())),
        };
        match &result {
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "spans reach the OTLP collector again");
            }
            Err(error) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(endpoint = %self.endpoint, %error, "cannot export spans to the OTLP collector; they are dropped until it answers");
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, while building the provider, before any export.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// The publisher's span as the parent of ours, if the event is traced and
/// spans are exported.
fn parent_of(traceparent: Option<&str>) -> Option<(&'static SdkTracer, Context)> {
    let tracer = TRACER.get()?;
    let parent = TraceParent::parse(traceparent?)?;
    let context = SpanContext::new(
        TraceId::from_hex(&parent.trace_id).ok()?,
        opentelemetry::trace::SpanId::from_hex(&parent.parent_id).ok()?,
        TraceFlags::new(u8::from_str_radix(&parent.flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    Some((tracer, Context::new().with_remote_span_context(context)))
}

/// Records the ingest of a traced event: from the stream's timestamp to
/// now, when its deliveries were matched.
pub fn ingest(event: &Event, subject: &str, subscriptions: usize) {
    let Some((tracer, parent)) = parent_of(event.traceparent.as_deref()) else {
        return;
    };
    let mut span = tracer
        .span_builder(INGEST_SPAN)
        .with_kind(SpanKind::Consumer)
        .with_start_time(SystemTime::from(event.received_at))
        .with_attributes([
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", subject.to_owned()),
            KeyValue::new("messaging.message.id", event.id.clone()),
            KeyValue::new("hookrelay.tenant", event.tenant.clone()),
            KeyValue::new("hookrelay.event_type", event.event_type.clone()),
            KeyValue::new("hookrelay.subscriptions", subscriptions as i64),
        ])
        .start_with_context(tracer, &parent);
    span.end();
}

/// The span of one webhook request: started before the request is built,
/// its id in the request's `traceparent`, ended with the outcome.
pub struct RequestSpan {
    header: Option<String>,
    span: Option<opentelemetry_sdk::trace::Span>,
}

/// What one request came to, as its span reports it.
pub struct RequestEnd<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub status: Option<u16>,
    pub outcome: &'a str,
    pub success: bool,
    pub reason: &'a str,
    pub finished_at: DateTime<Utc>,
}

impl RequestSpan {
    /// The span of attempt `attempt` of `event` to `subscription_id`, sent
    /// from `start`. Without an exporter a traced event's request still
    /// continues the trace, under a span id of its own that nothing records.
    pub fn start(event: &Event, subscription_id: &str, attempt: u32, start: DateTime<Utc>) -> Self {
        let traceparent = event.traceparent.as_deref();
        let Some((tracer, parent)) = parent_of(traceparent) else {
            return Self {
                header: traceparent.and_then(TraceParent::parse).map(|p| p.child()),
                span: None,
            };
        };
        let span = tracer
            .span_builder(DELIVER_SPAN)
            .with_kind(SpanKind::Client)
            .with_start_time(SystemTime::from(start))
            .with_attributes([
                KeyValue::new("hookrelay.event_id", event.id.clone()),
                KeyValue::new("hookrelay.tenant", event.tenant.clone()),
                KeyValue::new("hookrelay.event_type", event.event_type.clone()),
                KeyValue::new("hookrelay.subscription_id", subscription_id.to_owned()),
                KeyValue::new("hookrelay.attempt", i64::from(attempt)),
            ])
            .start_with_context(tracer, &parent);
        let context = span.span_context();
        let header = format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        );
        Self {
            header: Some(header),
            span: Some(span),
        }
    }

    /// The request's `traceparent`, if the event is traced.
    pub fn header(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// Ends the span with what the request came to.
    pub fn end(self, end: RequestEnd<'_>) {
        let Some(mut span) = self.span else {
            return;
        };
        span.set_attribute(KeyValue::new("http.request.method", end.method.to_owned()));
        span.set_attribute(KeyValue::new("url.full", end.url.to_owned()));
        if let Some(status) = end.status {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        span.set_attribute(KeyValue::new("hookrelay.outcome", end.outcome.to_owned()));
        if end.success {
            span.set_status(Status::Ok);
        } else {
            span.set_attribute(KeyValue::new("error.type", end.outcome.to_owned()));
            span.set_status(Status::error(end.reason.to_owned()));
        }
        span.end_with_timestamp(SystemTime::from(end.finished_at));
    }
}
