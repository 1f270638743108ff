//! Completing and repairing one address of one chain: the hole filler's
//! rule ([`fill`]) and the read repair ([`repair`]), what the client does
//! when a log unit answers that its copy of an address is corrupt
//! (`ServerErrorKind::Corrupt` to a read, `WriteOutcome::Corrupt` to a
//! write or fill). Both are written once, over [`ChainCalls`], and used by
//! the client and by the state transfer (which completes and repairs the
//! addresses of the chains it copies from).
//!
//! The chain's value of an address is decided at its head (write-once
//! there; every other member copies the head, head first). Values only
//! flow down the chain, so whatever a member holds, the head held. The
//! repair therefore:
//!
//! - **Reads every member before deciding anything.** A member holds a
//!   value (data or junk), holds nothing (`Unwritten`: nothing reached it,
//!   or it lost its copy without knowing it), or answers that its copy is
//!   corrupt.
//! - **Any member's value is the chain's value.** If the readable members
//!   hold one value, it is given to every member that lacks it, in chain
//!   order: a member whose copy is corrupt gets a `Repair`, the others the
//!   write that changes nothing where the value already is (so it also
//!   completes an append in flight, as a hole filler would). If two
//!   members hold different values the chain has diverged: nothing is
//!   written, the caller gets `ChainDiverged`.
//! - **Only if every readable member holds nothing** is the address open.
//!   A readable head then decides nothing (the corrupt copies stay until a
//!   writer or filler brings the value; their `Corrupt` answer sends it
//!   back here). A corrupt head never decides, its content being unknown:
//!   a reader is answered `Unwritten` (its hole policy decides), and a
//!   completing caller (fill, write) decides the address at the first
//!   readable member below the head with a `Fill` (write-once there: a
//!   writer still copying the head's lost value down finds junk, checks
//!   the chain again and takes a new address; its value was never
//!   acknowledged, since the tail never had it). Then the head and the
//!   others are given the decided value as above.
//! - A `Repair` refused because the member no longer holds a corrupt copy
//!   (it restarted and lost the copy, or a repair raced this one) falls
//!   back to the ordinary write of the value: write-once makes it safe (it
//!   lands only where the address is empty, and `Overwritten` with the
//!   same value is success).
//! - A chain whose every member's copy is corrupt has no good copy:
//!   [`Failure::AllCorrupt`].

use std::time::Instant;

use futures_util::future::join_all;

use super::{existing_outcome, unexpected, Inner, Routes};
use crate::client::error::Attempt;
use crate::client::ClientError;
use crate::transport::Peer;
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

/// How [`fill`] and [`repair`] reach the members of one chain (head
/// first), and how their failures are reported to the caller.
pub(crate) trait ChainCalls {
    /// The caller's error (retry or give up).
    type Error;

    /// Members of the chain.
    fn len(&self) -> usize;

    /// Member `member`, for messages.
    fn name(&self, member: usize) -> String;

    /// Sends `request` to member `member`.
    async fn call(
        &self,
        member: usize,
        request: LogUnitRequest,
    ) -> Result<LogUnitResponse, Self::Error>;

    /// True if `error` is a member's answer that its copy is corrupt.
    fn is_corrupt(error: &Self::Error) -> bool;

    /// True if `error` is a member's refusal of the request as invalid (the
    /// answer to a `Repair` of an address it holds no corrupt copy of).
    fn is_invalid(error: &Self::Error) -> bool;

    /// The caller's error for `failure`.
    fn failed(&self, failure: Failure) -> Self::Error;
}

/// Why [`fill`] or [`repair`] could not answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Every member's copy of the address is corrupt.
    AllCorrupt {
        /// The address.
        address: Address,
        /// Members of the chain.
        members: usize,
    },
    /// Members hold different values.
    Diverged {
        /// The address.
        address: Address,
        /// Who holds what.
        detail: String,
    },
    /// A member answered something that is no answer to the request.
    Unexpected {
        /// The member.
        member: usize,
        /// Its answer.
        answer: LogUnitResponse,
    },
    /// A member's copy changed under the repair; worth retrying.
    Transient(String),
}

/// A short description of a value, for messages.
pub(crate) fn describe(outcome: &ReadOutcome) -> String {
    match outcome {
        ReadOutcome::Data(e) => match e.id {
            Some(id) => format!(
                "data ({} bytes, append {}:{})",
                e.payload.len(),
                id.client,
                id.seq
            ),
            None => format!("data ({} bytes)", e.payload.len()),
        },
        ReadOutcome::Junk => "junk".into(),
        ReadOutcome::Unwritten => "nothing".into(),
        ReadOutcome::Trimmed => "a trimmed address".into(),
    }
}

