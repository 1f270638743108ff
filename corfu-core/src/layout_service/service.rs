//! The layout server role: the [`Acceptor`] behind a mutex, its state
//! persisted (atomically, with `fsync`) before any answer that changed it
//! leaves the node. `GetLayout` is answered at once; Paxos messages run on
//! the blocking pool because they may write the state file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::acceptor::{Acceptor, AcceptorState};
use crate::logunit::StoreError;
use crate::transport::Service;
use crate::wire::frame::{encode_frame, FrameDecoder};
use crate::wire::layout::LayoutRequest;
use crate::wire::{Header, Request, Response, ServerErrorKind};

const STATE_FILE: &str = "acceptor.state";
const STATE_BYTES_MAX: u32 = 64 << 20;

/// The layout server role over a durable acceptor.
pub struct LayoutServerService {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    acceptor: Mutex<Acceptor>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

impl LayoutServerService {
    /// Opens (or creates) the acceptor state in `dir`.
    pub fn open(dir: &Path) -> Result<LayoutServerService, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join(STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let mut decoder = FrameDecoder::new(STATE_BYTES_MAX);
                decoder.extend(&bytes);
                let state = decoder
                    .next_frame::<AcceptorState>()
                    .map_err(|e| StoreError::Recovery(format!("{}: {e}", path.display())))?
                    .ok_or_else(|| {
                        StoreError::Recovery(format!("{}: truncated", path.display()))
                    })?;
                decoder
                    .finish()
                    .map_err(|e| StoreError::Recovery(format!("{}: {e}", path.display())))?;
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AcceptorState::default(),
            Err(e) => return Err(io(format!("read {}", path.display()))(e)),
        };
        Ok(LayoutServerService {
            inner: Arc::new(Inner {
                path,
                acceptor: Mutex::new(Acceptor::from_state(state)),
            }),
        })
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Acceptor> {
        self.acceptor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a request and persists the state before returning the answer.
    fn apply(&self, request: LayoutRequest) -> Response {
        let mut acceptor = self.lock();
        let before = acceptor.clone();
        let outcome = acceptor.handle(request);
        if outcome.changed {
            let persisted = encode_frame(&acceptor.snapshot(), STATE_BYTES_MAX)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    crate::node::write_durably(&self.path, &bytes).map_err(|e| e.to_string())
                });
            if let Err(e) = persisted {
                // Not durable: forget the change, answer nothing promised.
                *acceptor = before;
                tracing::error!(path = %self.path.display(), error = %e, "cannot persist the acceptor state");
                return Response::error(
                    ServerErrorKind::Internal,
                    format!("cannot persist acceptor state: {e}"),
                );
            }
        }
        outcome.response
    }
}

#[async_trait::async_trait]
impl Service for LayoutServerService {
    async fn handle(&self, _header: Header, body: Request) -> Response {
        let Request::Layout(request) = body else {
            return Response::error(ServerErrorKind::Internal, "not a layout request");
        };
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || inner.apply(request)).await {
            Ok(answer) => answer,
            Err(e) => Response::error(ServerErrorKind::Internal, format!("acceptor task: {e}")),
        }
    }

    #[allow(clippy::result_large_err)]
    fn handle_now(&self, _header: &Header, body: Request) -> Result<Response, Request> {
        match body {
            Request::Layout(request @ (LayoutRequest::GetLayout | LayoutRequest::Epochs)) => {
                Ok(self.inner.lock().handle(request).response)
            }
            other => Err(other),
        }
    }
}
