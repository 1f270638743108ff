//! The wire protocol: every message a node, a client or a peer exchanges.
//!
//! Messages are rkyv 0.8 archives. A request is a [`RequestFrame`]: a
//! [`Header`] (protocol version, cluster id, epoch, request id) and a
//! [`Request`] body addressed to one role. A response is a
//! [`ResponseFrame`] carrying the request id it answers, so many requests
//! can be pipelined on one stream and answered out of order.
//!
//! Framing ([`frame`]) is a little-endian `u32` length followed by the
//! archive; every incoming archive is validated with `rkyv::access`
//! (bytecheck) from an aligned buffer before anything reads it.
//!
//! Corfu outcomes (`Overwritten`, `Unwritten`, `Trimmed`, `WrongEpoch`,
//! `Abort`) are ordinary response values the caller decides on; they are
//! kept apart from [`ServerError`], which reports that a request could not
//! be served at all.

// rkyv's derive generates resolver enums whose struct-variant fields carry
// no docs; every item written here is documented by hand.
#![allow(missing_docs)]

pub mod frame;
pub mod layout;
pub mod logunit;
pub mod sequencer;

use rkyv::{Archive, Deserialize, Serialize};

pub use frame::{FrameDecoder, FrameError};
pub use layout::{LayoutRequest, LayoutResponse};
pub use logunit::{LogUnitRequest, LogUnitResponse};
pub use sequencer::{SequencerRequest, SequencerResponse};

use crate::types::{ClusterId, Epoch, Role};

/// Version of this wire protocol. A node refuses requests of another version
/// (and the TLS handshake already refuses clients whose ALPN differs).
pub const PROTOCOL_VERSION: u16 = 3;

/// ALPN protocol name negotiated in the TLS handshake; it carries the
/// protocol version so mismatched peers fail at connect time with a clear
/// error instead of sending archives the other side cannot read.
pub const ALPN: &[u8] = b"corfu/3";

/// Fields every request carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version of the sender ([`PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// Cluster the sender believes it talks to. [`ClusterId::ANY`] is accepted
    /// only by `Ping` and `Info`, so a tool can discover a node's cluster.
    pub cluster_id: ClusterId,
    /// Epoch of the sender's layout; roles reject requests from stale epochs.
    pub epoch: Epoch,
    /// Identifies the request on its stream (each stream numbers its own
    /// requests); echoed in the response.
    pub request_id: u64,
}

/// A request as sent on the wire.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RequestFrame {
    /// Version, cluster, epoch and request id.
    pub header: Header,
    /// What is asked, addressed to one role.
    pub body: Request,
}

/// A response as sent on the wire.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ResponseFrame {
    /// The id of the request this answers.
    pub request_id: u64,
    /// The answer.
    pub body: Response,
}

/// A request body, by role.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Request {
    /// Liveness check; answered by every node whatever its roles.
    Ping,
    /// Asks a node who it is ([`NodeInfo`]).
    Info,
    /// A request to the layout server role (the Paxos configurator).
    Layout(LayoutRequest),
    /// A request to the sequencer role.
    Sequencer(SequencerRequest),
    /// A request to the log unit role.
    LogUnit(LogUnitRequest),
}

impl Request {
    /// The role that serves this request, if it is not a node-level request.
    pub fn role(&self) -> Option<Role> {
        match self {
            Request::Ping | Request::Info => None,
            Request::Layout(_) => Some(Role::LayoutServer),
            Request::Sequencer(_) => Some(Role::Sequencer),
            Request::LogUnit(_) => Some(Role::LogUnit),
        }
    }

    /// Short name of the request kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Info => "info",
            Request::Layout(r) => r.kind(),
            Request::Sequencer(r) => r.kind(),
            Request::LogUnit(r) => r.kind(),
        }
    }
}

/// A response body.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Response {
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Info`.
    Info(Box<NodeInfo>),
    /// The request's epoch is not the role's current epoch: the sender must
    /// fetch the layout of epoch `current` (or newer) and retry.
    WrongEpoch {
        /// The epoch the role is sealed at.
        current: Epoch,
    },
    /// Answer from the layout server role.
    Layout(LayoutResponse),
    /// Answer from the sequencer role.
    Sequencer(SequencerResponse),
    /// Answer from the log unit role.
    LogUnit(LogUnitResponse),
    /// The request could not be served (see [`ServerErrorKind`]).
    Error(ServerError),
}

/// Who a node is, as answered to `Info`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's configured id.
    pub node_id: String,
    /// The cluster the node belongs to.
    pub cluster_id: ClusterId,
    /// The roles the node hosts.
    pub roles: Vec<Role>,
    /// The node's wire protocol version.
    pub protocol_version: u16,
    /// The node's software version (the crate version).
    pub software_version: String,
}

/// Why a request could not be served.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The class of failure, for programs.
    pub kind: ServerErrorKind,
    /// A one-line explanation, for people.
    pub message: String,
}

/// Classes of [`ServerError`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerErrorKind {
    /// The request names another cluster than the node's.
    WrongCluster,
    /// The request's protocol version differs from the node's.
    ProtocolVersion,
    /// The node does not host the role the request is addressed to.
    RoleNotHosted,
    /// The role is hosted but cannot serve this request (yet).
    Unsupported,
    /// The request is well-formed but its arguments are invalid.
    InvalidRequest,
    /// The node is overloaded or shutting down; retry later or elsewhere.
    Unavailable,
    /// The node failed internally (for example a storage error).
    Internal,
    /// A log unit's copy of the address read failed its checksum (or the
    /// unit cannot vouch for it since a corrupt record was found at
    /// start-up): the unit serves no value for it until a good copy is
    /// given to it with `LogUnitRequest::Repair`. Other members of the
    /// address's chain may hold a good copy.
    Corrupt,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl Response {
    /// Builds a [`Response::Error`].
    pub fn error(kind: ServerErrorKind, message: impl Into<String>) -> Response {
        Response::Error(ServerError {
            kind,
            message: message.into(),
        })
    }
}

/// Encodes one frame with the default frame limit.
pub fn encode_frame_default<T: frame::WireMessage>(value: &T) -> Result<Vec<u8>, FrameError> {
    frame::encode_frame(value, frame::FRAME_BYTES_MAX_DEFAULT)
}