/// The write that gives `value` (data or junk) to a member without
/// deciding anything the member already holds.
fn write_of(address: Address, value: &ReadOutcome) -> Option<LogUnitRequest> {
    match value {
        ReadOutcome::Data(entry) => Some(LogUnitRequest::Write(AddressedEntry {
            address,
            entry: entry.clone(),
        })),
        ReadOutcome::Junk => Some(LogUnitRequest::Fill { address }),
        ReadOutcome::Unwritten | ReadOutcome::Trimmed => None,
    }
}

/// What a member's answer to a write, fill or repair says the address
/// holds, if it holds something other than what was written.
enum Written {
    /// The request took effect.
    Ok,
    /// The member holds this.
    Holds(ReadOutcome),
    /// The member's copy is corrupt.
    Corrupt,
}

fn written<C: ChainCalls>(
    chain: &C,
    member: usize,
    answer: LogUnitResponse,
) -> Result<Written, C::Error> {
    match answer {
        LogUnitResponse::Write(WriteOutcome::Ok) => Ok(Written::Ok),
        LogUnitResponse::Write(WriteOutcome::Overwritten(e)) => {
            Ok(Written::Holds(existing_outcome(e)))
        }
        LogUnitResponse::Write(WriteOutcome::Trimmed) => Ok(Written::Holds(ReadOutcome::Trimmed)),
        LogUnitResponse::Write(WriteOutcome::Corrupt) => Ok(Written::Corrupt),
        answer => Err(chain.failed(Failure::Unexpected { member, answer })),
    }
}

/// Completes `address` on `chain` by the hole filler's rule: the head's
/// value is copied down the chain, or, if the head holds nothing, junk is
/// filled head first. A corrupt copy met on the way sends it to
/// [`repair`]. Returns what the address holds.
pub(crate) async fn fill<C: ChainCalls>(
    chain: &C,
    address: Address,
) -> Result<ReadOutcome, C::Error> {
    let at_head = match chain.call(0, LogUnitRequest::Read { address }).await {
        Ok(LogUnitResponse::Read(ReadOutcome::Unwritten)) => {
            let answer = chain.call(0, LogUnitRequest::Fill { address }).await?;
            match written(chain, 0, answer)? {
                Written::Ok => ReadOutcome::Junk,
                Written::Holds(value) => value,
                Written::Corrupt => return repair(chain, address, true).await,
            }
        }
        Ok(LogUnitResponse::Read(outcome)) => outcome,
        Ok(answer) => return Err(chain.failed(Failure::Unexpected { member: 0, answer })),
        // A corrupt copy anywhere: the repair completes the address.
        Err(why) if C::is_corrupt(&why) => return repair(chain, address, true).await,
        Err(why) => return Err(why),
    };
    for member in 1..chain.len() {
        let Some(request) = write_of(address, &at_head) else {
            break;
        };
        let answer = chain.call(member, request).await?;
        let found = match written(chain, member, answer)? {
            Written::Ok => continue,
            Written::Holds(found) => found,
            Written::Corrupt => return repair(chain, address, true).await,
        };
        if found == ReadOutcome::Trimmed {
            return Ok(ReadOutcome::Trimmed);
        }
        if found != at_head {
            return Err(chain.failed(Failure::Diverged {
                address,
                detail: format!(
                    "the head {} holds {} but {} holds {}",
                    chain.name(0),
                    describe(&at_head),
                    chain.name(member),
                    describe(&found)
                ),
            }));
        }
    }
    Ok(at_head)
}

