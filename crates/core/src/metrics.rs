//! Metrics every service shares: `hookrelay_build_info`, the gRPC server
//! metrics (a middleware on the tonic routes), and the known values of
//! bounded labels, exported at 0 from the start so that `rate()` and
//! `increase()` see a series' first increment (a series created at 1 reads
//! as no increase) and dashboards read 0 rather than "no data".

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::delivery::{GiveUp, Outcome};
use crate::event::EventError;

/// `hookrelay_build_info{version, role} 1`: which version runs where
/// (join on `instance` to label other series with it).
pub fn register_build_info(
    registry: &Registry,
    version: &str,
    role: &str,
) -> prometheus::Result<()> {
    let info = IntGaugeVec::new(
        Opts::new(
            "hookrelay_build_info",
            "Always 1; the labels say which hookrelay version and role this process runs",
        ),
        &["version", "role"],
    )?;
    info.with_label_values(&[version, role]).set(1);
    registry.register(Box::new(info))
}

/// Every delivery outcome (`hookrelay_deliveries_total{outcome}`,
/// `hookrelay_dispatcher_requests_total{outcome}`).
pub const OUTCOMES: [Outcome; 12] = [
    Outcome::Success,
    Outcome::HttpOther,
    Outcome::Http4xx,
    Outcome::Http5xx,
    Outcome::Redirect,
    Outcome::Timeout,
    Outcome::ConnectError,
    Outcome::DnsError,
    Outcome::TlsError,
    Outcome::Blocked,
    Outcome::Disabled,
    Outcome::Error,
];

/// Every reason a delivery is given up (`hookrelay_deliveries_given_up_total{reason}`).
pub const GIVE_UPS: [GiveUp; 6] = [
    GiveUp::Exhausted,
    GiveUp::Gone,
    GiveUp::Disabled,
    GiveUp::NoRetry,
    GiveUp::Expired,
    GiveUp::Invalid,
];

/// Every [`EventError::kind`] (`hookrelay_dlq_total{source="events", reason}`).
pub const EVENT_ERROR_KINDS: [&str; 6] = [
    "too_large",
    "bad_subject",
    "not_json_object",
    "bad_data",
    "bad_field",
    "schema",
];

/// Fails to compile when a variant is added to one of the enums above
/// without being added to its list (the tests check the lists match).
#[allow(dead_code)]
fn every_variant_is_listed(outcome: Outcome, give_up: GiveUp, error: &EventError) -> usize {
    let outcome = match outcome {
        Outcome::Success
        | Outcome::HttpOther
        | Outcome::Http4xx
        | Outcome::Http5xx
        | Outcome::Redirect
        | Outcome::Timeout
        | Outcome::ConnectError
        | Outcome::DnsError
        | Outcome::TlsError
        | Outcome::Blocked
        | Outcome::Disabled
        | Outcome::Error => OUTCOMES.len(),
    };
    let give_up = match give_up {
        GiveUp::Exhausted
        | GiveUp::Gone
        | GiveUp::Disabled
        | GiveUp::NoRetry
        | GiveUp::Expired
        | GiveUp::Invalid => GIVE_UPS.len(),
    };
    let error = match error {
        EventError::TooLarge { .. }
        | EventError::Subject(_)
        | EventError::NotJson(_)
        | EventError::NotObject
        | EventError::MissingData
        | EventError::DataNotObject
        | EventError::Field { .. }
        | EventError::Schema { .. } => EVENT_ERROR_KINDS.len(),
    };
    outcome + give_up + error
}

/// Canonical gRPC status code names, by number.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

fn grpc_code(value: Option<&http::HeaderValue>) -> Option<&'static str> {
    let code: usize = value?.to_str().ok()?.trim().parse().ok()?;
    Some(GRPC_CODES.get(code).copied().unwrap_or("Unknown"))
}

/// gRPC server metrics: `hookrelay_grpc_server_requests_total{service,
/// method, code}`, `hookrelay_grpc_server_request_duration_seconds{service,
/// method}` and `hookrelay_grpc_server_in_flight{service}`. Labels stay
/// bounded: a method not in the served descriptors counts as `other`
/// (and a service not served as `other` too), whatever path a client sends.
#[derive(Clone)]
pub struct GrpcMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    known: Arc<HashSet<(String, String)>>,
    services: Arc<HashSet<String>>,
}

