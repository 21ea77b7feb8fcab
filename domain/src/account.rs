//! The patient portal account: its own stream, so that account and login
//! activity never change the patient's version.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DomainEvent, StreamKind};

/// The events of an account stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    /// An account was opened for a patient and an invitation is due.
    PatientAccountInvited(PatientAccountInvited),
}

impl DomainEvent for AccountEvent {
    const STREAM: StreamKind = StreamKind::Account;
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::PatientAccountInvited(_) => "PatientAccountInvited",
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

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    /// Invited; the activation link has not been used yet.
    Invited,
    /// Activated by the patient.
    Active,
}

impl AccountStatus {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Invited => "invited",
            AccountStatus::Active => "active",
        }
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
    /// Status.
    pub status: AccountStatus,
    /// Stream version.
    pub version: i64,
}

/// Opens an account for a patient with a valid, unused email.
pub fn open(account_id: Uuid, patient_id: Uuid, email: String) -> AccountEvent {
    AccountEvent::PatientAccountInvited(PatientAccountInvited {
        account_id,
        patient_id,
        email,
    })
}

/// Folds one event into the state.
pub fn apply(state: Option<Account>, event: &AccountEvent) -> Option<Account> {
    match event {
        AccountEvent::PatientAccountInvited(e) => Some(Account {
            id: e.account_id,
            patient_id: e.patient_id,
            email: e.email.clone(),
            status: AccountStatus::Invited,
            version: state.map_or(1, |s| s.version + 1),
        }),
    }
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
}
