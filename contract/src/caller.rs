//! The per-request access check: who is calling, with which permissions
//! and scope, answered as the partner API answers a refusal (`401`, `403`).

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use domain::access::{Permission, Scope};
use platform::access_cache::{PartnerAccess, PartnerCache};
use platform::token::TokenVerifier;
use uuid::Uuid;

use crate::problem::ApiError;

/// An authenticated partner with its current permissions and scope (shared
/// with the process's copy of the partners' access, not copied per request).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The partner id.
    pub partner_id: Uuid,
    access: Arc<PartnerAccess>,
}

impl Caller {
    /// 403 unless the caller holds `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.has(p) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "This call needs the {p} permission."
            )))
        }
    }

    /// Whether the caller holds `p`.
    pub fn has(&self, p: Permission) -> bool {
        self.access.permissions.contains(&p)
    }

    /// The caller's current scope.
    pub fn scope(&self) -> &Scope {
        &self.access.scope
    }

    /// Whether a record of `client` at `location` is in scope.
    pub fn sees(&self, client: &str, location: &str) -> bool {
        self.access.scope.contains(client, location)
    }
}

/// What a request's access check reads, both kept in memory: the published
/// keys that verify tokens, and the partners' current access.
#[derive(Clone)]
pub struct Gate {
    tokens: TokenVerifier,
    partners: PartnerCache,
}

impl Gate {
    /// A gate over these keys and partners.
    pub fn new(tokens: TokenVerifier, partners: PartnerCache) -> Gate {
        Gate { tokens, partners }
    }

    /// The published token keys (the JWKS).
    pub fn tokens(&self) -> &TokenVerifier {
        &self.tokens
    }

    /// Authenticates a request: a bearer token signed by a published key
    /// and not expired, whose partner exists, is enabled, and has not
    /// rotated its secret since the token was issued.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let claims = self
            .tokens
            .verify(token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let access = self
            .partners
            .access(claims.sub)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if access.disabled || access.secret_version != claims.sv {
            return Err(ApiError::Unauthorized);
        }
        Ok(Caller {
            partner_id: claims.sub,
            access,
        })
    }
}
