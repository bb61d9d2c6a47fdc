//! The full-text index (`message_search`, kept by the triggers of migration 0018): ranked
//! matches, scoped like every read.

use serde::Deserialize;

use super::messages::MessageWithMailbox;
use super::Db;
use crate::args;
use crate::domain::message::Direction;
use crate::domain::search::{MARK_END, MARK_START};
use worker::Result;

pub struct SearchFilter<'a> {
    pub account_id: &'a str,
    pub livemode: bool,
    pub mailbox_id: Option<&'a str>,
    /// The key's mailboxes (a JSON array), when it is limited to some.
    pub allowed: Option<&'a str>,
    pub direction: Option<Direction>,
    pub since: Option<i64>,
    /// The FTS5 expression (`domain::search::fts_query`).
    pub query: &'a str,
}

#[derive(Debug, Deserialize)]
pub struct Hit {
    #[serde(flatten)]
    pub message: MessageWithMailbox,
    /// The best-matching stretch, with `MARK_START`/`MARK_END` around the matches.
    pub hit_snippet: String,
    /// bm25: lower is better.
    pub hit_rank: f64,
}

/// Up to `limit` messages matching, best first (then newest), from `offset`. Held inbound mail
/// (not yet `received`) and our own system mail are never found; neither are other accounts',
/// the other mode's, or mailboxes the key may not use.
pub async fn search(db: &Db, f: &SearchFilter<'_>, offset: u32, limit: u32) -> Result<Vec<Hit>> {
    let (start, end) = (MARK_START.to_string(), MARK_END.to_string());
    super::all(
        db,
        "SELECT m.*, COALESCE(b.address, m.from_addr) AS mailbox_address,
                snippet(message_search, -1, ?9, ?10, '…', 16) AS hit_snippet,
                bm25(message_search, 3.0, 2.0, 1.0) AS hit_rank
         FROM message_search
         JOIN search_docs d ON d.doc = message_search.rowid
         JOIN messages m ON m.id = d.message_id
         LEFT JOIN mailboxes b ON b.id = m.mailbox_id
         WHERE message_search MATCH ?1
           AND m.account_id = ?2 AND m.livemode = ?3 AND m.kind = 'message'
           AND NOT (m.direction = 'inbound' AND m.status <> 'received')
           AND (?4 IS NULL OR m.mailbox_id = ?4)
           AND (?5 IS NULL OR m.mailbox_id IN (SELECT value FROM json_each(?5)))
           AND (?6 IS NULL OR m.direction = ?6)
           AND (?7 IS NULL OR m.created_at >= ?7)
         ORDER BY hit_rank, m.id DESC LIMIT ?8 OFFSET ?11",
        args![
            f.query, f.account_id, f.livemode, f.mailbox_id, f.allowed, f.direction.map(Direction::as_str), f.since, i64::from(limit),
            start.as_str(), end.as_str(), i64::from(offset)
        ],
    )
    .await
}
