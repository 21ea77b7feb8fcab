//! Portal accounts' commands, each an [`Operation`]: activation with an
//! emailed link, a new activation link, a password change and the
//! confirmation of a new login (the patient), locking after failed logins
//! (the system), unlocking and disabling (an operator, `lis admin
//! account`).

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use domain::account::{self, Account, AccountAction, AccountEvent, AccountRejection};
use uuid::Uuid;

use crate::pipeline::{Decision, Operation, Raced};
use crate::store::{self, LoadError, Row, Writes};

/// Why an account command is refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// No account has that id or login.
    #[error("no such account")]
    Unknown,
    /// The account's status does not allow it.
    #[error(transparent)]
    Rejected(#[from] AccountRejection),
    /// The mailed link does not work.
    #[error("the link {0}")]
    Link(LinkProblem),
    /// Another account took the address as its login meanwhile.
    #[error("another account uses the address")]
    LoginInUse,
    /// A concurrent change won every attempt.
    #[error(transparent)]
    Raced(#[from] Raced),
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// No connection.
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A stored event does not read.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Why an activation link does not work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkProblem {
    /// No link has that token.
    #[error("is unknown")]
    Unknown,
    /// It was used (or the account was activated through another link).
    #[error("was used")]
    Used,
    /// It is past its time.
    #[error("has expired")]
    Expired,
    /// It went to an address that is no longer the account's login (the
    /// invitation was sent again to a corrected address).
    #[error("was replaced")]
    Superseded,
}

/// What a mailed link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Activating an invited account (choosing a password).
    Activate,
    /// Confirming a new login address.
    ConfirmLogin,
}

impl LinkPurpose {
    /// Its spelling in `activation_tokens.purpose`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Activate => "activate",
            LinkPurpose::ConfirmLogin => "confirm_login",
        }
    }
}

/// How an account is named.
#[derive(Debug, Clone)]
pub enum AccountKey {
    /// By its id.
    Id(Uuid),
    /// By its login email (compared as logins are).
    Login(String),
}

/// Finds an account's id.
pub async fn find(db: &impl GenericClient, key: &AccountKey) -> Result<Option<Uuid>, AccountError> {
    Ok(match key {
        AccountKey::Id(id) => db
            .query_opt(
                "SELECT account_id FROM accounts WHERE account_id = $1",
                &[id],
            )
            .await?
            .map(|r| r.get(0)),
        AccountKey::Login(email) => db
            .query_opt(
                "SELECT account_id FROM accounts WHERE login = $1",
                &[&domain::patient::login_key(email)],
            )
            .await?
            .map(|r| r.get(0)),
    })
}

/// Loads an account from its stream.
pub async fn load(db: &impl GenericClient, id: Uuid) -> Result<Option<Account>, AccountError> {
    Ok(store::load::<AccountEvent>(db, id)
        .await?
        .and_then(|loaded| account::replay(&loaded.events)))
}

/// The writes of `action` on `account` (its event, the status row, and what
/// the action implies beside them) and the account after them.
fn writes(account: &Account, action: AccountAction) -> Result<(Writes, Account), AccountRejection> {
    let event = account::decide(account, action)?;
    let after = account::apply(Some(account.clone()), &event).expect("an account stays");
    let mut writes = Writes::default();
    writes.event(account.id, after.version, &event);
    writes.rows.push(Row::AccountStatus {
        account_id: account.id,
        status: after.status.as_str(),
        version: after.version,
    });
    if matches!(
        action,
        AccountAction::Lock | AccountAction::Disable | AccountAction::ChangePassword
    ) {
        writes.rows.push(Row::EndSessions {
            account_id: account.id,
        });
    }
    Ok((writes, after))
}

/// The decision of an action that sets the password (its hash).
fn with_password(
    account: &Account,
    action: AccountAction,
    hash: &str,
) -> Result<Decision<Account>, AccountError> {
    let (mut writes, output) = writes(account, action)?;
    writes.rows.push(Row::AccountPassword {
        account_id: account.id,
        hash: hash.to_string(),
    });
    Ok(Decision { writes, output })
}

/// An action on an account named by id or login (lock, unlock, disable).
pub struct ChangeAccount {
    /// The account.
    pub key: AccountKey,
    /// What to do.
    pub action: AccountAction,
}

impl Operation for ChangeAccount {
    type Output = Account;
    type Error = AccountError;
    async fn decide(&self, tx: &Transaction<'_>) -> Result<Decision<Account>, AccountError> {
        let id = find(tx, &self.key).await?.ok_or(AccountError::Unknown)?;
        let account = load(tx, id).await?.ok_or(AccountError::Unknown)?;
        let (writes, output) = writes(&account, self.action)?;
        Ok(Decision { writes, output })
    }
}

/// A patient activates an account through an emailed link, choosing a
/// password (given here as its slow hash).
pub struct Activate {
    /// The SHA-256 of the link's token.
    pub token_hash: Vec<u8>,
    /// The chosen password's hash.
    pub password_hash: String,
}

