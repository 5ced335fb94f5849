//! The run's report: counts, throughput and latency summaries, as text or JSON.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::receiver::ReceiverOutcome;
use super::sender::{SenderOutcome, SentMessage};
use super::stats::{summarize, LatencySummary};
use super::Options;

/// The run's measurements, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub run_id: String,
    pub room_id: String,
    pub senders: u32,
    pub messages_per_sender: u32,
    pub receivers: u32,
    pub deadline_s: u64,
    pub sync_timeout_ms: u64,
    pub setup_s: f64,

    /// Messages the senders were to send in total.
    pub planned: u64,
    /// Messages the server acknowledged with an event ID.
    pub acknowledged: usize,
    /// Requests that failed, by kind.
    pub send_failures: BTreeMap<String, usize>,
    /// Requests still in flight at the deadline.
    pub cut_off_by_deadline: usize,
    /// Messages not sent because the deadline came first.
    pub not_attempted: usize,

    /// From the first send request to the last send response.
    pub send_wall_s: f64,
    /// Acknowledged messages divided by `send_wall_s`.
    pub messages_per_second: f64,
    /// Send responses received in each second after the first send request, which shows
    /// whether throughput changes as the room grows.
    pub acknowledged_per_second: Vec<usize>,
    /// From the first send request to the last delivery to any receiver.
    pub delivery_wall_s: Option<f64>,

    /// From the start of a send request to its response.
    pub send_latency: Option<LatencySummary>,
    /// From a send response to the `/sync` response that delivered the event, per receiver
    /// and event. An event delivered before its send response counts as 0.
    pub delivery_latency: Option<LatencySummary>,
    /// Deliveries that came before the send response, counted as 0 in `delivery_latency`.
    pub delivered_before_send_returned: usize,
    /// From the start of a send request to the `/sync` response that delivered the event.
    pub end_to_end_latency: Option<LatencySummary>,

    pub receiver_details: Vec<ReceiverReport>,
    pub deadline_reached: bool,
    /// Every planned message was acknowledged and reached every receiver.
    pub complete: bool,
}

/// The deliveries and `/sync` responses of one receiver.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiverReport {
    pub user_id: String,
    /// Acknowledged messages that reached this receiver.
    pub delivered: usize,
    /// Acknowledged messages that never reached this receiver.
    pub missing: usize,
    /// Messages that arrived but whose send was never acknowledged (failed or cut off).
    pub unacknowledged: usize,
    pub duplicates: usize,
    pub sync_responses: usize,
    pub limited_responses: usize,
    pub sync_failures: BTreeMap<String, usize>,
}

pub struct Inputs<'a> {
    pub options: &'a Options,
    pub run_id: String,
    pub room_id: String,
    pub receiver_ids: Vec<String>,
    pub setup_time: Duration,
    pub senders_started: Instant,
    pub deadline_reached: bool,
    pub senders: Vec<SenderOutcome>,
    pub receivers: Vec<ReceiverOutcome>,
}

/// Combines the sender and receiver outcomes into a report.
pub fn build(inputs: Inputs<'_>) -> Report {
    let options = inputs.options;
    let sent: HashMap<&str, &SentMessage> = inputs
        .senders
        .iter()
        .flat_map(|outcome| &outcome.sent)
        .map(|message| (message.event_id.as_str(), message))
        .collect();

    let mut send_failures = BTreeMap::new();
    for outcome in &inputs.senders {
        for (kind, count) in &outcome.failures {
            *send_failures.entry(kind.clone()).or_default() += count;
        }
    }
    let cut_off_by_deadline = inputs.senders.iter().map(|o| o.cut_off).sum();
    let not_attempted = inputs.senders.iter().map(|o| o.not_attempted).sum();

    let send_latencies = sent.values().map(|m| m.returned - m.started).collect();
    let last_returned = sent.values().map(|m| m.returned).max();
    let mut acknowledged_per_second = Vec::new();
    for message in sent.values() {
        // At most the deadline (3600 s), so the vector stays small.
        let elapsed = message.returned.saturating_duration_since(inputs.senders_started);
        let second = elapsed.as_secs() as usize;
        if acknowledged_per_second.len() <= second {
            acknowledged_per_second.resize(second + 1, 0);
        }
        acknowledged_per_second[second] += 1;
    }
    let send_wall = last_returned
        .map(|last| last.saturating_duration_since(inputs.senders_started))
        .unwrap_or_default();

    let mut delivery_latencies = Vec::new();
    let mut end_to_end_latencies = Vec::new();
    let mut delivered_before_send_returned = 0;
    let mut last_arrival: Option<Instant> = None;
    let mut receiver_details = Vec::new();
    for (user_id, outcome) in inputs.receiver_ids.iter().zip(&inputs.receivers) {
        let mut delivered = 0;
        for (event_id, arrived) in &outcome.arrivals {
            let Some(message) = sent.get(event_id.as_str()) else { continue };
            delivered += 1;
            if *arrived < message.returned {
                delivered_before_send_returned += 1;
            }
            delivery_latencies.push(arrived.saturating_duration_since(message.returned));
            end_to_end_latencies.push(arrived.saturating_duration_since(message.started));
            last_arrival = last_arrival.max(Some(*arrived));
        }
        let arrived_ids: HashSet<&str> = outcome.arrivals.keys().map(String::as_str).collect();
        receiver_details.push(ReceiverReport {
            user_id: user_id.clone(),
            delivered,
            missing: sent.len() - delivered,
            unacknowledged: arrived_ids.iter().filter(|id| !sent.contains_key(*id)).count(),
            duplicates: outcome.duplicates,
            sync_responses: outcome.sync_responses,
            limited_responses: outcome.limited_responses,
            sync_failures: outcome.failures.clone(),
        });
    }

    let planned = u64::from(options.senders) * u64::from(options.messages);
    let complete = sent.len() as u64 == planned
        && receiver_details.iter().all(|receiver| receiver.missing == 0);
    let send_wall_s = send_wall.as_secs_f64();
    Report {
        url: options.url.url.to_string(),
        run_id: inputs.run_id,
        room_id: inputs.room_id,
        senders: options.senders,
        messages_per_sender: options.messages,
        receivers: options.receivers,
        deadline_s: options.deadline,
        sync_timeout_ms: options.sync_timeout_ms,
        setup_s: inputs.setup_time.as_secs_f64(),
        planned,
        acknowledged: sent.len(),
        send_failures,
        cut_off_by_deadline,
        not_attempted,
        send_wall_s,
        messages_per_second: if send_wall_s > 0.0 { sent.len() as f64 / send_wall_s } else { 0.0 },
        acknowledged_per_second,
        delivery_wall_s: last_arrival
            .map(|last| last.saturating_duration_since(inputs.senders_started).as_secs_f64()),
        send_latency: summarize(send_latencies),
        delivery_latency: summarize(delivery_latencies),
        delivered_before_send_returned,
        end_to_end_latency: summarize(end_to_end_latencies),
        receiver_details,
        deadline_reached: inputs.deadline_reached,
        complete,
    }
}

