//! The patient portal account: its own stream, so that account and login
//! activity never change the patient's version.
//!
//! Its lifecycle: invited (a partner gave the patient a valid email) →
//! active (the patient chose a password through the emailed link) ⇄ locked
//! (after repeated failed logins; an operator unlocks it) → disabled (by an
//! operator, for good). No password, hash or token is ever in an event:
//! those are write-side state beside the stream.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DomainEvent, StreamKind};

/// The events of an account stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    /// An account was opened for a patient and an invitation is due.
    PatientAccountInvited(PatientAccountInvited),
    /// The patient asked for a new activation link; one is due.
    ActivationLinkRequested(ActivationLinkRequested),
    /// The patient chose a password through an activation link.
    PatientAccountActivated(AccountChange),
    /// The patient changed the password (giving the current one); the
    /// account's other sessions ended.
    PatientAccountPasswordChanged(AccountChange),
    /// Too many failed logins in a row: logins are refused until an
    /// operator unlocks the account.
    PatientAccountLocked(AccountChange),
    /// An operator unlocked the account.
    PatientAccountUnlocked(AccountChange),
    /// An operator disabled the account for good.
    PatientAccountDisabled(AccountChange),
    /// A partner changed the email of a patient whose account is
    /// activated: the login stays until the patient confirms the new
    /// address through a link sent to it; the old address is told.
    LoginChangeRequested(LoginChangeRequested),
    /// The patient confirmed the new address: it is the login now.
    PatientAccountLoginChanged(LoginChanged),
    /// A partner changed the email of a patient whose account is invited,
    /// not yet activated (a mistyped address, most often): the login moves
    /// to the new address, a new invitation goes there, and the links sent
    /// to the previous one stop working.
    InvitationRedirected(InvitationRedirected),
}

impl DomainEvent for AccountEvent {
    const STREAM: StreamKind = StreamKind::Account;
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::PatientAccountInvited(_) => "PatientAccountInvited",
            AccountEvent::ActivationLinkRequested(_) => "ActivationLinkRequested",
            AccountEvent::PatientAccountActivated(_) => "PatientAccountActivated",
            AccountEvent::PatientAccountPasswordChanged(_) => "PatientAccountPasswordChanged",
            AccountEvent::PatientAccountLocked(_) => "PatientAccountLocked",
            AccountEvent::PatientAccountUnlocked(_) => "PatientAccountUnlocked",
            AccountEvent::PatientAccountDisabled(_) => "PatientAccountDisabled",
            AccountEvent::LoginChangeRequested(_) => "LoginChangeRequested",
            AccountEvent::PatientAccountLoginChanged(_) => "PatientAccountLoginChanged",
            AccountEvent::InvitationRedirected(_) => "InvitationRedirected",
        }
    }
}

/// Data of `PatientAccountInvited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientAccountInvited {
    /// The account's id (its stream id).
    #[serde(rename = "accountID")]
    pub account_id: Uuid,
    /// The patient the account belongs to.
    #[serde(rename = "patientID")]
    pub patient_id: Uuid,
    /// The login email the invitation goes to.
    pub email: String,
}

/// Data of `ActivationLinkRequested`: the link goes to the login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationLinkRequested {
    /// The account.
    #[serde(rename = "accountID")]
    pub account_id: Uuid,
    /// The login email the new link goes to.
    pub email: String,
}

/// Data of `LoginChangeRequested`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginChangeRequested {
    /// The account.
    #[serde(rename = "accountID")]
    pub account_id: Uuid,
    /// The new address, which the confirmation link goes to.
    pub email: String,
    /// The login until the patient confirms, which is told of the change.
    #[serde(rename = "previousEmail")]
    pub previous_email: String,
}

/// Data of `InvitationRedirected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationRedirected {
    /// The account.
    #[serde(rename = "accountID")]
    pub account_id: Uuid,
    /// The new login, which the new invitation goes to.
    pub email: String,
    /// The login it replaces, whose links stop working.
    #[serde(rename = "previousEmail")]
    pub previous_email: String,
}

