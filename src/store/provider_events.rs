//! The provider events already applied, by the provider's own id, so a replayed webhook is
//! acknowledged and changes nothing.

use super::Db;
use worker::Result;

use crate::args;

/// Records `event_id`; `true` the first time it is seen, `false` for a replay.
pub async fn first_time(db: &Db, provider: &str, event_id: &str, now: i64) -> Result<bool> {
    super::changed(
        db,
        "INSERT INTO provider_event_ids (provider, event_id, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING RETURNING event_id",
        args![provider, event_id, now],
    )
    .await
}

/// Forgets one id again (applying it failed: the provider's retry should apply it).
pub async fn forget(db: &Db, provider: &str, event_id: &str) -> Result<()> {
    super::run(db, "DELETE FROM provider_event_ids WHERE provider = ?1 AND event_id = ?2", args![provider, event_id]).await
}

/// Forgets ids older than `before` (providers stop retrying long before).
pub async fn prune(db: &Db, before: i64) -> Result<()> {
    super::run(db, "DELETE FROM provider_event_ids WHERE created_at < ?1", args![before]).await
}
