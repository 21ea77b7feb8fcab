//! The per-request access check: who is calling, with which permissions
//! and scope, answered as the partner API answers a refusal (`401`, `403`).

use std::collections::BTreeSet;

use axum::http::{header, HeaderMap};
use domain::access::{Permission, Scope};
use platform::access_cache::PartnerCache;
use platform::auth::{verify_token, TokenKeys};
use uuid::Uuid;

use crate::problem::ApiError;

/// An authenticated partner with its current permissions and scope.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The partner id.
    pub partner_id: Uuid,
    /// Current permissions.
    pub permissions: BTreeSet<Permission>,
    /// Current scope.
    pub scope: Scope,
}

impl Caller {
    /// 403 unless the caller holds `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.permissions.contains(&p) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "This call needs the {p} permission."
            )))
        }
    }

    /// Whether the caller holds `p`.
    pub fn has(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    /// Whether a record of `client` at `location` is in scope.
    pub fn sees(&self, client: &str, location: &str) -> bool {
        self.scope.contains(client, location)
    }
}

/// Authenticates a request: a valid bearer token whose partner exists, is
/// enabled, and has not rotated its secret since the token was issued.
pub async fn authenticate(
    headers: &HeaderMap,
    keys: &TokenKeys,
    partners: &PartnerCache,
) -> Result<Caller, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    let claims = verify_token(keys, token).ok_or(ApiError::Unauthorized)?;
    let partner = partners
        .access(claims.sub)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if partner.disabled || partner.secret_version != claims.sv {
        return Err(ApiError::Unauthorized);
    }
    Ok(Caller {
        partner_id: claims.sub,
        permissions: partner.permissions.clone(),
        scope: partner.scope.clone(),
    })
}