/// Data of `PatientAccountLoginChanged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginChanged {
    /// The account.
    #[serde(rename = "accountID")]
    pub account_id: Uuid,
    /// The new login.
    pub email: String,
}

/// Data of the events that only name the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountChange {
    /// The account.
    #[serde(rename = "accountID")]
    pub account_id: Uuid,
}

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    /// Invited; the activation link has not been used yet.
    Invited,
    /// Activated by the patient.
    Active,
    /// Locked after repeated failed logins.
    Locked,
    /// Disabled by an operator.
    Disabled,
}

impl AccountStatus {
    /// Every status.
    pub const ALL: [AccountStatus; 4] = [
        AccountStatus::Invited,
        AccountStatus::Active,
        AccountStatus::Locked,
        AccountStatus::Disabled,
    ];

    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Invited => "invited",
            AccountStatus::Active => "active",
            AccountStatus::Locked => "locked",
            AccountStatus::Disabled => "disabled",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        AccountStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The state of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Account id.
    pub id: Uuid,
    /// Owning patient.
    pub patient_id: Uuid,
    /// Login email.
    pub email: String,
    /// A new address waiting for the patient's confirmation.
    pub pending_email: Option<String>,
    /// Status.
    pub status: AccountStatus,
    /// Stream version.
    pub version: i64,
}

/// Why an account command is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccountRejection {
    /// The account is not in a status the command applies to.
    #[error("the account is {0:?}")]
    Status(AccountStatus),
    /// The address confirmed is not the one waiting for confirmation (a
    /// later change replaced it, or it was confirmed already).
    #[error("no such change of login is waiting")]
    NoSuchChange,
}

/// What can be done to an account, each allowed from some statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    /// The patient sets a first password (invited only).
    Activate,
    /// The patient asks for a new activation link (invited only).
    RequestLink,
    /// The patient changes the password (active only).
    ChangePassword,
    /// Repeated failed logins lock it (active only).
    Lock,
    /// An operator unlocks it (locked only).
    Unlock,
    /// An operator disables it (any but disabled).
    Disable,
}

impl AccountAction {
    /// Whether the action applies to an account in `status`.
    pub fn allowed_from(self, status: AccountStatus) -> bool {
        use AccountStatus::*;
        match self {
            AccountAction::Activate | AccountAction::RequestLink => status == Invited,
            AccountAction::Lock | AccountAction::ChangePassword => status == Active,
            AccountAction::Unlock => status == Locked,
            AccountAction::Disable => status != Disabled,
        }
    }
}

/// Opens an account for a patient with a valid, unused email.
pub fn open(account_id: Uuid, patient_id: Uuid, email: String) -> AccountEvent {
    AccountEvent::PatientAccountInvited(PatientAccountInvited {
        account_id,
        patient_id,
        email,
    })
}

/// A partner gave the patient a new valid `email` that no other account
/// uses, not the account's login. An activated account's login changes
/// only once the patient confirms it; an invited account's invitation goes
/// to the new address instead (whoever holds a link can activate, so the
/// previous address's links stop working). No event for a disabled
/// account, or an address already waiting for confirmation.
pub fn request_login_change(account: &Account, email: &str) -> Option<AccountEvent> {
    let same = crate::patient::login_key(email) == crate::patient::login_key(&account.email);
    let waiting = account.pending_email.as_deref() == Some(email);
    if same || waiting {
        return None;
    }
    match account.status {
        AccountStatus::Active | AccountStatus::Locked => {
            Some(AccountEvent::LoginChangeRequested(LoginChangeRequested {
                account_id: account.id,
                email: email.to_string(),
                previous_email: account.email.clone(),
            }))
        }
        AccountStatus::Invited => Some(AccountEvent::InvitationRedirected(InvitationRedirected {
            account_id: account.id,
            email: email.to_string(),
            previous_email: account.email.clone(),
        })),
        AccountStatus::Disabled => None,
    }
}