fn write_latency(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    summary: &Option<LatencySummary>,
) -> fmt::Result {
    writeln!(f, "{title}")?;
    match summary {
        Some(s) => writeln!(
            f,
            "  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  min {:.2} ms  max {:.2} ms  \
             mean {:.2} ms  (n = {})",
            s.p50_ms, s.p90_ms, s.p99_ms, s.min_ms, s.max_ms, s.mean_ms, s.count
        ),
        None => writeln!(f, "  no samples"),
    }
}

fn write_counts(f: &mut fmt::Formatter<'_>, counts: &BTreeMap<String, usize>) -> fmt::Result {
    for (kind, count) in counts {
        writeln!(f, "    {count} × {kind}")?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Messaging load against {} (run {})", self.url, self.run_id)?;
        writeln!(
            f,
            "  {} senders × {} messages, {} receiver(s), room {}, set-up {:.2} s",
            self.senders, self.messages_per_sender, self.receivers, self.room_id, self.setup_s
        )?;

        let failed: usize = self.send_failures.values().sum();
        writeln!(f, "Messages")?;
        writeln!(
            f,
            "  {} of {} acknowledged, {failed} failed, {} cut off by the deadline, \
             {} not attempted",
            self.acknowledged, self.planned, self.cut_off_by_deadline, self.not_attempted
        )?;
        write_counts(f, &self.send_failures)?;
        writeln!(
            f,
            "  wall time {:.2} s (first send request to last send response)",
            self.send_wall_s
        )?;
        writeln!(f, "  throughput {:.1} messages/s", self.messages_per_second)?;
        let per_second: Vec<String> =
            self.acknowledged_per_second.iter().map(usize::to_string).collect();
        writeln!(f, "  acknowledged in each second: {}", per_second.join(" "))?;
        if let Some(seconds) = self.delivery_wall_s {
            writeln!(f, "  last delivery {seconds:.2} s after the first send request")?;
        }

        write_latency(f, "Send latency (request to response)", &self.send_latency)?;
        write_latency(
            f,
            "Delivery latency (send response to the /sync response that delivers it)",
            &self.delivery_latency,
        )?;
        writeln!(
            f,
            "  {} deliveries came before their send response and count as 0 ms",
            self.delivered_before_send_returned
        )?;
        write_latency(
            f,
            "End-to-end latency (send request to the /sync response that delivers it)",
            &self.end_to_end_latency,
        )?;

        writeln!(f, "Receivers")?;
        for receiver in &self.receiver_details {
            writeln!(
                f,
                "  {}: {} delivered, {} missing, {} unacknowledged, {} duplicates, \
                 {} /sync responses ({} limited)",
                receiver.user_id,
                receiver.delivered,
                receiver.missing,
                receiver.unacknowledged,
                receiver.duplicates,
                receiver.sync_responses,
                receiver.limited_responses
            )?;
            write_counts(f, &receiver.sync_failures)?;
        }

        let outcome = if self.complete {
            "complete: every message was acknowledged and delivered to every receiver"
        } else if self.deadline_reached {
            "incomplete: the deadline stopped the run"
        } else {
            "incomplete: some messages failed or were not delivered"
        };
        writeln!(f, "Outcome: {outcome}")
    }
}
