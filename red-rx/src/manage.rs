//! What RED's management API shows (status, transfers, metrics, the FEC advice) and does.

use std::path::Path;
use std::sync::Arc;

use chassis::management::{allow, labels, Family, HaFuture, LabelValues, Managed, Sample};
use connectors::config::{parse_toml, ChannelKind, ConfigError};
use connectors::filesink::FileFailure;
use connectors::sink::{DatagramDrop, StreamAbort};
use connectors::store::SpoolDrop;
use diode_proto::{DropReason, LossReason};
use ha_carp::driver::demote_or_promote;
use ha_carp::pair::PairError;
use serde_json::json;

use crate::status::{RedSnapshot, Shared, StatusView};

/// Source symbols seen before the advice means anything (a few hundred blocks).
const MIN_SYMBOLS_FOR_ADVICE: u64 = 20_000;

/// The alarms `/metrics` shows as `alarm{kind=...}`.
const ALARMS: [&str; 5] = ["config_mismatch", "unknown_channel", "stale_session", "spool_high", "spool_full"];

/// Every value RED's `/metrics` labels can take where the code fixes them (see [`LabelValues`]).
pub fn fixed_label_values() -> LabelValues {
    let mut values = LabelValues::new();
    allow(&mut values, "side", &["red"]);
    allow(&mut values, "where", &["receiver", "sink", "files", "spool"]);
    allow(&mut values, "kind", &ChannelKind::LABELS);
    allow(&mut values, "kind", &ALARMS);
    allow(&mut values, "reason", &DropReason::LABELS);
    allow(&mut values, "reason", &LossReason::LABELS);
    allow(&mut values, "reason", &StreamAbort::LABELS);
    allow(&mut values, "reason", &DatagramDrop::LABELS);
    allow(&mut values, "reason", &FileFailure::LABELS);
    allow(&mut values, "reason", &PairError::LABELS);
    allow(&mut values, "reason", &SpoolDrop::LABELS);
    values
}

/// Turns what the receiver saw into advice on the repair setting.
///
/// The loss seen is the share of source symbols that had to be rebuilt from repair. Repair is too low
/// when blocks were lost short of symbols (at their deadline, or earlier when the blocks behind them
/// filled the memory budget or the window moved past them), or when more than 1 % of blocks needed
/// over 90 % of their repair (a little more loss and they would have been lost). Lost blocks are not
/// always a repair problem, and more repair would make two causes worse: when RED's kernel dropped
/// datagrams, RED could not keep up with BLUE's rate; blocks that failed their hash after rebuilding
/// point at a corrupting fiber; whole blocks that never arrived mean an outage or a burst longer than
/// the interleaving spreads. Blocks lost to a takeover are expected. Repair is more than needed when
/// it is over three times the loss seen; twice the loss seen plus half a point (at least 1 %) leaves
/// room for bursts.
///
/// `kernel_drops`: datagrams RED's kernel dropped on full receive buffers, all fibers together.
pub(crate) fn fec_advice(shared: &Shared, kernel_drops: u64) -> serde_json::Value {
    let blocks = shared.blocks_decoded + shared.blocks_without_decoder;
    let loss = if shared.source_symbols == 0 {
        0.0
    } else {
        shared.source_symbols_missing as f64 / shared.source_symbols as f64 * 100.0
    };
    let repair = shared.announced_repair.map(|(repair, k)| f64::from(repair) / f64::from(k.max(1)) * 100.0);
    let near_limit = if blocks == 0 { 0.0 } else { shared.blocks_near_repair_limit as f64 / blocks as f64 * 100.0 };
    let headroom = repair.filter(|r| *r > 0.0).map(|r| ((1.0 - loss / r) * 100.0).max(0.0));
    let lost = &shared.blocks_lost_by;
    let short = lost.get(LossReason::Timeout { received: 0, needed: 0 })
        + lost.get(LossReason::MemoryLimit)
        + lost.get(LossReason::WindowOverrun);
    let corrupt = lost.get(LossReason::HashMismatch);
    let never_seen = lost.get(LossReason::NeverSeen);
    let recommendation = match repair {
        None => "no beacon yet: the repair in use is not known".to_string(),
        Some(_) if kernel_drops > 0 && short + never_seen > 0 => format!(
            "lower the rate: {} blocks were lost and RED's kernel dropped {kernel_drops} datagrams, so RED \
             cannot keep up with BLUE; more repair would add to the load",
            short + never_seen
        ),
        Some(_) if short > 0 => format!(
            "raise repair: {short} blocks were lost short of symbols; \
             {near_limit:.1}% of blocks needed more than 90% of their repair"
        ),
        Some(_) if corrupt > 0 => {
            format!("check the fibers: {corrupt} blocks were rebuilt but failed their hash; more repair would not help")
        }
        Some(_) if never_seen > 0 => format!(
            "check the fibers: {never_seen} blocks never arrived at all (an outage, or a burst longer than the \
             interleaving spreads)"
        ),
        Some(_) if near_limit > 1.0 => {
            format!("raise repair: {near_limit:.1}% of blocks needed more than 90% of their repair")
        }
        Some(_) if shared.source_symbols < MIN_SYMBOLS_FOR_ADVICE => "not enough traffic yet to judge".to_string(),
        Some(r) if r > 3.0 * loss.max(0.1) && r > 1.0 => {
            let enough = (2.0 * loss + 0.5).max(1.0).ceil();
            format!("repair {r:.0}% is more than needed: {loss:.1}% loss seen, {enough:.0}% would do")
        }
        Some(r) => format!("repair {r:.0}% fits the {loss:.1}% loss seen"),
    };
    json!({
        "loss_seen_percent": (loss * 100.0).round() / 100.0,
        "repair_percent": repair.map(|r| (r * 100.0).round() / 100.0),
        "headroom_percent": headroom.map(|h| (h * 10.0).round() / 10.0),
        "blocks_near_repair_limit": shared.blocks_near_repair_limit,
        "blocks_near_repair_limit_percent": (near_limit * 100.0).round() / 100.0,
        "recommendation": recommendation,
    })
}

