//! Read repair: what the client does when a log unit answers that its copy
//! of an address is corrupt (`ServerErrorKind::Corrupt` to a read,
//! `WriteOutcome::Corrupt` to a write or fill).
//!
//! The chain's value of an address is decided at its head (write-once
//! there; every other member copies the head, head first). So:
//!
//! - **A readable head decides.** The value is the head's. If the head holds
//!   data or junk, it is given to every other member in chain order: a
//!   member whose copy is corrupt gets a `Repair`, the others a write that
//!   changes nothing where the value already is (and completes an append in
//!   flight, as a hole filler would). If the head holds nothing, nothing is
//!   decided: the corrupt copies stay until a writer or filler brings the
//!   value (their `Corrupt` answer sends it back here).
//! - **A corrupt head never decides.** Its true content is unknown, while
//!   the members below it may hold it, acknowledged. The value is that of
//!   the first member below the head whose copy is readable: writes reach
//!   it right after the head, so if it holds data or junk, that is what the
//!   head held; if it holds nothing, nothing past the head was written, and
//!   a completing caller (fill, write) decides the address *there* with a
//!   `Fill` (write-once at that member: a writer still copying the head's
//!   lost value down finds junk and takes a new address; the value was
//!   never acknowledged, since the tail never had it). The head and every
//!   corrupt member above that member are then repaired with the value.
//! - A chain whose every member's copy is corrupt has no good copy:
//!   [`ClientError::Corrupt`].

use super::{existing_outcome, unexpected, Inner, Routes};
use crate::client::error::Attempt;
use crate::client::ClientError;
use crate::types::Address;
use crate::wire::logunit::WriteOutcome;
use crate::wire::logunit::{
    AddressedEntry, Existing, LogUnitRequest, LogUnitResponse, ReadOutcome,
};
use crate::wire::{Response, ServerErrorKind};

/// True if `attempt` is a unit's answer that its copy of the address is
/// corrupt.
pub(crate) fn is_corrupt(attempt: &Attempt) -> bool {
    matches!(attempt, Attempt::Fatal(ClientError::Refused { error, .. })
        if error.kind == ServerErrorKind::Corrupt)
}

impl Inner {
    /// Finds the chain's value of `address` (see the module docs), gives it
    /// to every member whose copy is corrupt (and in chain order to the
    /// others), and returns it. With `complete`, an address whose head
    /// copy is corrupt and that no member below holds is decided (junk) at
    /// the first readable member below the head; without, it is answered
    /// `Unwritten` (a reader's hole policy then decides whether to fill).
    pub(crate) async fn repair(
        &self,
        routes: &Routes,
        address: Address,
        complete: bool,
    ) -> Result<ReadOutcome, Attempt> {
        let started = std::time::Instant::now();
        let (_, chain) = routes.chain(address)?;
        // Read from the head down to the first readable copy.
        let mut corrupt = Vec::new();
        let mut decided = None;
        for (i, member) in chain.iter().enumerate() {
            match self
                .log_unit_call(routes, member, LogUnitRequest::Read { address })
                .await
            {
                Ok(LogUnitResponse::Read(outcome)) => {
                    decided = Some((i, outcome));
                    break;
                }
                Ok(other) => {
                    return Err(Attempt::Fatal(unexpected(
                        member,
                        &Response::LogUnit(other),
                    )))
                }
                Err(why) if is_corrupt(&why) => corrupt.push(i),
                Err(why) => return Err(why),
            }
        }
        let Some((from, mut value)) = decided else {
            return Err(Attempt::Fatal(ClientError::Corrupt {
                address,
                detail: format!(
                    "every member of its chain ({}) answered that its copy is corrupt",
                    chain.len()
                ),
            }));
        };
        if from > 0 && value == ReadOutcome::Unwritten {
            if !complete {
                return Ok(ReadOutcome::Unwritten);
            }
            // The head's copy is corrupt and nothing went past it: decide
            // the address where writes go next.
            let member = &chain[from];
            value = match self
                .log_unit_call(routes, member, LogUnitRequest::Fill { address })
                .await?
            {
                LogUnitResponse::Write(WriteOutcome::Ok) => ReadOutcome::Junk,
                LogUnitResponse::Write(WriteOutcome::Overwritten(e)) => existing_outcome(e),
                LogUnitResponse::Write(WriteOutcome::Trimmed) => ReadOutcome::Trimmed,
                LogUnitResponse::Write(WriteOutcome::Corrupt) => {
                    return Err(Attempt::Transient(format!(
                        "{} found its copy of address {address} corrupt while it was being decided",
                        member.addr()
                    )))
                }
                other => {
                    return Err(Attempt::Fatal(unexpected(
                        member,
                        &Response::LogUnit(other),
                    )))
                }
            };
        }
        let existing = match &value {
            ReadOutcome::Data(entry) => Existing::Data(entry.clone()),
            ReadOutcome::Junk => Existing::Junk,
            ReadOutcome::Unwritten | ReadOutcome::Trimmed => return Ok(value),
        };
        for (i, member) in chain.iter().enumerate() {
            if i == from {
                continue;
            }
            let mut request = if corrupt.contains(&i) {
                LogUnitRequest::Repair {
                    address,
                    value: existing.clone(),
                }
            } else {
                match &existing {
                    Existing::Data(entry) => LogUnitRequest::Write(AddressedEntry {
                        address,
                        entry: entry.clone(),
                    }),
                    Existing::Junk => LogUnitRequest::Fill { address },
                }
            };
            // At most twice: a write that finds the copy corrupt repairs it.
            for _ in 0..2 {
                let repairing = matches!(request, LogUnitRequest::Repair { .. });
                let found = match self.log_unit_call(routes, member, request).await? {
                    LogUnitResponse::Write(WriteOutcome::Ok) => {
                        if repairing {
                            tracing::info!(
                                address,
                                unit = member.addr(),
                                micros = started.elapsed().as_micros() as u64,
                                "repaired a corrupt copy from its chain"
                            );
                        }
                        break;
                    }
                    LogUnitResponse::Write(WriteOutcome::Overwritten(e)) => existing_outcome(e),
                    LogUnitResponse::Write(WriteOutcome::Trimmed) => {
                        return Ok(ReadOutcome::Trimmed)
                    }
                    LogUnitResponse::Write(WriteOutcome::Corrupt) if !repairing => {
                        request = LogUnitRequest::Repair {
                            address,
                            value: existing.clone(),
                        };
                        continue;
                    }
                    other => {
                        return Err(Attempt::Fatal(unexpected(
                            member,
                            &Response::LogUnit(other),
                        )))
                    }
                };
                if found != value {
                    return Err(Attempt::Fatal(ClientError::ChainDiverged {
                        address,
                        detail: format!(
                            "repairing a corrupt copy: the chain's value is {} but {} holds {}",
                            super::describe(&value),
                            member.addr(),
                            super::describe(&found)
                        ),
                    }));
                }
                break;
            }
        }
        Ok(value)
    }
}