/// The patient confirms `email`, the address waiting for confirmation.
pub fn confirm_login(account: &Account, email: &str) -> Result<AccountEvent, AccountRejection> {
    if !matches!(
        account.status,
        AccountStatus::Active | AccountStatus::Locked
    ) {
        return Err(AccountRejection::Status(account.status));
    }
    if account.pending_email.as_deref() != Some(email) {
        return Err(AccountRejection::NoSuchChange);
    }
    Ok(AccountEvent::PatientAccountLoginChanged(LoginChanged {
        account_id: account.id,
        email: email.to_string(),
    }))
}

/// Decides `action` on `account`: the event it produces.
pub fn decide(account: &Account, action: AccountAction) -> Result<AccountEvent, AccountRejection> {
    if !action.allowed_from(account.status) {
        return Err(AccountRejection::Status(account.status));
    }
    let change = AccountChange {
        account_id: account.id,
    };
    Ok(match action {
        AccountAction::Activate => AccountEvent::PatientAccountActivated(change),
        AccountAction::RequestLink => {
            AccountEvent::ActivationLinkRequested(ActivationLinkRequested {
                account_id: account.id,
                email: account.email.clone(),
            })
        }
        AccountAction::ChangePassword => AccountEvent::PatientAccountPasswordChanged(change),
        AccountAction::Lock => AccountEvent::PatientAccountLocked(change),
        AccountAction::Unlock => AccountEvent::PatientAccountUnlocked(change),
        AccountAction::Disable => AccountEvent::PatientAccountDisabled(change),
    })
}

/// Folds one event into the state.
pub fn apply(state: Option<Account>, event: &AccountEvent) -> Option<Account> {
    let version = state.as_ref().map_or(1, |s| s.version + 1);
    let status = match event {
        AccountEvent::PatientAccountInvited(e) => {
            return Some(Account {
                id: e.account_id,
                patient_id: e.patient_id,
                email: e.email.clone(),
                pending_email: None,
                status: AccountStatus::Invited,
                version,
            })
        }
        AccountEvent::LoginChangeRequested(e) => {
            return state.map(|s| Account {
                pending_email: Some(e.email.clone()),
                version,
                ..s
            })
        }
        AccountEvent::PatientAccountLoginChanged(LoginChanged { email, .. })
        | AccountEvent::InvitationRedirected(InvitationRedirected { email, .. }) => {
            return state.map(|s| Account {
                email: email.clone(),
                pending_email: None,
                version,
                ..s
            })
        }
        AccountEvent::ActivationLinkRequested(_)
        | AccountEvent::PatientAccountPasswordChanged(_) => None,
        AccountEvent::PatientAccountActivated(_) | AccountEvent::PatientAccountUnlocked(_) => {
            Some(AccountStatus::Active)
        }
        AccountEvent::PatientAccountLocked(_) => Some(AccountStatus::Locked),
        AccountEvent::PatientAccountDisabled(_) => Some(AccountStatus::Disabled),
    };
    state.map(|s| Account {
        status: status.unwrap_or(s.status),
        version,
        ..s
    })
}