/// `/metrics`, rendered from the same snapshot the status shows.
pub(crate) fn metric_families(snapshot: &RedSnapshot) -> Vec<Family> {
    let node = snapshot.node.as_str();
    let base = || labels(&[("node", node), ("side", "red")]);
    let with = |extra: &[(&str, &str)]| {
        let mut l = base();
        l.extend(labels(extra));
        l
    };
    let receiver = &snapshot.receiver;
    let mut drops: Vec<Sample> = receiver
        .drops
        .iter()
        .map(|(reason, n)| (labels(&[("node", node), ("where", "receiver"), ("reason", reason)]), *n as f64))
        .collect();
    let (mut aborted, mut sink_bytes, mut completed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut files_delivered, mut files_duplicates) = (Vec::new(), Vec::new());
    let mut spool: [Vec<Sample>; 6] = Default::default();
    for channel in &snapshot.channels {
        let name = channel.name.as_str();
        let at = |extra: &[(&str, &str)]| {
            let mut l = labels(&[("node", node), ("channel", name), ("kind", channel.kind)]);
            l.extend(labels(extra));
            l
        };
        sink_bytes.push((at(&[]), channel.bytes as f64));
        completed.push((at(&[]), channel.streams_completed as f64));
        aborted.extend(
            channel.aborted.iter().filter(|(_, n)| *n > 0).map(|(reason, n)| (at(&[("reason", reason)]), n as f64)),
        );
        drops.extend(channel.datagrams_dropped.iter().filter(|(_, n)| *n > 0).map(|(reason, n)| {
            (labels(&[("node", node), ("where", "sink"), ("reason", reason), ("channel", name)]), n as f64)
        }));
        if let Some(held) = &channel.spool {
            let figures =
                [held.bytes, held.items, held.oldest_age_s, held.peak_bytes, held.delivered_from_spool, held.repeats];
            for (samples, value) in spool.iter_mut().zip(figures) {
                samples.push((at(&[]), value as f64));
            }
            drops.extend(held.dropped.iter().filter(|(_, n)| *n > 0).map(|(reason, n)| {
                (labels(&[("node", node), ("where", "spool"), ("reason", reason), ("channel", name)]), n as f64)
            }));
        }
        if let Some(files) = &channel.files {
            files_delivered.push((at(&[]), files.delivered as f64));
            files_duplicates.push((at(&[]), files.duplicates as f64));
            drops.extend(files.failed.iter().filter(|(_, n)| *n > 0).map(|(reason, n)| {
                (labels(&[("node", node), ("where", "files"), ("reason", reason), ("channel", name)]), n as f64)
            }));
        }
    }
    let broken = receiver
        .streams_broken
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| (labels(&[("node", node), ("reason", reason)]), n as f64))
        .collect();
    let [bytes, items, oldest, peak, from_spool, repeats] = spool;
    let per_fiber = |value: &dyn Fn(&crate::status::FiberSnapshot) -> u64| {
        snapshot
            .fibers
            .iter()
            .enumerate()
            .map(|(index, fiber)| {
                let number = (index + 1).to_string();
                (labels(&[("node", node), ("fiber", &number), ("listen", &fiber.listen)]), value(fiber) as f64)
            })
            .collect::<Vec<_>>()
    };
    let headroom = snapshot.fec["headroom_percent"].as_f64().unwrap_or(0.0) / 100.0;
    vec![
        Family::counter("fiber_bytes", "Bytes received per fiber.", per_fiber(&|f| f.bytes)),
        Family::counter(
            "fiber_kernel_drops",
            "Datagrams the kernel dropped on a full receive buffer.",
            per_fiber(&|f| f.kernel_drops),
        ),
        Family::counter(
            "fiber_check_failures",
            "Datagrams dropped for damage or a failed tag, per fiber.",
            per_fiber(&|f| f.check_failures),
        ),
        Family::counter(
            "blocks_decoded",
            "Blocks rebuilt with the RaptorQ decoder.",
            vec![(base(), receiver.blocks_decoded as f64)],
        ),
        Family::counter(
            "blocks_clean",
            "Blocks complete from source symbols alone.",
            vec![(base(), receiver.blocks_without_decoder as f64)],
        ),
        Family::counter(
            "blocks_lost",
            "Blocks that could not be rebuilt, by cause.",
            receiver.blocks_lost_by.iter().map(|(reason, n)| (with(&[("reason", reason)]), n as f64)).collect(),
        ),
        Family::gauge(
            "fec_headroom_ratio",
            "Share of the repair symbols not needed on average (1 = no loss).",
            vec![(base(), headroom)],
        ),
        Family::counter(
            "blocks_near_repair_limit",
            "Blocks that needed more than 90% of their repair.",
            vec![(base(), receiver.blocks_near_repair_limit as f64)],
        ),
        Family::counter("streams_completed", "Streams delivered complete.", completed),
        Family::counter("streams_aborted", "Streams a sink aborted, by reason.", aborted),
        Family::counter("streams_broken", "Streams the receiver broke, by reason.", broken),
        Family::counter("sink_bytes", "Bytes delivered to destinations.", sink_bytes),
        Family::counter("files_delivered", "Files delivered.", files_delivered),
        Family::counter(
            "files_duplicates",
            "Files recognised in the ledger and not delivered again.",
            files_duplicates,
        ),
        Family::counter("drops", "Things not delivered, by where and why.", drops),
        Family::gauge("spool_bytes", "Bytes waiting in a channel's spool for a destination.", bytes),
        Family::gauge("spool_items", "Streams waiting in a channel's spool.", items),
        Family::gauge("spool_oldest_age_seconds", "How long the oldest item of a spool has waited.", oldest),
        Family::gauge("spool_peak_bytes", "The most a spool has held since start.", peak),
        Family::counter(
            "spool_delivered",
            "Items delivered after waiting in the spool (a destination was down, slow or failed).",
            from_spool,
        ),
        Family::counter(
            "spool_repeats",
            "Streams delivered again whole after a destination had taken part of them.",
            repeats,
        ),
        Family::gauge("ha_role", "0 init, 1 standby, 2 active.", vec![(base(), snapshot.role.gauge())]),
        Family::counter("ha_transitions", "Role changes.", vec![(base(), snapshot.transitions as f64)]),
        Family::gauge(
            "epoch",
            "Epoch of the sender session followed.",
            vec![(base(), f64::from(snapshot.epoch.unwrap_or(0)))],
        ),
        Family::gauge(
            "alarm",
            "1 while the alarm of this kind is raised.",
            ALARMS
                .into_iter()
                .zip(snapshot.raised)
                .map(|(kind, raised)| (with(&[("kind", kind)]), f64::from(u8::from(raised))))
                .collect(),
        ),
    ]
}

