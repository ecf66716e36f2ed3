//! OpenTelemetry export: with `telemetry.otlp_endpoint` set, an event
//! published with a `traceparent` is ingested by one process and delivered
//! by another, and an OTLP collector receives, in the publisher's trace, the
//! ingest span and one client span per webhook request, whose id is the
//! parent id of the `traceparent` the receiver got.

use std::collections::HashMap;
use std::time::Duration;

use hookrelay::Role;
use hookrelay_test_support::{eventually, Receiver, Reply, TestEnv};
use hookrelay_tests::Harness;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use tokio::sync::Mutex;

mod common;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// A span as the collector got it, with its resource's attributes.
#[derive(Debug, Clone)]
struct Exported {
    resource: HashMap<String, String>,
    span: Span,
}

impl Exported {
    fn attribute(&self, key: &str) -> Option<String> {
        text_of(&self.span.attributes, key)
    }
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        Value::StringValue(text) => Some(text.clone()),
        Value::IntValue(n) => Some(n.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// An OTLP/gRPC collector on 127.0.0.1 that keeps every span it is sent.
#[derive(Default, Clone)]
struct Collector {
    spans: std::sync::Arc<Mutex<Vec<Exported>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().await;
        for resource_spans in request.into_inner().resource_spans {
            let resource: HashMap<String, String> = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default()
                .iter()
                .filter_map(|kv| {
                    Some((kv.key.clone(), text_of(std::slice::from_ref(kv), &kv.key)?))
                })
                .collect();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Exported {
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        format!("http://{addr}")
    }

    /// Waits until the collector holds `n` spans named `name`.
    async fn spans_named(&self, name: &str, n: usize) -> Vec<Exported> {
        eventually(
            &format!("{n} {name} spans exported"),
            Duration::from_secs(30),
            || async {
                let spans: Vec<Exported> = self
                    .spans
                    .lock()
                    .await
                    .iter()
                    .filter(|s| s.span.name == name)
                    .cloned()
                    .collect();
                (spans.len() >= n).then_some(spans)
            },
        )
        .await
    }
}

#[tokio::test]
async fn a_traced_event_is_exported_as_ingest_and_one_span_per_request() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let env = TestEnv::new();
    let vars = [
        ("HOOKRELAY_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    // Ingest and delivery in two processes: the trace crosses DELIVERIES.
    let _ingestor = common::role_process(&env, "ingestor", &vars);
    let _dispatcher = common::role_process(&env, "dispatcher", &vars);
    let hr = Harness::start_roles(env, &[Role::Subscriptions]).await;

    let receiver = Receiver::start().await;
    receiver.push(Reply::status(500));
    receiver.push(Reply::status(200));
    hr.create(common::flaky_subscription(receiver.url("/hook")))
        .await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{TRACE}-{PARENT}-01").as_str());
    let subject = hr.env.config.names().event_subject("acme", "order.paid");
    hr.js
        .publish_with_headers(
            subject.clone(),
            headers,
            r#"{"id":"traced","data":{}}"#.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let requests = receiver.wait_for(2, Duration::from_secs(60)).await;
    let sent: Vec<String> = requests
        .iter()
        .map(|r| {
            let header = r.header("traceparent").expect("a traceparent");
            let parts: Vec<&str> = header.split('-').collect();
            assert_eq!(
                (parts[0], parts[1], parts[3]),
                ("00", TRACE, "01"),
                "{header}"
            );
            parts[2].to_owned()
        })
        .collect();

    let ingest = collector.spans_named("hookrelay.ingest", 1).await;
    assert_eq!(ingest.len(), 1, "{ingest:#?}");
    let ingest = &ingest[0];
    assert_eq!(hex::encode(&ingest.span.trace_id), TRACE);
    assert_eq!(hex::encode(&ingest.span.parent_span_id), PARENT);
    assert_eq!(ingest.span.kind, SpanKind::Consumer as i32);
    assert_eq!(
        ingest.attribute("messaging.message.id").as_deref(),
        Some("traced")
    );
    assert_eq!(
        ingest.attribute("messaging.destination.name"),
        Some(subject)
    );
    assert_eq!(
        ingest.attribute("hookrelay.subscriptions").as_deref(),
        Some("1")
    );
    assert_eq!(
        ingest.resource.get("service.name").map(String::as_str),
        Some("hookrelay")
    );
    assert_eq!(
        ingest.resource.get("hookrelay.role").map(String::as_str),
        Some("ingestor")
    );

    let mut delivers = collector.spans_named("hookrelay.deliver", 2).await;
    assert_eq!(delivers.len(), 2, "{delivers:#?}");
    delivers.sort_by_key(|s| s.attribute("hookrelay.attempt"));
    for (n, (span, sent)) in delivers.iter().zip(&sent).enumerate() {
        assert_eq!(hex::encode(&span.span.trace_id), TRACE);
        assert_eq!(hex::encode(&span.span.parent_span_id), PARENT);
        assert_eq!(
            &hex::encode(&span.span.span_id),
            sent,
            "the request's traceparent names its span"
        );
        assert_eq!(span.span.kind, SpanKind::Client as i32);
        assert_eq!(
            span.attribute("hookrelay.attempt"),
            Some((n + 1).to_string())
        );
        assert_eq!(
            span.attribute("hookrelay.event_id").as_deref(),
            Some("traced")
        );
        assert_eq!(
            span.attribute("http.request.method").as_deref(),
            Some("POST")
        );
        assert_eq!(
            span.resource.get("hookrelay.role").map(String::as_str),
            Some("dispatcher")
        );
        assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
    }
    let (failed, succeeded) = (&delivers[0], &delivers[1]);
    assert_eq!(
        failed.attribute("http.response.status_code").as_deref(),
        Some("500")
    );
    assert_eq!(
        failed.attribute("hookrelay.outcome").as_deref(),
        Some("http_5xx")
    );
    assert_eq!(
        failed.span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        succeeded.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        succeeded.span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Ok as i32)
    );
}

#[tokio::test]
async fn an_untraced_event_exports_nothing_and_sends_no_traceparent() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let env = TestEnv::new();
    let vars = [
        ("HOOKRELAY_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let _ingestor = common::role_process(&env, "ingestor", &vars);
    let _dispatcher = common::role_process(&env, "dispatcher", &vars);
    let hr = Harness::start_roles(env, &[Role::Subscriptions]).await;
    let receiver = Receiver::start().await;
    hr.create(common::flaky_subscription(receiver.url("/hook")))
        .await;
    // An untraced event, then a traced one: once the traced one's spans
    // are in, the untraced one's would be too, had it any.
    hr.publish(
        "acme",
        "order.paid",
        br#"{"id":"untraced","data":{"which":"untraced"}}"#,
    )
    .await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{TRACE}-{PARENT}-01").as_str());
    let subject = hr.env.config.names().event_subject("acme", "order.paid");
    hr.js
        .publish_with_headers(
            subject,
            headers,
            r#"{"id":"traced","data":{"which":"traced"}}"#.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let requests = receiver.wait_for(2, Duration::from_secs(60)).await;
    let untraced = requests
        .iter()
        .find(|r| String::from_utf8_lossy(&r.body).contains(r#""which":"untraced""#))
        .unwrap_or_else(|| panic!("the untraced event delivered: {requests:#?}"));
    assert_eq!(untraced.header("traceparent"), None);
    collector.spans_named("hookrelay.deliver", 1).await;
    collector.spans_named("hookrelay.ingest", 1).await;
    let spans = collector.spans.lock().await;
    assert!(
        spans.iter().all(|s| hex::encode(&s.span.trace_id) == TRACE
            && s.attribute("hookrelay.event_id").as_deref() != Some("untraced")
            && s.attribute("messaging.message.id").as_deref() != Some("untraced")),
        "{spans:#?}"
    );
}

#[tokio::test]
async fn a_collector_out_of_reach_delays_no_delivery() {
    let port = hookrelay_test_support::servers::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = TestEnv::new();
    let vars = [
        ("HOOKRELAY_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let _ingestor = common::role_process(&env, "ingestor", &vars);
    let _dispatcher = common::role_process(&env, "dispatcher", &vars);
    let hr = Harness::start_roles(env, &[Role::Subscriptions]).await;
    let receiver = Receiver::start().await;
    hr.create(common::flaky_subscription(receiver.url("/hook")))
        .await;
    let subject = hr.env.config.names().event_subject("acme", "order.paid");
    for n in 0..20 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", format!("00-{TRACE}-{PARENT}-01").as_str());
        hr.js
            .publish_with_headers(
                subject.clone(),
                headers,
                format!(r#"{{"id":"e{n}","data":{{"n":{n}}}}}"#).into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let requests = receiver.wait_for(20, Duration::from_secs(60)).await;
    assert!(requests
        .iter()
        .all(|r| r.header("traceparent").is_some_and(|h| h.contains(TRACE))));
}
