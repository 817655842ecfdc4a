//! The metrics model both daemons report (`Family`, samples with labels) and its Prometheus
//! (OpenMetrics text) encoding at scrape time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::refuse;
use super::Server;

/// The values each label of a daemon's `/metrics` may take where the code fixes them (reasons,
/// places, kinds). Labels whose values come from the configuration (`node`, `channel`, `fiber`,
/// `listen`) are not in it: whoever checks a scrape checks those against the configuration.
pub type LabelValues = BTreeMap<&'static str, BTreeSet<&'static str>>;

/// Adds `values` to what `label` may take.
pub fn allow(values: &mut LabelValues, label: &'static str, more: &[&'static str]) {
    values.entry(label).or_default().extend(more.iter().copied());
}

/// One labelled value of a metric.
pub type Sample = (Vec<(String, String)>, f64);

/// A metric family as the daemon reports it; encoded by prometheus-client at scrape time.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn counter(name: &'static str, help: &'static str, samples: Vec<Sample>) -> Family {
        Family { name, help, counter: true, samples }
    }

    pub fn gauge(name: &'static str, help: &'static str, samples: Vec<Sample>) -> Family {
        Family { name, help, counter: false, samples }
    }
}

/// A label list from `(name, value)` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

#[derive(Debug)]
pub(super) struct Collector(Vec<Family>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::TypedMetric;
        for family in &self.0 {
            let kind = if family.counter { ConstCounter::<f64>::TYPE } else { ConstGauge::<f64>::TYPE };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                if family.counter {
                    ConstCounter::new(*value).encode(sample)?;
                } else {
                    ConstGauge::new(*value).encode(sample)?;
                }
            }
        }
        Ok(())
    }
}

pub(super) async fn metrics(State(server): State<Arc<Server>>) -> Response {
    let mut registry = prometheus_client::registry::Registry::with_prefix("diode");
    registry.register_collector(Box::new(Collector(server.managed.metrics())));
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string());
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
