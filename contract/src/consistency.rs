//! Read-your-writes: a write answers with a `Consistency-Token` naming the
//! stream versions it produced; a read sent with that token waits (bounded)
//! until the read models have applied them.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use crate::problem::ApiError;
use platform::db::Cached;

/// The header carrying the token, on write answers and read requests.
pub const HEADER: &str = "consistency-token";

/// Stream versions a read must reflect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsistencyToken(pub Vec<(Uuid, i64)>);

impl ConsistencyToken {
    /// Names `version` of `stream`, replacing an earlier version of it.
    pub fn name(&mut self, stream: Uuid, version: i64) {
        self.0.retain(|(s, _)| *s != stream);
        self.0.push((stream, version));
    }

    /// The opaque string form.
    pub fn encode(&self) -> String {
        let body = self
            .0
            .iter()
            .map(|(s, v)| format!("{s}:{v}"))
            .collect::<Vec<_>>()
            .join(",");
        URL_SAFE_NO_PAD.encode(format!("v1;{body}"))
    }

    /// Parses the opaque form; `None` when it is not a token of ours.
    pub fn decode(s: &str) -> Option<Self> {
        if s.len() > 4096 {
            return None;
        }
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s.trim()).ok()?).ok()?;
        let body = raw.strip_prefix("v1;")?;
        let mut pairs = Vec::new();
        for part in body.split(',').filter(|p| !p.is_empty()) {
            let (s, v) = part.split_once(':')?;
            pairs.push((s.parse().ok()?, v.parse().ok()?));
        }
        (pairs.len() <= 64).then_some(ConsistencyToken(pairs))
    }
}

/// Waits until the read models reflect `token`, polling every few
/// milliseconds; after `timeout`, 503 with `Retry-After`.
pub async fn wait_for(
    read: &deadpool_postgres::Pool,
    token: &ConsistencyToken,
    timeout: Duration,
) -> Result<(), ApiError> {
    if token.0.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = token.0.iter().map(|(s, _)| *s).collect();
    let versions: Vec<i64> = token.0.iter().map(|(_, v)| *v).collect();
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        let db = read.get().await?;
        let row = db
            .query_one_cached(
                "SELECT count(*) FROM unnest($1::uuid[], $2::bigint[]) AS t(s, v) \
                 JOIN stream_versions sv ON sv.stream_id = t.s AND sv.version >= t.v",
                &[&ids, &versions],
            )
            .await?;
        drop(db);
        let caught_up: i64 = row.get(0);
        if caught_up as usize >= ids.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ApiError::Unavailable(
                "The read model has not caught up with that write yet.",
                Duration::from_secs(1),
            ));
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let t = ConsistencyToken(vec![(Uuid::new_v4(), 3), (Uuid::new_v4(), 1)]);
        assert_eq!(ConsistencyToken::decode(&t.encode()), Some(t));
        assert_eq!(ConsistencyToken::decode("garbage!"), None);
        assert_eq!(
            ConsistencyToken::decode(&URL_SAFE_NO_PAD.encode("v1;x:1")),
            None
        );
    }

    #[test]
    fn naming_a_stream_again_keeps_its_latest_version_once() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut t = ConsistencyToken(vec![(a, 2)]);
        t.name(b, 1);
        t.name(b, 2);
        assert_eq!(t, ConsistencyToken(vec![(a, 2), (b, 2)]));
    }
}