/// Finds the chain's value of `address` (see the module docs), gives it to
/// every member that lacks it and returns it. With `complete`, an address
/// whose head copy is corrupt and that no readable member holds is decided
/// (junk) at the first readable member below the head; without, it is
/// answered `Unwritten` (a reader's hole policy then decides whether to
/// fill). Nothing is written before every member has been read.
pub(crate) async fn repair<C: ChainCalls>(
    chain: &C,
    address: Address,
    complete: bool,
) -> Result<ReadOutcome, C::Error> {
    let started = Instant::now();
    let members = chain.len();
    // Every member's copy: `None` if corrupt.
    let reads =
        join_all((0..members).map(|member| chain.call(member, LogUnitRequest::Read { address })))
            .await;
    let mut copies: Vec<Option<ReadOutcome>> = Vec::with_capacity(members);
    for (member, read) in reads.into_iter().enumerate() {
        copies.push(match read {
            Ok(LogUnitResponse::Read(outcome)) => Some(outcome),
            Ok(answer) => return Err(chain.failed(Failure::Unexpected { member, answer })),
            Err(why) if C::is_corrupt(&why) => None,
            Err(why) => return Err(why),
        });
    }
    if copies.iter().all(Option::is_none) {
        return Err(chain.failed(Failure::AllCorrupt { address, members }));
    }
    if copies.contains(&Some(ReadOutcome::Trimmed)) {
        return Ok(ReadOutcome::Trimmed);
    }
    // The chain's value: the one any readable member holds.
    let mut held: Option<(usize, ReadOutcome)> = None;
    for (member, copy) in copies.iter().enumerate() {
        let Some(value @ (ReadOutcome::Data(_) | ReadOutcome::Junk)) = copy else {
            continue;
        };
        match &held {
            None => held = Some((member, value.clone())),
            Some((first, other)) if other != value => {
                return Err(chain.failed(Failure::Diverged {
                    address,
                    detail: format!(
                        "repairing a corrupt copy: {} holds {} but {} holds {}",
                        chain.name(*first),
                        describe(other),
                        chain.name(member),
                        describe(value)
                    ),
                }))
            }
            Some(_) => {}
        }
    }
    let value = match held {
        Some((_, value)) => value,
        // Every readable copy is empty. A readable head decides nothing
        // here (writes and fills go to it), and a reader decides nothing.
        None if copies[0].is_some() || !complete => return Ok(ReadOutcome::Unwritten),
        None => {
            // The head's copy is corrupt and nothing went past it: decide
            // the address where writes go next.
            let decider = copies
                .iter()
                .position(Option::is_some)
                .expect("a readable member");
            let answer = chain
                .call(decider, LogUnitRequest::Fill { address })
                .await?;
            let value = match written(chain, decider, answer)? {
                Written::Ok => ReadOutcome::Junk,
                Written::Holds(ReadOutcome::Trimmed) => return Ok(ReadOutcome::Trimmed),
                // A writer still copying the head's value got there first.
                Written::Holds(value) => value,
                Written::Corrupt => {
                    return Err(chain.failed(Failure::Transient(format!(
                        "{} found its copy of address {address} corrupt while it was being decided",
                        chain.name(decider)
                    ))))
                }
            };
            copies[decider] = Some(value.clone());
            value
        }
    };
    let existing = match &value {
        ReadOutcome::Data(entry) => Existing::Data(entry.clone()),
        _ => Existing::Junk,
    };
    let repair_request = || LogUnitRequest::Repair {
        address,
        value: existing.clone(),
    };
    for (member, copy) in copies.iter().enumerate() {
        let mut request = match copy {
            Some(copy) if *copy == value => continue,
            None => repair_request(),
            Some(_) => write_of(address, &value).expect("a value"),
        };
        // A copy can change between the read and the write (it turned
        // corrupt, or it stopped being known as corrupt): the other request
        // is tried, a bounded number of times.
        let mut tries = 0;
        loop {
            tries += 1;
            let repairing = matches!(request, LogUnitRequest::Repair { .. });
            let answer = match chain.call(member, request).await {
                Ok(answer) => answer,
                // The member holds no corrupt copy any more: the ordinary
                // write, which lands only where the address is empty.
                Err(why) if repairing && C::is_invalid(&why) && tries < 3 => {
                    request = write_of(address, &value).expect("a value");
                    continue;
                }
                Err(why) => return Err(why),
            };
            match written(chain, member, answer)? {
                Written::Ok => {
                    if repairing {
                        tracing::info!(
                            address,
                            unit = chain.name(member),
                            micros = started.elapsed().as_micros() as u64,
                            "repaired a corrupt copy from its chain"
                        );
                    }
                }
                Written::Holds(ReadOutcome::Trimmed) => return Ok(ReadOutcome::Trimmed),
                Written::Holds(found) if found == value => {}
                Written::Holds(found) => {
                    return Err(chain.failed(Failure::Diverged {
                        address,
                        detail: format!(
                            "repairing a corrupt copy: the chain's value is {} but {} holds {}",
                            describe(&value),
                            chain.name(member),
                            describe(&found)
                        ),
                    }))
                }
                Written::Corrupt if !repairing && tries < 3 => {
                    request = repair_request();
                    continue;
                }
                Written::Corrupt => {
                    return Err(chain.failed(Failure::Transient(format!(
                        "{} kept answering that its copy of address {address} is corrupt",
                        chain.name(member)
                    ))))
                }
            }
            break;
        }
    }
    Ok(value)
}

/// One chain of the client's layout.
struct ClientChain<'a> {
    inner: &'a Inner,
    routes: &'a Routes,
    chain: &'a [Peer],
}