/// Checks a mailed link for `purpose`: the account it acts on and the
/// address it names (a new login's), or why it does not work.
pub async fn check_link(
    db: &impl GenericClient,
    token_hash: &[u8],
    purpose: LinkPurpose,
) -> Result<(Account, Option<String>), AccountError> {
    let row = db
        .query_opt(
            "SELECT account_id, expires_at, used_at, email FROM activation_tokens \
             WHERE token_hash = $1 AND purpose = $2",
            &[&token_hash, &purpose.as_str()],
        )
        .await?
        .ok_or(AccountError::Link(LinkProblem::Unknown))?;
    let (id, expires, used, email): (Uuid, DateTime<Utc>, Option<DateTime<Utc>>, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let account = load(db, id).await?.ok_or(AccountError::Unknown)?;
    if purpose == LinkPurpose::Activate
        && account.status == account::AccountStatus::Invited
        && email.as_deref().is_some_and(|e| {
            domain::patient::login_key(e) != domain::patient::login_key(&account.email)
        })
    {
        return Err(AccountError::Link(LinkProblem::Superseded));
    }
    let current = match purpose {
        LinkPurpose::Activate => AccountAction::Activate.allowed_from(account.status),
        LinkPurpose::ConfirmLogin => email
            .as_deref()
            .is_some_and(|e| account::confirm_login(&account, e).is_ok()),
    };
    if used.is_some() || !current {
        return Err(AccountError::Link(LinkProblem::Used));
    }
    if expires <= Utc::now() {
        return Err(AccountError::Link(LinkProblem::Expired));
    }
    Ok((account, email))
}

impl Operation for Activate {
    type Output = Account;
    type Error = AccountError;
    async fn decide(&self, tx: &Transaction<'_>) -> Result<Decision<Account>, AccountError> {
        let (account, _) = check_link(tx, &self.token_hash, LinkPurpose::Activate).await?;
        with_password(&account, AccountAction::Activate, &self.password_hash)
    }
}

/// A signed-in patient changes the password (the portal checked the
/// current one): every session of the account ends, the portal starts a
/// new one for the patient.
pub struct ChangePassword {
    /// The account.
    pub account_id: Uuid,
    /// The new password's hash.
    pub password_hash: String,
}

impl Operation for ChangePassword {
    type Output = Account;
    type Error = AccountError;
    async fn decide(&self, tx: &Transaction<'_>) -> Result<Decision<Account>, AccountError> {
        let account = load(tx, self.account_id)
            .await?
            .ok_or(AccountError::Unknown)?;
        with_password(&account, AccountAction::ChangePassword, &self.password_hash)
    }
}

/// A patient asks for a new activation link for the login `email`; nothing
/// happens (and nothing tells) when no invited account has that login.
pub struct RequestLink {
    /// The login.
    pub email: String,
}

impl Operation for RequestLink {
    type Output = bool;
    type Error = AccountError;
    async fn decide(&self, tx: &Transaction<'_>) -> Result<Decision<bool>, AccountError> {
        let key = AccountKey::Login(self.email.clone());
        let account = match find(tx, &key).await? {
            Some(id) => load(tx, id).await?,
            None => None,
        };
        Ok(match account {
            Some(a) if AccountAction::RequestLink.allowed_from(a.status) => Decision {
                writes: writes(&a, AccountAction::RequestLink)?.0,
                output: true,
            },
            _ => Decision {
                writes: Writes::default(),
                output: false,
            },
        })
    }
}

/// A patient confirms a new login address through the link mailed to it
/// (the portal checked the account's password first).
pub struct ConfirmLogin {
    /// The SHA-256 of the link's token.
    pub token_hash: Vec<u8>,
}

impl Operation for ConfirmLogin {
    type Output = Account;
    type Error = AccountError;
    async fn decide(&self, tx: &Transaction<'_>) -> Result<Decision<Account>, AccountError> {
        let (account, email) = check_link(tx, &self.token_hash, LinkPurpose::ConfirmLogin).await?;
        let email = email.ok_or(AccountError::Link(LinkProblem::Unknown))?;
        let login = domain::patient::login_key(&email);
        let taken = tx
            .query_opt(
                "SELECT 1 FROM accounts WHERE login = $1 AND account_id <> $2",
                &[&login, &account.id],
            )
            .await?
            .is_some();
        if taken {
            return Err(AccountError::LoginInUse);
        }
        let event = account::confirm_login(&account, &email)?;
        let after = account::apply(Some(account.clone()), &event).expect("an account stays");
        let mut writes = Writes::default();
        writes.event(account.id, after.version, &event);
        writes.rows.push(Row::AccountLogin {
            account_id: account.id,
            login,
            token_hash: Some(self.token_hash.clone()),
        });
        Ok(Decision {
            writes,
            output: after,
        })
    }
}

/// An account's password hash (none before activation).
pub async fn password_hash(
    db: &impl GenericClient,
    id: Uuid,
) -> Result<Option<String>, AccountError> {
    Ok(db
        .query_opt(
            "SELECT password_hash FROM accounts WHERE account_id = $1",
            &[&id],
        )
        .await?
        .and_then(|r| r.get(0)))
}
