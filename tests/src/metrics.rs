//! A `/metrics` scrape as a monitoring system sees it, and the check that every label value in it is
//! bounded: from the daemons' fixed tables (reasons, places, kinds) or from the node's own
//! configuration (its name, channel names, fiber numbers and addresses), never from traffic. A label
//! that carried a sequence number or a file name would grow a monitoring system's series without end.

use crate::error::{LabError, LabResult};
use std::collections::{BTreeMap, BTreeSet};

use chassis::management::LabelValues;

/// One sample line: the metric's name and its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
}

/// The samples of an OpenMetrics text exposition (comments and `# EOF` skipped).
pub fn parse(text: &str) -> LabResult<Vec<Sample>> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (metric, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => return Err(LabError::unexpected(format!("a sample line without a value: {line:?}"))),
        };
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.chars();
            loop {
                let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
                if chars.next() != Some('"') {
                    return Err(LabError::unexpected(format!("a label without a quoted value: {line:?}")));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(c) => value.push(c),
                            None => return Err(LabError::unexpected(format!("a label value cut short: {line:?}"))),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err(LabError::unexpected(format!("a label value cut short: {line:?}"))),
                    }
                }
                labels.insert(name.trim_start_matches(',').to_string(), value);
                match chars.next() {
                    Some(',') if chars.clone().next() == Some('}') => {
                        chars.next();
                        break;
                    }
                    Some(',') => {}
                    Some('}') => break,
                    _ => return Err(LabError::unexpected(format!("labels not closed: {line:?}"))),
                }
            }
        }
        samples.push(Sample { metric: metric.to_string(), labels });
    }
    Ok(samples)
}

/// The label values a node's configuration gives: `node` (its name), `channel` (channel names),
/// `listen` (its fibers' addresses) and `fiber` (their numbers, from 1).
pub fn configured_values(config_text: &str) -> LabResult<BTreeMap<String, BTreeSet<String>>> {
    let config: toml::Table =
        config_text.parse().map_err(|e| LabError::unexpected(format!("the node's configuration: {e}")))?;
    let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |label: &str, value: String| {
        values.entry(label.to_string()).or_default().insert(value);
    };
    if let Some(name) = config.get("node").and_then(|n| n.get("name")).and_then(toml::Value::as_str) {
        add("node", name.to_string());
    }
    let tables = |key: &str| {
        config.get(key).and_then(toml::Value::as_array).cloned().unwrap_or_default().into_iter().filter_map(|v| match v
        {
            toml::Value::Table(table) => Some(table),
            _ => None,
        })
    };
    for channel in tables("channel") {
        if let Some(name) = channel.get("name").and_then(toml::Value::as_str) {
            add("channel", name.to_string());
        }
    }
    for (index, fiber) in tables("fiber").enumerate() {
        add("fiber", (index + 1).to_string());
        if let Some(listen) = fiber.get("listen").and_then(toml::Value::as_str) {
            add("listen", listen.to_string());
        }
    }
    Ok(values)
}

/// Every label of `samples` whose value is neither in `fixed` nor in `configured`, as
/// `metric{label="value"}`; a label name in neither is reported too.
pub fn unbounded(
    samples: &[Sample],
    fixed: &LabelValues,
    configured: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut found = BTreeSet::new();
    for sample in samples {
        for (label, value) in &sample.labels {
            let allowed = fixed.get(label.as_str()).is_some_and(|v| v.contains(value.as_str()))
                || configured.get(label).is_some_and(|v| v.contains(value));
            if !allowed {
                found.insert(format!("{}{{{label}=\"{value}\"}}", sample.metric));
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_is_parsed_and_an_unbounded_value_is_named() {
        let text = "# TYPE diode_drops counter\n\
                    diode_drops_total{node=\"red1\",where=\"receiver\",reason=\"bad_tag\"} 3\n\
                    diode_streams_aborted_total{node=\"red1\",channel=\"historian\",reason=\"BlockLost { seq: 7 }\"} 1\n\
                    diode_epoch{node=\"red1\"} 4\n\
                    diode_up 1\n\
                    # EOF\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].labels["reason"], "bad_tag");
        assert!(samples[3].labels.is_empty());
        let mut fixed = LabelValues::new();
        chassis::management::allow(&mut fixed, "where", &["receiver"]);
        chassis::management::allow(&mut fixed, "reason", &["bad_tag", "block_lost"]);
        let configured = configured_values(
            "[node]\nname = \"red1\"\n[[channel]]\nname = \"historian\"\n[[fiber]]\nlisten = \"198.18.0.1:7000\"\n",
        )
        .unwrap();
        assert_eq!(configured["listen"], BTreeSet::from(["198.18.0.1:7000".to_string()]));
        assert_eq!(
            unbounded(&samples, &fixed, &configured),
            ["diode_streams_aborted_total{reason=\"BlockLost { seq: 7 }\"}"]
        );
    }

    #[test]
    fn escaped_values_and_a_trailing_comma_parse() {
        let samples = parse("m{a=\"x\\\"y\",b=\"z\",} 1\n").unwrap();
        assert_eq!(samples[0].labels["a"], "x\"y");
        assert_eq!(samples[0].labels["b"], "z");
    }
}