impl ChainCalls for ClientChain<'_> {
    type Error = Attempt;

    fn len(&self) -> usize {
        self.chain.len()
    }

    fn name(&self, member: usize) -> String {
        self.chain[member].addr().to_string()
    }

    async fn call(
        &self,
        member: usize,
        request: LogUnitRequest,
    ) -> Result<LogUnitResponse, Attempt> {
        self.inner
            .log_unit_call(self.routes, &self.chain[member], request)
            .await
    }

    fn is_corrupt(error: &Attempt) -> bool {
        is_corrupt(error)
    }

    fn is_invalid(error: &Attempt) -> bool {
        matches!(error, Attempt::Fatal(ClientError::Refused { error, .. })
            if error.kind == ServerErrorKind::InvalidRequest)
    }

    fn failed(&self, failure: Failure) -> Attempt {
        match failure {
            Failure::AllCorrupt { address, members } => Attempt::Fatal(ClientError::Corrupt {
                address,
                detail: format!(
                    "every member of its chain ({members}) answered that its copy is corrupt"
                ),
            }),
            Failure::Diverged { address, detail } => {
                Attempt::Fatal(ClientError::ChainDiverged { address, detail })
            }
            Failure::Unexpected { member, answer } => {
                Attempt::Fatal(unexpected(&self.chain[member], &Response::LogUnit(answer)))
            }
            Failure::Transient(why) => Attempt::Transient(why),
        }
    }
}

