//! The core's plain errors and verdicts as gRPC statuses: the one place
//! that decides which code each refusal carries.

use crate::chat::core::{ChatError, Refusal, Verdict};
use crate::framing::Status;

/// The status a call ends with when the core refuses it.
pub fn status_of(error: ChatError) -> Status {
    let text = error.to_string();
    match error {
        ChatError::ShuttingDown => Status::unavailable(text),
        ChatError::RoomFull { .. } => Status::resource_exhausted(text),
        ChatError::NameTaken { .. } => Status::already_exists(text),
        ChatError::InvalidName { .. } => Status::invalid_argument(text),
        ChatError::NotYourName { .. } => Status::permission_denied(text),
    }
}

/// The status of a `SendMessage` call whose message was refused (the
/// streaming protocols tell their member with a notice instead).
pub fn refusal_status(refusal: &Refusal) -> Status {
    let text = refusal.to_string();
    match refusal {
        Refusal::Empty | Refusal::Invalid(_) => Status::invalid_argument(text),
        Refusal::RateLimited { .. } => Status::resource_exhausted(text),
        Refusal::Unnamed => Status::failed_precondition(text),
        Refusal::ShuttingDown => Status::unavailable(text),
    }
}

/// How a member's call ends, from the core's verdict.
pub fn verdict_status(verdict: Verdict) -> Result<(), Status> {
    match verdict {
        Verdict::Done => Ok(()),
        Verdict::TooFarBehind { max_lag } => Err(Status::resource_exhausted(format!(
            "too far behind: more than {max_lag} bytes of messages waiting for this client"
        ))),
        Verdict::ShuttingDown(notice) => Err(Status::unavailable(notice)),
        Verdict::NameLost(why) => Err(Status::already_exists(why)),
    }
}
