//! The approval of one held message as a state machine: `pending → approved | rejected |
//! expired | cancelled`, one decision exactly once. The `Approval` Durable Object applies these
//! transitions; D1 mirrors the outcome for listing. Delivery may only claim a message that is
//! `queued` (never `pending_approval`), which is what makes "deliver only after approval" hold.

use serde::{Deserialize, Serialize};

use super::edits::Edit;
use super::message::{Direction, MessageStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Rejected,
    Expired,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }
    pub fn is_terminal(self) -> bool {
        self != Status::Pending
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub status: Status,
    pub expires_at: i64,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub reason: Option<String>,
    /// An approval with edits: the reviewer's version, stored with the decision (so it is
    /// what is sent, exactly once). Never on a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<Box<Edit>>,
}

impl Approval {
    pub fn pending(expires_at: i64) -> Self {
        Approval { status: Status::Pending, expires_at, decided_by: None, decided_at: None, reason: None, edit: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Decide {
        approve: bool,
        by: String,
        at: i64,
        reason: Option<String>,
        /// The reviewer's version (approvals only).
        #[serde(default)]
        edit: Option<Box<Edit>>,
    },
    /// The alarm (or the cron's sweep) at time `at`.
    Expire { at: i64 },
    /// The sender withdraws the message before a decision.
    Cancel { by: String, at: i64, reason: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The decision was taken now. `enqueue_delivery` is true exactly once: on approval.
    Decided { approval: Approval, enqueue_delivery: bool },
    /// Someone decided first (409 `already_decided` with the winner).
    AlreadyDecided(Approval),
    /// An expiry that is not due yet, or that arrives after a decision: nothing changes.
    Ignored,
}

pub fn apply(current: &Approval, cmd: Command) -> Outcome {
    if current.status.is_terminal() {
        return match cmd {
            Command::Expire { .. } => Outcome::Ignored,
            _ => Outcome::AlreadyDecided(current.clone()),
        };
    }
    let decide = |status: Status, by: String, at: i64, reason: Option<String>| Approval {
        status,
        expires_at: current.expires_at,
        decided_by: Some(by),
        decided_at: Some(at),
        reason,
        edit: None,
    };
    match cmd {
        Command::Decide { approve, by, at, reason, edit } => {
            if at >= current.expires_at {
                // Too late: the message expired even if the alarm has not run yet.
                return Outcome::Decided { approval: decide(Status::Expired, "system:expiry".into(), current.expires_at, None), enqueue_delivery: false };
            }
            let status = if approve { Status::Approved } else { Status::Rejected };
            let approval = Approval { edit: edit.filter(|_| approve), ..decide(status, by, at, reason) };
            Outcome::Decided { approval, enqueue_delivery: approve }
        }
        Command::Expire { at } if at >= current.expires_at => Outcome::Decided {
            approval: decide(Status::Expired, "system:expiry".into(), at, None),
            enqueue_delivery: false,
        },
        Command::Expire { .. } => Outcome::Ignored,
        Command::Cancel { at, .. } if at >= current.expires_at => Outcome::Decided {
            approval: decide(Status::Expired, "system:expiry".into(), current.expires_at, None),
            enqueue_delivery: false,
        },
        Command::Cancel { by, at, reason } => Outcome::Decided { approval: decide(Status::Cancelled, by, at, reason), enqueue_delivery: false },
    }
}

/// Message statuses the delivery consumer may claim (a compare-and-set in D1).
pub fn delivery_may_claim(message_status: MessageStatus) -> bool {
    matches!(message_status, MessageStatus::Queued | MessageStatus::Scheduled)
}

/// The message status D1 mirrors for an approval outcome, whatever the message.
pub fn message_status_after(status: Status) -> MessageStatus {
    match status {
        Status::Pending => MessageStatus::PendingApproval,
        Status::Approved => MessageStatus::Queued,
        Status::Rejected => MessageStatus::Rejected,
        Status::Expired => MessageStatus::Expired,
        Status::Cancelled => MessageStatus::Cancelled,
    }
}

/// The status of this message once `status` is decided at `now`: approved inbound mail is
/// `received`; an outbound message approved before its `send_at` waits `scheduled` for its time
/// like any scheduled send; everything else as `message_status_after`.
pub fn status_after_decision(status: Status, direction: Direction, send_at: Option<i64>, now: i64) -> MessageStatus {
    match status {
        Status::Approved if direction == Direction::Inbound => MessageStatus::Received,
        Status::Approved if send_at.is_some_and(|at| at > now) => MessageStatus::Scheduled,
        s => message_status_after(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approved_inbound_mail_is_received_and_early_approvals_wait_for_send_at() {
        assert_eq!(status_after_decision(Status::Approved, Direction::Inbound, None, 5), MessageStatus::Received);
        assert_eq!(status_after_decision(Status::Approved, Direction::Outbound, Some(10), 5), MessageStatus::Scheduled);
        assert_eq!(status_after_decision(Status::Approved, Direction::Outbound, Some(5), 5), MessageStatus::Queued);
        assert_eq!(status_after_decision(Status::Rejected, Direction::Inbound, None, 5), MessageStatus::Rejected);
        assert_eq!(status_after_decision(Status::Expired, Direction::Outbound, Some(10), 5), MessageStatus::Expired);
    }

    #[test]
    fn approving_enqueues_delivery_once() {
        let a = Approval::pending(1_000);
        let Outcome::Decided { approval, enqueue_delivery } = apply(&a, Command::Decide { approve: true, by: "key_h".into(), at: 10, reason: None, edit: None }) else { panic!() };
        assert!(enqueue_delivery);
        assert_eq!(approval.status, Status::Approved);
        assert!(matches!(apply(&approval, Command::Decide { approve: true, by: "key_x".into(), at: 11, reason: None, edit: None }), Outcome::AlreadyDecided(w) if w.decided_by.as_deref() == Some("key_h")));
    }

    #[test]
    fn an_edit_is_stored_with_the_approval_that_wins_and_never_with_a_rejection() {
        let edit = |s: &str| Some(Box::new(Edit { subject: s.into(), text: None, html: None, to: vec![], cc: vec![], fields: vec!["subject".into()], original_sha256: "a".into(), sent_sha256: "b".into() }));
        let Outcome::Decided { approval, .. } = apply(&Approval::pending(1_000), Command::Decide { approve: true, by: "h1".into(), at: 10, reason: None, edit: edit("first") }) else { panic!() };
        assert_eq!(approval.edit.as_ref().map(|e| e.subject.as_str()), Some("first"));
        // A second reviewer's version loses with its decision.
        let Outcome::AlreadyDecided(w) = apply(&approval, Command::Decide { approve: true, by: "h2".into(), at: 11, reason: None, edit: edit("second") }) else { panic!() };
        assert_eq!(w.edit.map(|e| e.subject), Some("first".to_string()));
        let Outcome::Decided { approval, .. } = apply(&Approval::pending(1_000), Command::Decide { approve: false, by: "h1".into(), at: 10, reason: None, edit: edit("x") }) else { panic!() };
        assert!(approval.edit.is_none());
    }

    #[test]
    fn a_decision_after_the_deadline_is_an_expiry() {
        let a = Approval::pending(1_000);
        let Outcome::Decided { approval, enqueue_delivery } = apply(&a, Command::Decide { approve: true, by: "key_h".into(), at: 1_000, reason: None, edit: None }) else { panic!() };
        assert_eq!(approval.status, Status::Expired);
        assert!(!enqueue_delivery);
    }

    #[test]
    fn a_cancel_after_the_deadline_is_an_expiry() {
        let Outcome::Decided { approval, .. } = apply(&Approval::pending(1_000), Command::Cancel { by: "k".into(), at: 1_001, reason: None }) else { panic!() };
        assert_eq!(approval.status, Status::Expired);
    }

    #[test]
    fn an_early_alarm_changes_nothing() {
        assert_eq!(apply(&Approval::pending(1_000), Command::Expire { at: 999 }), Outcome::Ignored);
    }

    /// The whole system for one message, as the model checker sees it.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct World {
        gated: bool,
        approval: Option<(Status, Option<String>)>,
        message_status: MessageStatus,
        queue_messages: u8,
        deliveries: u8,
        decisions: u8,
        expired_fired: bool,
    }

    #[derive(Clone, Copy, Debug)]
    enum Step {
        Approve,
        Reject,
        Expire,
        Cancel,
        DeliveryAttempt,
        DuplicateDelivery,
        RedeliveredQueueMessage,
    }
    const STEPS: [Step; 7] = [Step::Approve, Step::Reject, Step::Expire, Step::Cancel, Step::DeliveryAttempt, Step::DuplicateDelivery, Step::RedeliveredQueueMessage];
    const EXPIRES: i64 = 100;

    fn world(gated: bool) -> World {
        World {
            gated,
            approval: gated.then_some((Status::Pending, None)),
            message_status: if gated { MessageStatus::PendingApproval } else { MessageStatus::Queued },
            queue_messages: if gated { 0 } else { 1 },
            deliveries: 0,
            decisions: 0,
            expired_fired: false,
        }
    }

    fn current(w: &World) -> Approval {
        let (status, by) = w.approval.clone().expect("gated");
        Approval { status, expires_at: EXPIRES, decided_by: by, decided_at: None, reason: None, edit: None }
    }

    /// Applies one step the way the Durable Object and the queue consumer do.
    fn step(mut w: World, s: Step, t: i64) -> World {
        let cmd = match s {
            Step::Approve => Some(Command::Decide { approve: true, by: "human".into(), at: t, reason: None, edit: None }),
            Step::Reject => Some(Command::Decide { approve: false, by: "human".into(), at: t, reason: None, edit: None }),
            Step::Expire => Some(Command::Expire { at: EXPIRES }),
            Step::Cancel => Some(Command::Cancel { by: "sender".into(), at: t, reason: None }),
            _ => None,
        };
        if let Some(cmd) = cmd {
            if matches!(s, Step::Expire) {
                w.expired_fired = true;
            }
            if w.gated {
                if let Outcome::Decided { approval, enqueue_delivery } = apply(&current(&w), cmd) {
                    w.decisions += 1;
                    w.message_status = message_status_after(approval.status);
                    w.approval = Some((approval.status, approval.decided_by));
                    if enqueue_delivery {
                        w.queue_messages += 1;
                    }
                }
            } else if matches!(s, Step::Cancel) && delivery_may_claim(w.message_status) {
                w.message_status = MessageStatus::Cancelled;
            }
            return w;
        }
        match s {
            // A queue message arrives (the first, a duplicate send, or the runtime redelivering).
            Step::DeliveryAttempt | Step::DuplicateDelivery | Step::RedeliveredQueueMessage => {
                let has_message = w.queue_messages > 0 || !matches!(s, Step::DeliveryAttempt);
                if has_message && delivery_may_claim(w.message_status) {
                    w.message_status = MessageStatus::Sent;
                    w.deliveries += 1;
                }
            }
            _ => unreachable!(),
        }
        w
    }

    fn check(w: &World, path: &[Step]) {
        assert!(w.decisions <= 1, "two decisions: {path:?}");
        assert!(w.deliveries <= 1, "delivered twice: {path:?}");
        if w.deliveries > 0 && w.gated {
            assert_eq!(w.approval.as_ref().map(|a| a.0), Some(Status::Approved), "delivered without approval: {path:?}");
        }
        if let Some((st, _)) = &w.approval {
            if matches!(st, Status::Rejected | Status::Expired | Status::Cancelled) {
                assert_eq!(w.deliveries, 0, "delivered after {st:?}: {path:?}");
            }
            if w.expired_fired {
                assert!(st.is_terminal(), "still pending after expiry fired: {path:?}");
            }
        }
    }

    #[test]
    fn model_check_every_sequence_to_depth_7() {
        const DEPTH: usize = 7;
        let mut sequences = 0u64;
        let mut states = std::collections::HashSet::new();
        for gated in [true, false] {
            let mut stack = vec![(world(gated), Vec::<Step>::new())];
            while let Some((w, path)) = stack.pop() {
                check(&w, &path);
                states.insert(w.clone());
                if path.len() == DEPTH {
                    sequences += 1;
                    continue;
                }
                for (i, s) in STEPS.iter().enumerate() {
                    let t = 10 + path.len() as i64 * 10 + i as i64;
                    let mut p = path.clone();
                    p.push(*s);
                    stack.push((step(w.clone(), *s, t), p));
                }
            }
        }
        println!("approval model: {} distinct states, {sequences} sequences of {DEPTH} steps checked", states.len());
        assert_eq!(sequences, 2 * 7u64.pow(DEPTH as u32));
        assert!(states.len() > 10);
    }
}