/// Folds a whole stream.
pub fn replay(events: &[AccountEvent]) -> Option<Account> {
    events.iter().fold(None, apply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_an_account_invites() {
        let (a, p) = (Uuid::new_v4(), Uuid::new_v4());
        let event = open(a, p, "ada@example.org".into());
        assert_eq!(event.event_type(), "PatientAccountInvited");
        let state = apply(None, &event).unwrap();
        assert_eq!(state.status, AccountStatus::Invited);
        assert_eq!(state.version, 1);
        assert_eq!(state.patient_id, p);
        let back = AccountEvent::from_parts("PatientAccountInvited", event.to_data()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn the_lifecycle_moves_only_along_its_edges() {
        let a = Uuid::new_v4();
        let mut state = apply(None, &open(a, Uuid::new_v4(), "ada@example.org".into())).unwrap();
        for refused in [AccountAction::Lock, AccountAction::Unlock] {
            assert_eq!(
                decide(&state, refused),
                Err(AccountRejection::Status(AccountStatus::Invited))
            );
        }
        let link = decide(&state, AccountAction::RequestLink).unwrap();
        state = apply(Some(state), &link).unwrap();
        assert_eq!((state.status, state.version), (AccountStatus::Invited, 2));
        for (action, then) in [
            (AccountAction::Activate, AccountStatus::Active),
            (AccountAction::ChangePassword, AccountStatus::Active),
            (AccountAction::Lock, AccountStatus::Locked),
            (AccountAction::Unlock, AccountStatus::Active),
            (AccountAction::Disable, AccountStatus::Disabled),
        ] {
            let event = decide(&state, action).unwrap();
            let back = AccountEvent::from_parts(event.event_type(), event.to_data()).unwrap();
            assert_eq!(back, event);
            state = apply(Some(state), &event).unwrap();
            assert_eq!(state.status, then);
        }
        assert_eq!(state.version, 7);
        for action in [
            AccountAction::Activate,
            AccountAction::RequestLink,
            AccountAction::ChangePassword,
            AccountAction::Lock,
            AccountAction::Unlock,
            AccountAction::Disable,
        ] {
            assert!(decide(&state, action).is_err(), "{action:?} after disable");
        }
    }

    #[test]
    fn a_login_changes_only_once_the_patient_confirms_the_waiting_address() {
        let a = Uuid::new_v4();
        let invited = apply(None, &open(a, Uuid::new_v4(), "ada@example.org".into())).unwrap();
        let activated = decide(&invited, AccountAction::Activate).unwrap();
        let active = apply(Some(invited), &activated).unwrap();
        assert_eq!(
            request_login_change(&active, "ADA@example.org"),
            None,
            "the same login"
        );
        let asked = request_login_change(&active, "new@example.org").unwrap();
        let waiting = apply(Some(active), &asked).unwrap();
        assert_eq!(
            waiting.email, "ada@example.org",
            "the login stays until confirmed"
        );
        assert_eq!(
            request_login_change(&waiting, "new@example.org"),
            None,
            "asked already"
        );
        assert_eq!(
            confirm_login(&waiting, "other@example.org"),
            Err(AccountRejection::NoSuchChange)
        );
        let confirmed = confirm_login(&waiting, "new@example.org").unwrap();
        let changed = apply(Some(waiting), &confirmed).unwrap();
        assert_eq!(
            (changed.email.as_str(), changed.pending_email.as_deref()),
            ("new@example.org", None)
        );
        assert_eq!(
            confirm_login(&changed, "new@example.org"),
            Err(AccountRejection::NoSuchChange),
            "a confirmation works once"
        );
        let disabled = decide(&changed, AccountAction::Disable).unwrap();
        let disabled = apply(Some(changed), &disabled).unwrap();
        assert_eq!(request_login_change(&disabled, "late@example.org"), None);
        for e in [asked, confirmed] {
            assert_eq!(
                AccountEvent::from_parts(e.event_type(), e.to_data()).unwrap(),
                e
            );
        }
    }

    #[test]
    fn an_invitation_follows_a_corrected_address_before_activation() {
        let a = Uuid::new_v4();
        let invited = apply(None, &open(a, Uuid::new_v4(), "ada@exmaple.org".into())).unwrap();
        assert_eq!(
            request_login_change(&invited, "ADA@exmaple.org"),
            None,
            "the same login"
        );
        let moved = request_login_change(&invited, "ada@example.org").unwrap();
        assert_eq!(moved.event_type(), "InvitationRedirected");
        let redirected = apply(Some(invited), &moved).unwrap();
        assert_eq!(
            (
                redirected.email.as_str(),
                redirected.status,
                redirected.version
            ),
            ("ada@example.org", AccountStatus::Invited, 2),
            "the login moves at once: no password protects an invited account"
        );
        assert!(decide(&redirected, AccountAction::Activate).is_ok());
        assert_eq!(
            AccountEvent::from_parts(moved.event_type(), moved.to_data()).unwrap(),
            moved
        );
    }
}