impl Inner {
    /// The chain of `address` in `routes`, for [`fill`] and [`repair`].
    fn chain_calls<'a>(
        &'a self,
        routes: &'a Routes,
        address: Address,
    ) -> Result<ClientChain<'a>, Attempt> {
        let (_, chain) = routes.chain(address)?;
        Ok(ClientChain {
            inner: self,
            routes,
            chain,
        })
    }

    /// [`repair`] of `address` on its chain in `routes`.
    pub(crate) async fn repair(
        &self,
        routes: &Routes,
        address: Address,
        complete: bool,
    ) -> Result<ReadOutcome, Attempt> {
        repair(&self.chain_calls(routes, address)?, address, complete).await
    }

    /// [`fill`] of `address` on its chain in `routes`.
    pub(crate) async fn fill_chain(
        &self,
        routes: &Routes,
        address: Address,
    ) -> Result<ReadOutcome, Attempt> {
        fill(&self.chain_calls(routes, address)?, address).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::logunit::{LogStore, LogUnitLimits, LogUnitService, MemoryStore, Stored};
    use crate::transport::Service;
    use crate::types::ClusterId;
    use crate::wire::logunit::Entry;
    use crate::wire::{Header, Request, ServerError, PROTOCOL_VERSION};

    /// A chain of in-memory log units called directly; every request is
    /// recorded.
    struct Units {
        stores: Vec<Arc<MemoryStore>>,
        units: Vec<LogUnitService<MemoryStore>>,
        sent: Mutex<Vec<(usize, &'static str)>>,
    }

    impl Units {
        fn new(n: usize) -> Units {
            let stores: Vec<_> = (0..n).map(|_| Arc::new(MemoryStore::new())).collect();
            let units = stores
                .iter()
                .map(|s| {
                    LogUnitService::new(
                        s.clone(),
                        LogUnitLimits {
                            read_batch_max: 16,
                            read_bytes_max: 1 << 20,
                            wait_for_sync: false,
                        },
                    )
                })
                .collect();
            Units {
                stores,
                units,
                sent: Mutex::new(Vec::new()),
            }
        }

        fn writes(&self) -> Vec<(usize, &'static str)> {
            let sent = self.sent.lock().unwrap();
            sent.iter()
                .filter(|(_, kind)| *kind != "log_unit.read")
                .copied()
                .collect()
        }

        fn copies(&self, address: Address) -> Vec<String> {
            self.stores
                .iter()
                .map(|s| match s.get(address) {
                    Ok(ReadOutcome::Data(e)) => String::from_utf8_lossy(&e.payload).into_owned(),
                    Ok(other) => format!("{other:?}"),
                    Err(_) => "corrupt".into(),
                })
                .collect()
        }
    }

    impl ChainCalls for Units {
        type Error = Result<ServerError, Failure>;

        fn len(&self) -> usize {
            self.units.len()
        }

        fn name(&self, member: usize) -> String {
            format!("u{member}")
        }

        async fn call(
            &self,
            member: usize,
            request: LogUnitRequest,
        ) -> Result<LogUnitResponse, Self::Error> {
            self.sent.lock().unwrap().push((member, request.kind()));
            let header = Header {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: ClusterId(7),
                epoch: 1,
                request_id: 1,
            };
            match self.units[member]
                .handle(header, Request::LogUnit(request))
                .await
            {
                Response::LogUnit(answer) => Ok(answer),
                Response::Error(e) => Err(Ok(e)),
                other => panic!("{other:?}"),
            }
        }

        fn is_corrupt(error: &Self::Error) -> bool {
            matches!(error, Ok(e) if e.kind == ServerErrorKind::Corrupt)
        }

        fn is_invalid(error: &Self::Error) -> bool {
            matches!(error, Ok(e) if e.kind == ServerErrorKind::InvalidRequest)
        }

        fn failed(&self, failure: Failure) -> Self::Error {
            Err(failure)
        }
    }

    fn entry(payload: &str) -> Entry {
        Entry {
            id: None,
            streams: vec![],
            payload: payload.as_bytes().to_vec(),
        }
    }

    fn data(payload: &str) -> Stored {
        Stored::Data(entry(payload))
    }

    /// Every unit holds `value` at address 3.
    fn holding(value: &Stored) -> Units {
        let units = Units::new(3);
        for s in &units.stores {
            s.put(0, 3, value).unwrap();
        }
        units
    }

    #[tokio::test]
    async fn any_members_value_is_the_chains_value() {
        // The head's copy is corrupt, the middle lost its copy: the tail's
        // value is given to both, whatever the caller.
        for complete in [false, true] {
            let units = holding(&data("A"));
            units.stores[0].corrupt(3);
            units.stores[1].forget(3);
            let value = repair(&units, 3, complete).await.unwrap();
            assert_eq!(value, ReadOutcome::Data(entry("A")));
            assert_eq!(units.copies(3), ["A", "A", "A"]);
            assert_eq!(
                units.writes(),
                [(0, "log_unit.repair"), (1, "log_unit.write")],
                "nothing is decided; the head first"
            );
        }
    }

    #[tokio::test]
    async fn members_that_disagree_are_reported_and_nothing_is_written() {
        let units = holding(&data("A"));
        units.stores[0].corrupt(3);
        units.stores[2].forget(3);
        units.stores[2].put(0, 3, &Stored::Junk).unwrap();
        let failed = repair(&units, 3, true).await.unwrap_err();
        assert!(
            matches!(&failed, Err(Failure::Diverged { address: 3, detail })
                if detail.contains("u1 holds data") && detail.contains("u2 holds junk")),
            "{failed:?}"
        );
        assert_eq!(units.writes(), []);
        assert_eq!(units.copies(3), ["corrupt", "A", "Junk"]);
    }

    #[tokio::test]
    async fn a_corrupt_head_over_empty_members_is_decided_only_by_a_completing_caller() {
        let units = Units::new(3);
        units.stores[0].put(0, 3, &data("W")).unwrap();
        units.stores[0].corrupt(3);
        units.stores[1].corrupt(3);
        assert_eq!(
            repair(&units, 3, false).await.unwrap(),
            ReadOutcome::Unwritten
        );
        assert_eq!(units.writes(), [], "a reader decides nothing");
        assert_eq!(repair(&units, 3, true).await.unwrap(), ReadOutcome::Junk);
        // Decided at the first readable member below the head, then given
        // to the others head first.
        assert_eq!(
            units.writes(),
            [
                (2, "log_unit.fill"),
                (0, "log_unit.repair"),
                (1, "log_unit.repair")
            ]
        );
        assert_eq!(units.copies(3), ["Junk", "Junk", "Junk"]);
    }

    #[tokio::test]
    async fn a_readable_empty_head_decides_nothing() {
        let units = Units::new(3);
        units.stores[2].put(0, 3, &Stored::Junk).unwrap();
        units.stores[2].corrupt(3);
        assert_eq!(
            repair(&units, 3, true).await.unwrap(),
            ReadOutcome::Unwritten
        );
        assert_eq!(units.writes(), []);
        // A filler decides it at the head, and the repair of the corrupt
        // tail follows from its write there.
        assert_eq!(fill(&units, 3).await.unwrap(), ReadOutcome::Junk);
        assert_eq!(units.copies(3), ["Junk", "Junk", "Junk"]);
    }

    #[tokio::test]
    async fn a_chain_with_no_good_copy_is_reported() {
        let units = holding(&data("A"));
        for s in &units.stores {
            s.corrupt(3);
        }
        let failed = repair(&units, 3, true).await.unwrap_err();
        assert!(
            matches!(
                failed,
                Err(Failure::AllCorrupt {
                    address: 3,
                    members: 3
                })
            ),
            "{failed:?}"
        );
        assert_eq!(units.writes(), []);
    }
}