pub struct RedManaged {
    pub(crate) view: Arc<StatusView>,
}

impl Managed for RedManaged {
    fn status(&self) -> serde_json::Value {
        self.view.status("running")
    }

    fn transfers(&self) -> serde_json::Value {
        let mut transfers = Vec::new();
        for sink in &self.view.sinks {
            let Some(files) = &sink.files else { continue };
            if let Ok(recent) = files.recent.lock() {
                transfers.extend(recent.iter().rev().map(|t| {
                    let mut value = json!(t);
                    value["channel"] = json!(sink.name);
                    value
                }));
            }
        }
        json!({"transfers": transfers})
    }

    fn metrics(&self) -> Vec<Family> {
        let snapshot = self.view.snapshot("running");
        let mut families = metric_families(&snapshot);
        if let Some(pair) = &self.view.pair {
            families.extend(pair.families(&snapshot.node, snapshot.redundancy["state"] == "redundant"));
        }
        families
    }

    fn ha_command(&self, demote: bool) -> HaFuture {
        let ha = self.view.ha.clone();
        Box::pin(async move { Ok(demote_or_promote(ha, demote).await?) })
    }

    fn config_path(&self) -> &Path {
        &self.view.checked.path
    }

    fn check_config(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        crate::config::check(path, parse_toml(path, text)?).map(|_| ())
    }

