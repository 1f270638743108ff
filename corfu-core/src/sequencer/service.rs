//! The sequencer role as a [`Service`]: the pure [`Sequencer`] behind a
//! mutex. Every request is answered at once (no I/O), so the server never
//! allocates a future for it.

use std::sync::Mutex;

use super::Sequencer;
use crate::transport::Service;
use crate::wire::{Header, Request, Response, ServerErrorKind};

/// The sequencer role.
pub struct SequencerService {
    core: Mutex<Sequencer>,
}

impl SequencerService {
    /// Serves `core`.
    pub fn new(core: Sequencer) -> SequencerService {
        SequencerService {
            core: Mutex::new(core),
        }
    }

    fn answer(&self, header: &Header, body: Request) -> Response {
        match body {
            Request::Sequencer(req) => self
                .core
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .handle(header.epoch, req),
            _ => Response::error(ServerErrorKind::Internal, "not a sequencer request"),
        }
    }
}

#[async_trait::async_trait]
impl Service for SequencerService {
    async fn handle(&self, header: Header, body: Request) -> Response {
        self.answer(&header, body)
    }

    #[allow(clippy::result_large_err)]
    fn handle_now(&self, header: &Header, body: Request) -> Result<Response, Request> {
        Ok(self.answer(header, body))
    }
}