impl GrpcMetrics {
    /// Registers the metrics; `methods` are the `(service, method)` pairs
    /// served, exported at 0 with code `OK`.
    pub fn register(
        registry: &Registry,
        methods: impl IntoIterator<Item = (String, String)>,
    ) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "hookrelay_grpc_server_requests_total",
                "gRPC calls handled, by service, method and status code",
            ),
            &["service", "method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hookrelay_grpc_server_request_duration_seconds",
                "Duration of gRPC calls, from the request to the status (a stream's end)",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
            ]),
            &["service", "method"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "hookrelay_grpc_server_in_flight",
                "gRPC calls being handled (streams included), by service",
            ),
            &["service"],
        )?;
        let known: HashSet<(String, String)> = methods.into_iter().collect();
        let services: HashSet<String> = known.iter().map(|(s, _)| s.clone()).collect();
        for (service, method) in &known {
            requests.with_label_values(&[service.as_str(), method.as_str(), "OK"]);
        }
        for service in &services {
            in_flight.with_label_values(&[service.as_str()]);
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self {
            requests,
            duration,
            in_flight,
            known: Arc::new(known),
            services: Arc::new(services),
        })
    }

    /// `router` with every call counted and timed.
    pub fn layer(&self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), track))
    }

    /// The bounded `(service, method)` labels of a request path.
    fn labels(&self, path: &str) -> (String, String) {
        let other = || ("other".to_owned(), "other".to_owned());
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
            return other();
        };
        if self
            .known
            .contains(&(service.to_owned(), method.to_owned()))
        {
            (service.to_owned(), method.to_owned())
        } else if self.services.contains(service) {
            (service.to_owned(), "other".to_owned())
        } else {
            other()
        }
    }
}

/// One call being handled; counted when its status is known, or when its
/// response is dropped without one (the client went away: `Canceled`).
struct Call {
    metrics: GrpcMetrics,
    service: String,
    method: String,
    started: Instant,
    code: Option<&'static str>,
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or("Canceled");
        let labels = [self.service.as_str(), self.method.as_str()];
        self.metrics
            .requests
            .with_label_values(&[labels[0], labels[1], code])
            .inc();
        self.metrics
            .duration
            .with_label_values(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics.in_flight.with_label_values(&[labels[0]]).dec();
    }
}

async fn track(State(metrics): State<GrpcMetrics>, request: Request, next: Next) -> Response {
    let (service, method) = metrics.labels(request.uri().path());
    metrics.in_flight.with_label_values(&[&service]).inc();
    let mut call = Call {
        metrics,
        service,
        method,
        started: Instant::now(),
        code: None,
    };
    let response = next.run(request).await;
    // An error is a trailers-only response: the status is in the headers.
    if let Some(code) = grpc_code(response.headers().get("grpc-status")) {
        call.code = Some(code);
        return response;
    }
    if response.status() != http::StatusCode::OK {
        call.code = Some("Unknown");
        return response;
    }
    // Otherwise the status comes in the trailers, after the last message.
    let (parts, body) = response.into_parts();
    let body = body.map_frame(move |frame| {
        // The whole call moves into the body (not just `call.code`): it is
        // counted when the body is dropped.
        let call = &mut call;
        if let Some(trailers) = frame.trailers_ref() {
            call.code = Some(grpc_code(trailers.get("grpc-status")).unwrap_or("Unknown"));
        }
        frame
    });
    Response::from_parts(parts, axum::body::Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_lists_name_every_value_once() {
        let outcomes: HashSet<&str> = OUTCOMES.iter().map(|o| o.as_str()).collect();
        assert_eq!(outcomes.len(), OUTCOMES.len());
        let give_ups: HashSet<&str> = GIVE_UPS.iter().map(|g| g.as_str()).collect();
        assert_eq!(give_ups.len(), GIVE_UPS.len());
        let errors = [
            EventError::TooLarge { size: 2, max: 1 },
            EventError::Subject(String::new()),
            EventError::NotJson(String::new()),
            EventError::NotObject,
            EventError::MissingData,
            EventError::DataNotObject,
            EventError::Field {
                field: "id",
                message: String::new(),
            },
            EventError::Schema {
                event_type: String::new(),
                version: 1,
                violation: String::new(),
            },
        ];
        let kinds: HashSet<&str> = errors.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, EVENT_ERROR_KINDS.into_iter().collect());
    }

    #[test]
    fn unknown_paths_share_one_label() {
        let metrics = GrpcMetrics::register(
            &Registry::new(),
            [(
                "hookrelay.v1.Subscriptions".to_owned(),
                "GetSubscription".to_owned(),
            )],
        )
        .unwrap();
        let labels = |path: &str| {
            let (s, m) = metrics.labels(path);
            format!("{s}/{m}")
        };
        assert_eq!(
            labels("/hookrelay.v1.Subscriptions/GetSubscription"),
            "hookrelay.v1.Subscriptions/GetSubscription"
        );
        assert_eq!(
            labels("/hookrelay.v1.Subscriptions/Nope"),
            "hookrelay.v1.Subscriptions/other"
        );
        assert_eq!(labels("/x.Y/Z"), "other/other");
        assert_eq!(labels("/"), "other/other");
        assert_eq!(grpc_code(Some(&"5".parse().unwrap())), Some("NotFound"));
        assert_eq!(grpc_code(Some(&"99".parse().unwrap())), Some("Unknown"));
    }
}