    fn config_imported(&self, text: &str) -> bool {
        let active = self.view.ha.as_ref().is_some_and(|h| *h.role.borrow() == ha_carp::driver::Role::Active);
        ha_carp::pair::push_imported_config(self.view.replicator.as_ref(), active, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diode_proto::LossCounts;

    fn seen(source: u64, missing: u64, near: u64, lost: &[(LossReason, u64)]) -> Shared {
        let mut blocks_lost_by = LossCounts::default();
        for (reason, blocks) in lost {
            blocks_lost_by.add(*reason, *blocks);
        }
        Shared {
            source_symbols: source,
            source_symbols_missing: missing,
            blocks_near_repair_limit: near,
            blocks_lost: lost.iter().map(|(_, n)| n).sum(),
            blocks_lost_by,
            blocks_decoded: 900,
            blocks_without_decoder: 100,
            announced_repair: Some((4, 80)),
            ..Shared::default()
        }
    }

    #[test]
    fn the_advice_follows_the_loss_seen() {
        let advice = |s: Shared| fec_advice(&s, 0)["recommendation"].as_str().unwrap_or("").to_string();
        assert_eq!(advice(seen(100_000, 300, 0, &[])), "repair 5% is more than needed: 0.3% loss seen, 2% would do");
        assert_eq!(
            advice(seen(100_000, 41, 41, &[])),
            "raise repair: 4.1% of blocks needed more than 90% of their repair"
        );
        let short = LossReason::Timeout { received: 60, needed: 64 };
        assert!(advice(seen(100_000, 4000, 0, &[(short, 3)]))
            .starts_with("raise repair: 3 blocks were lost short of symbols"));
        assert_eq!(advice(seen(100_000, 3000, 0, &[])), "repair 5% fits the 3.0% loss seen");
        assert_eq!(advice(seen(100, 0, 0, &[])), "not enough traffic yet to judge");
        let headroom = fec_advice(&seen(100_000, 2500, 0, &[]), 0)["headroom_percent"].as_f64();
        assert_eq!(headroom, Some(50.0));
    }

    #[test]
    fn the_advice_names_the_cause_of_lost_blocks() {
        let advice = |lost: &[(LossReason, u64)], kernel_drops: u64| {
            let shared = seen(100_000, 300, 0, lost);
            fec_advice(&shared, kernel_drops)["recommendation"].as_str().unwrap_or("").to_string()
        };
        // A block short of symbols is given up at its deadline, or sooner at a high rate when the
        // blocks behind it fill the memory budget: both are loss beyond the repair...
        for reason in [LossReason::Timeout { received: 60, needed: 64 }, LossReason::MemoryLimit] {
            let text = advice(&[(reason, 2)], 0);
            assert!(text.starts_with("raise repair: 2 blocks were lost short of symbols"), "{reason:?}: {text}");
        }
        // ...unless RED's own kernel dropped the symbols: then RED cannot keep up, and more repair is
        // more load.
        let behind = advice(&[(LossReason::MemoryLimit, 2), (LossReason::NeverSeen, 1)], 5_000);
        assert!(behind.starts_with("lower the rate: 3 blocks were lost and RED's kernel dropped 5000"), "{behind}");
        let corrupt = advice(&[(LossReason::HashMismatch, 4)], 0);
        assert!(corrupt.starts_with("check the fibers: 4 blocks were rebuilt but failed their hash"), "{corrupt}");
        let unseen = advice(&[(LossReason::NeverSeen, 7)], 0);
        assert!(unseen.starts_with("check the fibers: 7 blocks never arrived at all"), "{unseen}");
        // A takeover loses the old session's unfinished blocks by design; kernel drops alone lose nothing.
        let quiet = "repair 5% is more than needed: 0.3% loss seen, 2% would do";
        assert_eq!(advice(&[(LossReason::SessionReplaced, 2)], 0), quiet);
        assert_eq!(advice(&[], 10), quiet);
        for text in [behind, corrupt, unseen] {
            assert!(!text.contains("raise repair"), "{text}");
        }
    }
}
