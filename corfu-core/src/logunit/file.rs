//! The file [`LogStore`]: append-only segment files of checksummed records
//! and an in-memory index rebuilt at start-up.
//!
//! - Records (see [`super::record`]) are appended to the active segment in
//!   arrival order; a segment rolls over at `segment_bytes_max`.
//! - The index ([`super::index`]) maps an address to `(segment, offset)`
//!   packed in 8 bytes, with junk flagged in the same word so junk reads
//!   need no I/O.
//! - Durability: with `sync = always` a write's ticket is durable only after
//!   `fdatasync`, done by one syncer thread for every write that arrived
//!   meanwhile (group commit); `batch` syncs every `batch_sync_interval_ms`
//!   and acknowledges at once; `never` leaves it to the OS.
//! - Fail-stop: if a sync of a segment fails (the syncer's or a rollover's),
//!   the store stops for good (see [`LogStore`]): every call answers
//!   [`StoreError::Stopped`] until the process restarts, because records
//!   appended and indexed since the last good sync may not be on disk, and
//!   a later sync would not say so (the kernel reports a writeback error to
//!   one `fdatasync` only).
//! - Start-up scans every segment: a torn or corrupt tail of the last
//!   segment is cut off; a corrupt record elsewhere is logged and counted,
//!   and the scan resumes at the next record. Nothing that fails its
//!   checksum is ever served.
//! - Corrupt copies: the address a corrupt record held (the corrected
//!   address when only its address field was damaged, else its address
//!   field as a hint, unless the unit holds a good record of that address)
//!   answers [`StoreError::Corrupt`] to reads and [`Put::Corrupt`] to
//!   writes until [`LogStore::repair`] gives it the chain's value, appended
//!   as a repair record (see [`super::record`]). A record found corrupt by
//!   a read or a write is marked the same way. Recovery keeps the first
//!   valid record of an address, except that a valid repair record
//!   replaces any earlier record of its address: a copy found corrupt by a
//!   read error that does not recur (the record on disk is intact) and
//!   then repaired keeps the repaired value after a restart.
//! - The sealed epoch and the trim mark live in `unit.meta`, written
//!   atomically (temp file, fsync, rename). Prefix trim deletes whole
//!   segment files whose addresses all lie below the mark.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::index::AddressIndex;
use super::record::{self, RecordError, Stored, HEADER_BYTES, MAGIC};
use super::store::{LogStore, Put, ReadBudget, StoreError, Ticket};
use crate::types::{Address, Epoch, StreamId};
use crate::wire::logunit::{ReadOutcome, Tails};

/// When a write is acknowledged relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Acknowledge only after `fdatasync` (group commit).
    #[default]
    Always,
    /// Acknowledge at once; sync every `batch_sync_interval_ms`.
    Batch,
    /// Acknowledge at once; never sync explicitly.
    Never,
}

/// Settings of a log unit and its file store (the `[log_unit]` table of a
/// node config; the directory is `data_dir/log`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogUnitConfig {
    /// Durability policy.
    pub sync: SyncPolicy,
    /// A segment file rolls over once it holds this many bytes.
    pub segment_bytes_max: u64,
    /// With `sync = batch`, how often to sync.
    pub batch_sync_interval_ms: u64,
    /// Largest record body (stream headers and payload) accepted.
    pub entry_bytes_max: u32,
    /// Addresses answered by one range or batch read at most; a longer
    /// range is answered in part and the reader continues after it.
    pub read_batch_max: u32,
}

impl Default for LogUnitConfig {
    fn default() -> Self {
        LogUnitConfig {
            sync: SyncPolicy::Always,
            segment_bytes_max: 64 << 20,
            batch_sync_interval_ms: 10,
            entry_bytes_max: 8 << 20,
            read_batch_max: 4096,
        }
    }
}

impl LogUnitConfig {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes_max < 4096 || self.segment_bytes_max > (1 << 40) {
            return Err(
                "field `log_unit.segment_bytes_max`: must be between 4 KiB and 1 TiB".into(),
            );
        }
        if self.batch_sync_interval_ms == 0 {
            return Err("field `log_unit.batch_sync_interval_ms`: must be greater than 0".into());
        }
        if (self.entry_bytes_max as usize) < record::BODY_BYTES_MIN {
            return Err("field `log_unit.entry_bytes_max`: too small".into());
        }
        if self.read_batch_max == 0 {
            return Err("field `log_unit.read_batch_max`: must be greater than 0".into());
        }
        Ok(())
    }
}

const META_FILE: &str = "unit.meta";
const OFFSET_BITS: u32 = 40;
const SEGMENT_BITS: u32 = 23;
const JUNK_FLAG: u64 = 1 << 63;

/// Packs an index location: junk flag, segment id, offset.
fn pack(segment: u32, offset: u64, junk: bool) -> u64 {
    debug_assert!(u64::from(segment) < (1 << SEGMENT_BITS));
    debug_assert!(offset < (1 << OFFSET_BITS));
    (if junk { JUNK_FLAG } else { 0 }) | (u64::from(segment) << OFFSET_BITS) | offset
}

fn unpack(loc: u64) -> (u32, u64, bool) {
    let junk = loc & JUNK_FLAG != 0;
    let segment = ((loc >> OFFSET_BITS) & ((1 << SEGMENT_BITS) - 1)) as u32;
    (segment, loc & ((1 << OFFSET_BITS) - 1), junk)
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("seg-{id:08}.log"))
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

struct Segment {
    file: Arc<File>,
    /// The highest address stored in the segment, if any.
    max_address: Option<Address>,
}

struct State {
    epoch: Epoch,
    trim_mark: Address,
    index: AddressIndex,
    corrupt: FastMap<Address, String>,
    global: Option<Address>,
    streams: FastMap<StreamId, Address>,
    segments: BTreeMap<u32, Segment>,
    active: u32,
    active_len: u64,
    /// Bytes appended since the store was opened: the ticket sequence.
    appended: u64,
    scratch: Vec<u8>,
}

struct SyncWake {
    requested: Ticket,
    shutdown: bool,
}

struct Inner {
    dir: PathBuf,
    config: LogUnitConfig,
    state: Mutex<State>,
    durable: watch::Sender<Ticket>,
    wake: Mutex<SyncWake>,
    wake_cv: Condvar,
    /// Set once, under the state lock, when a sync fails: the message every
    /// call answers from then on (fail-stop).
    stopped: OnceLock<String>,
    /// `fdatasync` calls made by the syncer (group commit shares them).
    syncs: std::sync::atomic::AtomicU64,
    /// Test seam: while set, every segment sync fails (see
    /// [`Inner::sync_data`]).
    #[cfg(test)]
    fail_syncs: std::sync::atomic::AtomicBool,
    /// Test seam: this many directory syncs of a rollover fail.
    #[cfg(test)]
    fail_dir_syncs: std::sync::atomic::AtomicU32,
}

/// What start-up found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments: usize,
    /// Valid records indexed.
    pub records: u64,
    /// Bytes of torn or corrupt tail cut off the last segment.
    pub truncated_bytes: u64,
    /// Corrupt records found elsewhere (each one's address answers
    /// `Corrupt` until repaired, as far as it can be told).
    pub corrupt_records: u64,
    /// Of those, records whose address cannot be told: the address field
    /// is damaged beyond correction, or names an address the unit holds a
    /// good copy of. The unit answers `Unwritten` for the true address (a
    /// copy missing here; see ARCHITECTURE.md, "Log unit").
    pub corrupt_unknown: u64,
}

/// A durable store in one directory.
pub struct FileStore {
    inner: Arc<Inner>,
    syncer: Option<JoinHandle<()>>,
    report: RecoveryReport,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens (or creates) the store in `dir`, rebuilding the index from the
    /// segment files.
    pub fn open(dir: &Path, config: LogUnitConfig) -> Result<FileStore, StoreError> {
        config.validate().map_err(StoreError::Invalid)?;
        fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let (epoch, trim_mark) = read_meta(dir)?;
        let mut state = State {
            epoch,
            trim_mark,
            index: AddressIndex::new(),
            corrupt: FastMap::default(),
            global: None,
            streams: FastMap::default(),
            segments: BTreeMap::new(),
            active: 0,
            active_len: 0,
            appended: 0,
            scratch: Vec::new(),
        };
        let report = recover(dir, &config, &mut state)?;
        if state.segments.is_empty() {
            create_segment(dir, &mut state, 1, &sync_dir)?;
        }
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            config,
            state: Mutex::new(state),
            durable: watch::channel(0).0,
            wake: Mutex::new(SyncWake {
                requested: 0,
                shutdown: false,
            }),
            wake_cv: Condvar::new(),
            stopped: OnceLock::new(),
            syncs: std::sync::atomic::AtomicU64::new(0),
            #[cfg(test)]
            fail_syncs: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            fail_dir_syncs: std::sync::atomic::AtomicU32::new(0),
        });
        let syncer = match inner.config.sync {
            SyncPolicy::Never => None,
            policy => {
                let inner = inner.clone();
                Some(
                    std::thread::Builder::new()
                        .name("corfu-syncer".into())
                        .spawn(move || syncer(inner, policy))
                        .map_err(io("spawn the syncer thread"))?,
                )
            }
        };
        Ok(FileStore {
            inner,
            syncer,
            report,
        })
    }

    /// What start-up found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Entries in the index and the index's memory, in bytes.
    pub fn index_stats(&self) -> (usize, usize) {
        let state = self.inner.lock();
        (state.index.len(), state.index.memory_bytes())
    }

    /// `fdatasync` calls the syncer has made since the store was opened.
    pub fn sync_count(&self) -> u64 {
        self.inner.syncs.load(Ordering::Relaxed)
    }

    /// The store's settings.
    pub fn config(&self) -> &LogUnitConfig {
        &self.inner.config
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Test seam: from now on every segment sync (the syncer's and a
    /// rollover's) fails as a failed `fdatasync` would, so tests can check
    /// what the store and the unit answer after one.
    #[cfg(test)]
    pub(crate) fn fail_syncs(&self) {
        self.inner.fail_syncs.store(true, Ordering::Release);
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        if let Ok(mut wake) = self.inner.wake.lock() {
            wake.shutdown = true;
        }
        self.inner.wake_cv.notify_all();
        if let Some(handle) = self.syncer.take() {
            let _ = handle.join();
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`StoreError::Stopped`] if the store has fail-stopped.
    fn check_stopped(&self) -> Result<(), StoreError> {
        match self.stopped.get() {
            Some(message) => Err(StoreError::Stopped(message.clone())),
            None => Ok(()),
        }
    }

    /// Fail-stops the store after a failed sync of `path`; returns the
    /// error every call answers from now on. Called with the state lock
    /// held (`_held`), so that no write or read is admitted after it, and
    /// the syncer, which publishes durability under the lock too, cannot
    /// publish a ticket once it is done.
    fn stop(&self, _held: &State, path: &Path, error: &std::io::Error) -> StoreError {
        let mut first = false;
        let message = self.stopped.get_or_init(|| {
            first = true;
            format!(
                "log unit stopped after a failed fdatasync of {}: {error}; restart the node",
                path.display()
            )
        });
        if first {
            tracing::error!("{message}");
        }
        // Writes waiting for their ticket wake up and find the store
        // stopped: their outcome is unknown, and they are told so.
        self.durable.send_replace(Ticket::MAX);
        StoreError::Stopped(message.clone())
    }

    /// `fdatasync` of a segment file: every sync of appended records goes
    /// through here, which is where tests inject a failure
    /// ([`FileStore::fail_syncs`]).
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail_syncs.load(Ordering::Acquire) {
            return Err(std::io::Error::other("injected fdatasync failure"));
        }
        file.sync_data()
    }

    fn request_sync(&self, ticket: Ticket) {
        let mut wake = self.wake.lock().unwrap_or_else(|p| p.into_inner());
        if ticket > wake.requested {
            wake.requested = ticket;
            self.wake_cv.notify_one();
        }
    }

    fn write_meta(&self, epoch: Epoch, trim_mark: Address) -> Result<(), StoreError> {
        let text = format!("epoch={epoch}\ntrim_mark={trim_mark}\n");
        crate::node::write_durably(&self.dir.join(META_FILE), text.as_bytes())
            .map_err(io(format!("write {}", self.dir.join(META_FILE).display())))
    }

    /// Records that the copy of `address` at index location `loc` failed
    /// its checksum when read: from now on the address answers `Corrupt`
    /// and takes a repair. Nothing changes if the index moved on meanwhile
    /// (a repair landed).
    fn mark_corrupt(&self, address: Address, loc: u64, reason: &str) {
        let mut state = self.lock();
        if state.index.get(address) == Some(loc) {
            mark_corrupt_locked(&mut state, address, reason);
        }
    }

    /// Writes `items`; with `repair`, the one item replaces a corrupt copy
    /// (see [`LogStore::repair`]).
    fn put_batch(
        &self,
        epoch: Epoch,
        items: &[(Address, &Stored)],
        repair: bool,
    ) -> Result<Vec<Put>, StoreError> {
        // A stopped store answers that rather than judging the request (the
        // check that counts is the one under the lock, below).
        self.check_stopped()?;
        let body_max = self.config.entry_bytes_max as usize;
        for (_, value) in items {
            if record::encoded_len(value) - HEADER_BYTES > body_max {
                return Err(StoreError::Invalid(format!(
                    "entry of {} bytes exceeds entry_bytes_max ({body_max})",
                    record::encoded_len(value) - HEADER_BYTES
                )));
            }
            if let Stored::Data(e) = value {
                if e.streams.len() > usize::from(u16::MAX) {
                    return Err(StoreError::Invalid("too many streams in one entry".into()));
                }
            }
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        self.check_stopped()?;
        if epoch < state.epoch {
            return Ok(vec![Put::WrongEpoch(state.epoch); items.len()]);
        }
        let mut outcomes = Vec::with_capacity(items.len());
        // Offsets (within this write) of the records to index.
        let mut fresh: Vec<(Address, u64, usize)> = Vec::new();
        let mut in_batch: FastMap<Address, usize> = FastMap::default();
        state.scratch.clear();
        for (i, (address, value)) in items.iter().enumerate() {
            if *address < state.trim_mark {
                outcomes.push(Put::Trimmed);
                continue;
            }
            if let Some(&first) = in_batch.get(address) {
                outcomes.push(Put::Exists(items[first].1.clone()));
                continue;
            }
            // A corrupt copy takes only a repair; a good one is kept
            // (write-once); an unwritten address is never repaired.
            let corrupt = if state.corrupt.contains_key(address) {
                true
            } else if let Some(loc) = state.index.get(*address) {
                match self.read_locked(state, *address) {
                    Ok(existing) => {
                        outcomes.push(Put::Exists(existing));
                        continue;
                    }
                    Err(StoreError::Corrupt { reason, .. }) => {
                        tracing::error!(address, %reason, "corrupt record found by a write");
                        if state.index.get(*address) == Some(loc) {
                            mark_corrupt_locked(state, *address, &reason);
                        }
                        true
                    }
                    Err(e) => return Err(e),
                }
            } else {
                false
            };
            if corrupt && !repair {
                outcomes.push(Put::Corrupt);
                continue;
            }
            if !corrupt && repair {
                return Err(super::memory::not_corrupt(*address));
            }
            in_batch.insert(*address, i);
            fresh.push((*address, state.scratch.len() as u64, i));
            if repair {
                record::encode_repair(*address, value, &mut state.scratch);
            } else {
                record::encode(*address, value, &mut state.scratch);
            }
            outcomes.push(Put::Written(0));
        }
        if fresh.is_empty() {
            return Ok(outcomes);
        }
        let bytes = state.scratch.len() as u64;
        if state.active_len > 0 && state.active_len + bytes > self.config.segment_bytes_max {
            self.roll(state)?;
        }
        let base = state.active_len;
        let file = state.segments[&state.active].file.clone();
        file.write_all_at(&state.scratch, base)
            .map_err(io(format!("append to segment {}", state.active)))?;
        let active = state.active;
        let mut max_address = state.segments[&active].max_address;
        for (address, offset, i) in &fresh {
            let value = items[*i].1;
            let junk = matches!(value, Stored::Junk);
            state
                .index
                .insert(*address, pack(active, base + offset, junk));
            if state.corrupt.remove(address).is_some() {
                tracing::info!(address, "corrupt copy repaired");
            }
            state.global = Some(state.global.map_or(*address, |g| g.max(*address)));
            max_address = Some(max_address.map_or(*address, |m| m.max(*address)));
            if let Stored::Data(entry) = value {
                for h in &entry.streams {
                    let tail = state.streams.entry(h.stream).or_insert(*address);
                    *tail = (*tail).max(*address);
                }
            }
        }
        if let Some(segment) = state.segments.get_mut(&active) {
            segment.max_address = max_address;
        }
        state.active_len += bytes;
        state.appended += bytes;
        let ticket = match self.config.sync {
            SyncPolicy::Always => state.appended,
            SyncPolicy::Batch | SyncPolicy::Never => 0,
        };
        drop(guard);
        if ticket > 0 {
            for outcome in &mut outcomes {
                if let Put::Written(t) = outcome {
                    *t = ticket;
                }
            }
            self.request_sync(ticket);
        }
        Ok(outcomes)
    }

    /// Closes the active segment (synced, so every earlier ticket is
    /// durable in it) and opens the next one.
    fn roll(&self, state: &mut State) -> Result<(), StoreError> {
        if self.config.sync != SyncPolicy::Never {
            let active = state.active;
            if let Err(e) = self.sync_data(&state.segments[&active].file) {
                // Records of the segment may be waiting for their sync, or
                // (`batch`) acknowledged already: none of them is known to
                // be on disk, and retrying the sync would not tell.
                return Err(self.stop(state, &segment_path(&self.dir, active), &e));
            }
        }
        let next = state.active + 1;
        if u64::from(next) >= 1 << SEGMENT_BITS {
            return Err(StoreError::Failed("segment ids exhausted".into()));
        }
        create_segment(&self.dir, state, next, &|dir| {
            #[cfg(test)]
            if self
                .fail_dir_syncs
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(io(format!("sync directory {}", dir.display()))(
                    std::io::Error::other("injected directory sync failure"),
                ));
            }
            sync_dir(dir)
        })
    }

    /// What an address holds, read while holding the lock (for `Exists`).
    fn read_locked(&self, state: &State, address: Address) -> Result<Stored, StoreError> {
        if let Some(reason) = state.corrupt.get(&address) {
            return Err(StoreError::Corrupt {
                address,
                reason: reason.clone(),
            });
        }
        let loc = state
            .index
            .get(address)
            .ok_or_else(|| StoreError::Corrupt {
                address,
                reason: "index entry vanished".into(),
            })?;
        let (segment, offset, junk) = unpack(loc);
        if junk {
            return Ok(Stored::Junk);
        }
        let file = state.segments[&segment].file.clone();
        read_record(&file, offset, address, self.config.entry_bytes_max)
    }
}

/// Makes `address` answer `Corrupt` (and take a repair) instead of what the
/// index says.
fn mark_corrupt_locked(state: &mut State, address: Address, reason: &str) {
    state.index.remove(address);
    state.corrupt.insert(address, reason.to_string());
}

/// Bytes read by the first `pread` of a record: most records fit, so a
/// read costs one system call.
const FIRST_READ_BYTES: usize = 512;

/// Reads and checks the record of `address` at `offset`.
fn read_record(
    file: &File,
    offset: u64,
    address: Address,
    body_max: u32,
) -> Result<Stored, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { address, reason };
    let read_err = || io(format!("read address {address}"));
    let mut bytes = vec![0u8; FIRST_READ_BYTES];
    let mut have = 0;
    while have < HEADER_BYTES {
        match file.read_at(&mut bytes[have..], offset + have as u64) {
            Ok(0) => return Err(corrupt("record cut short by the end of its segment".into())),
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err()(e)),
        }
    }
    let total = record::record_len(&bytes[..have], body_max).map_err(|e| corrupt(e.to_string()))?;
    if total > have {
        bytes.resize(total, 0);
        file.read_exact_at(&mut bytes[have..], offset + have as u64)
            .map_err(read_err())?;
    }
    let (rec, _) = record::decode(&bytes[..total], body_max).map_err(|e| corrupt(e.to_string()))?;
    if rec.address != address {
        return Err(corrupt(format!("record holds address {}", rec.address)));
    }
    Ok(rec.value)
}

/// Takes `outcomes` into `budget` in order; the index of the first that
/// does not fit, if any.
fn over_budget(budget: &mut ReadBudget, outcomes: &[ReadOutcome]) -> Option<usize> {
    outcomes.iter().position(|o| !budget.take(o.wire_bytes()))
}

/// Records read by one `pread` in `get_many` span at most this many bytes.
const SPAN_BYTES_MAX: u64 = 1 << 20;

/// Reads into `buf` from `offset` until it is full or the file ends;
/// returns the bytes read.
fn read_span(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut have = 0;
    while have < buf.len() {
        match file.read_at(&mut buf[have..], offset + have as u64) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(have)
}

/// Decodes the record of `address` at `at` in `span` if it lies wholly
/// inside; `None` if it runs past the span's end.
fn record_in_span(
    span: &[u8],
    at: usize,
    address: Address,
    body_max: u32,
) -> Option<Result<Stored, StoreError>> {
    let corrupt = |reason: String| StoreError::Corrupt { address, reason };
    let bytes = span.get(at..)?;
    if bytes.len() < HEADER_BYTES {
        return None;
    }
    let total = match record::record_len(bytes, body_max) {
        Ok(total) => total,
        Err(e) => return Some(Err(corrupt(e.to_string()))),
    };
    let bytes = bytes.get(..total)?;
    Some(match record::decode(bytes, body_max) {
        Ok((rec, _)) if rec.address == address => Ok(rec.value),
        Ok((rec, _)) => Err(corrupt(format!("record holds address {}", rec.address))),
        Err(e) => Err(corrupt(e.to_string())),
    })
}

/// Creates segment `id` (above every segment in use) and makes it the
/// active one once `sync_dir` made its name durable. A file of that name
/// can only be left by an earlier attempt whose directory sync failed (the
/// segment never became active, so nothing was appended to it): it is
/// reused if empty. One holding data is refused, never overwritten.
fn create_segment(
    dir: &Path,
    state: &mut State,
    id: u32,
    sync_dir: &dyn Fn(&Path) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let path = segment_path(dir, id);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(format!("create {}", path.display())))?;
    let len = file
        .metadata()
        .map_err(io(format!("inspect {}", path.display())))?
        .len();
    if len > 0 {
        return Err(StoreError::Failed(format!(
            "{} exists and holds {len} bytes although it is not in use; move it away",
            path.display()
        )));
    }
    sync_dir(dir)?;
    state.segments.insert(
        id,
        Segment {
            file: Arc::new(file),
            max_address: None,
        },
    );
    state.active = id;
    state.active_len = 0;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("sync directory {}", dir.display())))
}

fn read_meta(dir: &Path) -> Result<(Epoch, Address), StoreError> {
    let path = dir.join(META_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io(format!("read {}", path.display()))(e)),
    };
    let mut epoch = None;
    let mut trim = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("epoch", v)) => epoch = v.trim().parse().ok(),
            Some(("trim_mark", v)) => trim = v.trim().parse().ok(),
            _ => {}
        }
    }
    match (epoch, trim) {
        (Some(e), Some(t)) => Ok((e, t)),
        _ => Err(StoreError::Recovery(format!(
            "{}: unreadable (expected epoch= and trim_mark= lines)",
            path.display()
        ))),
    }
}

/// The first offset at or after `from` where a valid record starts.
fn next_valid(bytes: &[u8], from: usize, body_max: u32) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while at + HEADER_BYTES <= bytes.len() {
        let rest = &bytes[at..];
        let hit = rest.windows(4).position(|w| w == magic)?;
        at += hit;
        if record::scan(&bytes[at..], body_max, |_| {}).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Rebuilds the index from the segment files.
fn recover(
    dir: &Path,
    config: &LogUnitConfig,
    state: &mut State,
) -> Result<RecoveryReport, StoreError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(format!("list {}", dir.display())))? {
        let entry = entry.map_err(io(format!("list {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"))
        {
            match id.parse::<u32>() {
                Ok(id) if id > 0 && u64::from(id) < 1 << SEGMENT_BITS => ids.push(id),
                _ => tracing::warn!(file = %name, "ignoring a file that looks like a segment"),
            }
        }
    }
    ids.sort_unstable();
    let mut report = RecoveryReport {
        segments: ids.len(),
        ..Default::default()
    };
    let body_max = config.entry_bytes_max;
    // Addresses corrupt records may have held: (address, whether it is only
    // a hint, why).
    let mut suspects: Vec<(Address, Option<u64>, String)> = Vec::new();
    for (n, &id) in ids.iter().enumerate() {
        let last = n + 1 == ids.len();
        let path = segment_path(dir, id);
        let bytes = fs::read(&path).map_err(io(format!("read {}", path.display())))?;
        let mut at = 0usize;
        let mut max_address: Option<Address> = None;
        let mut valid_len = bytes.len();
        while at < bytes.len() {
            let mut streams: Vec<StreamId> = Vec::new();
            match record::scan(&bytes[at..], body_max, |s| streams.push(s)) {
                Ok(record::Scanned {
                    address,
                    junk,
                    repair,
                    len: total,
                }) => {
                    report.records += 1;
                    if address >= state.trim_mark {
                        let loc = pack(id, at as u64, junk);
                        if !state.index.contains(address) {
                            state.index.insert(address, loc);
                        } else if repair {
                            // The chain's value, written over a copy found
                            // corrupt (at recovery, or by a read or write
                            // whose error may not recur): it replaces the
                            // earlier record.
                            state.index.remove(address);
                            state.index.insert(address, loc);
                        } else {
                            tracing::warn!(
                                segment = id,
                                offset = at,
                                address,
                                "second record for an address; keeping the first"
                            );
                        }
                    }
                    state.global = Some(state.global.map_or(address, |g| g.max(address)));
                    max_address = Some(max_address.map_or(address, |m| m.max(address)));
                    for s in streams {
                        let tail = state.streams.entry(s).or_insert(address);
                        *tail = (*tail).max(address);
                    }
                    at += total;
                }
                Err(error) => {
                    match next_valid(&bytes, at + 1, body_max) {
                        None if last => {
                            tracing::warn!(segment = id, offset = at, bytes = bytes.len() - at, %error,
                            "cutting off the torn tail of the last segment");
                            report.truncated_bytes += (bytes.len() - at) as u64;
                            valid_len = at;
                            break;
                        }
                        next => {
                            let end = next.unwrap_or(bytes.len());
                            for (offset, address) in corrupt_records(&bytes[..end], at, body_max) {
                                report.corrupt_records += 1;
                                let reason = |how: &str| {
                                    format!(
                                        "the record at offset {offset} of segment {id} fails its \
                                     checksum ({how})"
                                    )
                                };
                                match address {
                                    Some(Suspect::Certain(address)) => {
                                        tracing::error!(segment = id, offset, address,
                                        "corrupt record whose address field alone was damaged; \
                                         its address answers corrupt until repaired");
                                        suspects.push((
                                            address,
                                            None,
                                            reason("its address field was damaged"),
                                        ));
                                    }
                                    Some(Suspect::Hint(address)) => {
                                        tracing::error!(
                                            segment = id,
                                            offset,
                                            address_hint = address,
                                            "corrupt record; the address it names answers corrupt \
                                         until repaired, unless the unit holds a good copy of it"
                                        );
                                        suspects.push((address, Some(report.corrupt_records), reason(
                                        "it names this address, which the checksum cannot confirm",
                                    )));
                                    }
                                    None => {
                                        report.corrupt_unknown += 1;
                                        tracing::error!(segment = id, offset, %error,
                                        "corrupt record whose address cannot be told; \
                                         it is never served");
                                    }
                                }
                            }
                            match next {
                                Some(next) => at = next,
                                None => break,
                            }
                        }
                    }
                }
            }
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(format!("open {}", path.display())))?;
        if valid_len < bytes.len() {
            file.set_len(valid_len as u64)
                .and_then(|_| file.sync_all())
                .map_err(io(format!("truncate {}", path.display())))?;
        }
        state.segments.insert(
            id,
            Segment {
                file: Arc::new(file),
                max_address,
            },
        );
        state.active = id;
        state.active_len = valid_len as u64;
    }
    // An address a corrupt record may have held answers `Corrupt` unless a
    // good record of it was found (before the corrupt one, or after it: a
    // repair). A hint names an address only the record's own, failed,
    // checksum vouches for: if the unit holds a good copy of that address
    // the hint was wrong, and the address is served as it is.
    for (address, hint, reason) in suspects {
        if address < state.trim_mark || state.index.contains(address) {
            if hint.is_some() && address >= state.trim_mark {
                report.corrupt_unknown += 1;
                tracing::error!(
                    address,
                    "a corrupt record names an address the unit holds a good copy of: \
                     its true address cannot be told"
                );
            }
            continue;
        }
        state.corrupt.entry(address).or_insert(reason);
    }
    Ok(report)
}

/// What a corrupt record tells about its address.
enum Suspect {
    /// Its address field alone was damaged: the corrected address.
    Certain(Address),
    /// Its address field as it reads, which the failed checksum cannot
    /// confirm.
    Hint(Address),
}

/// The corrupt records in `bytes[from..]`, which holds no valid record
/// (the next valid one starts at `bytes.len()` or later): each one's
/// offset and what it tells about its address. A record whose header is
/// sane is stepped over by its length, so two corrupt records in a row are
/// both found; after garbage the next record is looked for by its magic.
fn corrupt_records(bytes: &[u8], from: usize, body_max: u32) -> Vec<(usize, Option<Suspect>)> {
    let magic = MAGIC.to_le_bytes();
    let find_magic = |start: usize| {
        bytes
            .get(start..)
            .and_then(|rest| rest.windows(4).position(|w| w == magic))
            .map(|hit| start + hit)
    };
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let here = &bytes[at..];
        let whole = record::record_len(here, body_max)
            .ok()
            .filter(|total| *total <= here.len());
        let suspect = whole.and_then(|_| {
            if let Some(address) = record::corrected_address(here, body_max) {
                return Some(Suspect::Certain(address));
            }
            match record::scan(here, body_max, |_| {}) {
                // The checksum holds but the body makes no sense: the
                // address is as written.
                Err(RecordError::Malformed(_)) => record::address_field(here).map(Suspect::Certain),
                _ => record::address_field(here).map(Suspect::Hint),
            }
        });
        out.push((at, suspect));
        let next = match whole {
            Some(total) if here[total..].starts_with(&magic) => Some(at + total),
            Some(total) => find_magic(at + total),
            None => find_magic(at + 1),
        };
        match next {
            Some(next) if next < bytes.len() => at = next,
            _ => break,
        }
    }
    out
}

fn syncer(inner: Arc<Inner>, policy: SyncPolicy) {
    let interval = Duration::from_millis(inner.config.batch_sync_interval_ms);
    let mut synced: Ticket = 0;
    loop {
        {
            let mut wake = inner.wake.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if wake.shutdown {
                    return;
                }
                if policy == SyncPolicy::Always && wake.requested > synced {
                    break;
                }
                if policy == SyncPolicy::Batch {
                    let (w, _) = inner
                        .wake_cv
                        .wait_timeout(wake, interval)
                        .unwrap_or_else(|p| p.into_inner());
                    wake = w;
                    if wake.shutdown {
                        return;
                    }
                    break;
                }
                wake = inner.wake_cv.wait(wake).unwrap_or_else(|p| p.into_inner());
            }
        }
        // Everything appended up to now is in the active segment or in
        // earlier ones, which were synced when they rolled over.
        let (file, target, segment) = {
            let state = inner.lock();
            if inner.stopped.get().is_some() {
                return;
            }
            (
                state.segments[&state.active].file.clone(),
                state.appended,
                state.active,
            )
        };
        if target <= synced {
            continue;
        }
        inner.syncs.fetch_add(1, Ordering::Relaxed);
        let result = inner.sync_data(&file);
        // Published under the lock, and only if the store has not stopped
        // meanwhile: a rollover may have synced the same file at the same
        // time and got the error, which the kernel reports to one
        // `fdatasync` only, so this one's success proves nothing then.
        let state = inner.lock();
        match result {
            Ok(()) if inner.stopped.get().is_none() => {
                synced = target;
                inner.durable.send_replace(target);
            }
            Ok(()) => return,
            Err(e) => {
                inner.stop(&state, &segment_path(&inner.dir, segment), &e);
                return;
            }
        }
    }
}

impl LogStore for FileStore {
    fn put(&self, epoch: Epoch, address: Address, value: &Stored) -> Result<Put, StoreError> {
        let mut out = self.inner.put_batch(epoch, &[(address, value)], false)?;
        Ok(out.pop().unwrap_or(Put::Trimmed))
    }

    fn put_batch(&self, epoch: Epoch, items: &[(Address, Stored)]) -> Result<Vec<Put>, StoreError> {
        let refs: Vec<(Address, &Stored)> = items.iter().map(|(a, v)| (*a, v)).collect();
        self.inner.put_batch(epoch, &refs, false)
    }

    fn repair(&self, epoch: Epoch, address: Address, value: &Stored) -> Result<Put, StoreError> {
        let mut out = self.inner.put_batch(epoch, &[(address, value)], true)?;
        Ok(out.pop().unwrap_or(Put::Trimmed))
    }

    fn get(&self, address: Address) -> Result<ReadOutcome, StoreError> {
        let (file, offset, loc) = {
            let state = self.inner.lock();
            self.inner.check_stopped()?;
            if address < state.trim_mark {
                return Ok(ReadOutcome::Trimmed);
            }
            if let Some(reason) = state.corrupt.get(&address) {
                return Err(StoreError::Corrupt {
                    address,
                    reason: reason.clone(),
                });
            }
            let Some(loc) = state.index.get(address) else {
                return Ok(ReadOutcome::Unwritten);
            };
            let (segment, offset, junk) = unpack(loc);
            if junk {
                return Ok(ReadOutcome::Junk);
            }
            (state.segments[&segment].file.clone(), offset, loc)
        };
        match read_record(&file, offset, address, self.inner.config.entry_bytes_max) {
            Ok(Stored::Data(entry)) => Ok(ReadOutcome::Data(entry)),
            Ok(Stored::Junk) => Ok(ReadOutcome::Junk),
            Err(e) => {
                if let StoreError::Corrupt { reason, .. } = &e {
                    tracing::error!(address, %reason, "corrupt record; not served");
                    self.inner.mark_corrupt(address, loc, reason);
                }
                Err(e)
            }
        }
    }

    fn get_many(&self, addresses: &[Address]) -> Result<Vec<ReadOutcome>, StoreError> {
        self.get_prefix(addresses, usize::MAX)
    }

    fn get_prefix(
        &self,
        addresses: &[Address],
        bytes_max: usize,
    ) -> Result<Vec<ReadOutcome>, StoreError> {
        // Under the lock: answers that need no I/O, and where the others
        // live.
        // A corrupt copy ends the answer (see `LogStore::get_many`).
        let mut out = Vec::with_capacity(addresses.len());
        let mut plan: Vec<(usize, Arc<File>, u32, u64)> = Vec::new();
        {
            let state = self.inner.lock();
            self.inner.check_stopped()?;
            for (i, &address) in addresses.iter().enumerate() {
                if address < state.trim_mark {
                    out.push(ReadOutcome::Trimmed);
                    continue;
                }
                if let Some(reason) = state.corrupt.get(&address) {
                    if i > 0 {
                        break;
                    }
                    return Err(StoreError::Corrupt {
                        address,
                        reason: reason.clone(),
                    });
                }
                let Some(loc) = state.index.get(address) else {
                    out.push(ReadOutcome::Unwritten);
                    continue;
                };
                let (segment, offset, junk) = unpack(loc);
                if junk {
                    out.push(ReadOutcome::Junk);
                    continue;
                }
                let file = match plan.last() {
                    Some((_, file, id, _)) if *id == segment => file.clone(),
                    _ => state.segments[&segment].file.clone(),
                };
                plan.push((i, file, segment, offset));
                out.push(ReadOutcome::Unwritten); // replaced below
            }
        }
        // Without the lock: runs of records close together in one segment
        // are read with one pread each. The answer stops at the budget: a
        // record's size is known from its header before it is read whole.
        let body_max = self.inner.config.entry_bytes_max;
        let mut budget = ReadBudget::new(bytes_max);
        let mut counted = 0; // outcomes of `out` taken into the budget
        let mut span = Vec::new();
        let mut k = 0;
        while k < plan.len() {
            let (_, file, segment, base) = &plan[k];
            let mut end = k + 1;
            while end < plan.len()
                && plan[end].2 == *segment
                && plan[end].3 > plan[end - 1].3
                && plan[end].3 - base < SPAN_BYTES_MAX
            {
                end += 1;
            }
            let last = plan[end - 1].3;
            span.resize((last - base) as usize + FIRST_READ_BYTES, 0);
            let have = read_span(file, &mut span, *base)
                .map_err(io(format!("read address {}", addresses[plan[k].0])))?;
            for (i, file, seg, offset) in &plan[k..end] {
                if let Some(cut) = over_budget(&mut budget, &out[counted..*i]) {
                    out.truncate(counted + cut);
                    return Ok(out);
                }
                let at = (offset - base) as usize;
                let size = span.get(at..have).and_then(record::peek_wire_bytes);
                if size.is_some_and(|size| !budget.fits(size)) {
                    out.truncate(*i);
                    return Ok(out);
                }
                let address = addresses[*i];
                let stored = match record_in_span(
                    &span[..have],
                    (offset - base) as usize,
                    address,
                    body_max,
                ) {
                    Some(stored) => stored,
                    None => read_record(file, *offset, address, body_max),
                };
                out[*i] = match stored {
                    Ok(Stored::Data(entry)) => ReadOutcome::Data(entry),
                    Ok(Stored::Junk) => ReadOutcome::Junk,
                    Err(e) => {
                        if let StoreError::Corrupt { reason, .. } = &e {
                            tracing::error!(address, %reason, "corrupt record; not served");
                            self.inner
                                .mark_corrupt(address, pack(*seg, *offset, false), reason);
                            if *i > 0 {
                                out.truncate(*i);
                                return Ok(out);
                            }
                        }
                        return Err(e);
                    }
                };
                if !budget.take(out[*i].wire_bytes()) {
                    out.truncate(*i);
                    return Ok(out);
                }
                counted = *i + 1;
            }
            k = end;
        }
        if let Some(cut) = over_budget(&mut budget, &out[counted..]) {
            out.truncate(counted + cut);
        }
        Ok(out)
    }

    fn epoch(&self) -> Epoch {
        self.inner.lock().epoch
    }

    fn seal(&self, epoch: Epoch) -> Result<Result<Tails, Epoch>, StoreError> {
        let mut state = self.inner.lock();
        // A stopped unit's tails may count records that are not on disk.
        self.inner.check_stopped()?;
        if epoch < state.epoch {
            return Ok(Err(state.epoch));
        }
        if epoch > state.epoch {
            self.inner.write_meta(epoch, state.trim_mark)?;
            state.epoch = epoch;
        }
        Ok(Ok(tails_of(&state)))
    }

    fn tails(&self) -> Tails {
        tails_of(&self.inner.lock())
    }

    fn prefix_trim(&self, mark: Address) -> Result<Address, StoreError> {
        let doomed: Vec<u32> = {
            let mut state = self.inner.lock();
            self.inner.check_stopped()?;
            if mark <= state.trim_mark {
                return Ok(state.trim_mark);
            }
            self.inner.write_meta(state.epoch, mark)?;
            state.trim_mark = mark;
            state.index.remove_below(mark);
            state.corrupt.retain(|a, _| *a >= mark);
            let active = state.active;
            let doomed: Vec<u32> = state
                .segments
                .iter()
                .filter(|(id, s)| **id != active && s.max_address.is_none_or(|m| m < mark))
                .map(|(id, _)| *id)
                .collect();
            for id in &doomed {
                state.segments.remove(id);
            }
            doomed
        };
        for id in &doomed {
            let path = segment_path(&self.inner.dir, *id);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a trimmed segment");
            }
        }
        if !doomed.is_empty() {
            sync_dir(&self.inner.dir)?;
            tracing::info!(
                segments = doomed.len(),
                mark,
                "reclaimed trimmed segment files"
            );
        }
        Ok(mark)
    }

    fn durable(&self) -> watch::Receiver<Ticket> {
        self.inner.durable.subscribe()
    }

    fn health(&self) -> Result<(), StoreError> {
        self.inner.check_stopped()
    }
}

fn tails_of(state: &State) -> Tails {
    Tails {
        global: state.global,
        streams: state.streams.iter().map(|(s, a)| (*s, *a)).collect(),
        trim_mark: state.trim_mark,
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::conformance::{self, entry};
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn temp_dirs() -> (tempfile::TempDir, impl Fn() -> PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().to_path_buf();
        let n = AtomicUsize::new(0);
        (root, move || {
            base.join(format!("store-{}", n.fetch_add(1, Ordering::Relaxed)))
        })
    }

    fn small(sync: SyncPolicy) -> LogUnitConfig {
        LogUnitConfig {
            sync,
            segment_bytes_max: 4096,
            ..LogUnitConfig::default()
        }
    }

    #[test]
    fn file_store_conforms_with_every_sync_policy() {
        for sync in [SyncPolicy::Always, SyncPolicy::Batch, SyncPolicy::Never] {
            let (_root, next_dir) = temp_dirs();
            let open = || FileStore::open(&next_dir(), small(sync)).unwrap();
            let reopen = |s: FileStore| {
                let dir = s.dir().to_path_buf();
                drop(s);
                FileStore::open(&dir, small(sync)).unwrap()
            };
            conformance::run(&open, Some(&reopen));
        }
    }

    #[test]
    fn pack_round_trips() {
        for (seg, off, junk) in [
            (1, 0, false),
            ((1 << 23) - 1, (1 << 40) - 1, true),
            (7, 12345, true),
        ] {
            assert_eq!(unpack(pack(seg, off, junk)), (seg, off, junk));
        }
    }

    fn write_many(store: &FileStore, range: std::ops::Range<u64>) {
        for a in range {
            assert!(matches!(
                store
                    .put(
                        0,
                        a,
                        &entry(&format!("value-{a}"), &[(1, a.checked_sub(1))])
                    )
                    .unwrap(),
                Put::Written(_)
            ));
        }
    }

    #[test]
    fn writes_roll_over_segments_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), small(SyncPolicy::Never)).unwrap();
        write_many(&store, 0..500);
        let segments = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("seg-")
            })
            .count();
        assert!(segments > 5, "4 KiB segments roll over: {segments}");
        drop(store);
        let store = FileStore::open(dir.path(), small(SyncPolicy::Never)).unwrap();
        assert_eq!(store.recovery_report().records, 500);
        for a in 0..500 {
            assert_eq!(
                store.get(a).unwrap(),
                match entry(&format!("value-{a}"), &[(1, a.checked_sub(1))]) {
                    Stored::Data(e) => ReadOutcome::Data(e),
                    Stored::Junk => unreachable!(),
                }
            );
        }
    }

    #[test]
    fn prefix_trim_reclaims_whole_segments_below_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), small(SyncPolicy::Never)).unwrap();
        write_many(&store, 0..500);
        let count = || {
            fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("seg-")
                })
                .count()
        };
        let before = count();
        store.prefix_trim(400).unwrap();
        let after = count();
        assert!(
            after < before / 2,
            "segments before {before}, after {after}"
        );
        assert_eq!(store.get(399).unwrap(), ReadOutcome::Trimmed);
        assert!(matches!(store.get(400).unwrap(), ReadOutcome::Data(_)));
        drop(store);
        let store = FileStore::open(dir.path(), small(SyncPolicy::Never)).unwrap();
        assert_eq!(store.get(10).unwrap(), ReadOutcome::Trimmed);
        assert!(matches!(store.get(499).unwrap(), ReadOutcome::Data(_)));
    }

    fn last_segment(dir: &Path) -> PathBuf {
        let mut segs: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
            .collect();
        segs.sort();
        segs.pop().unwrap()
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogUnitConfig::default();
        let store = FileStore::open(dir.path(), cfg.clone()).unwrap();
        write_many(&store, 0..10);
        drop(store);
        // A record half written when the power went out.
        let seg = last_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        let full = bytes.len();
        let mut torn = Vec::new();
        record::encode(10, &entry("torn", &[]), &mut torn);
        bytes.extend_from_slice(&torn[..torn.len() - 5]);
        fs::write(&seg, &bytes).unwrap();
        let store = FileStore::open(dir.path(), cfg.clone()).unwrap();
        assert_eq!(
            store.recovery_report().truncated_bytes,
            (torn.len() - 5) as u64
        );
        assert_eq!(fs::metadata(&seg).unwrap().len(), full as u64);
        assert_eq!(store.get(10).unwrap(), ReadOutcome::Unwritten);
        assert!(matches!(store.get(9).unwrap(), ReadOutcome::Data(_)));
        // The address is writable again, and the log continues after it.
        assert!(matches!(
            store.put(0, 10, &entry("again", &[])).unwrap(),
            Put::Written(_)
        ));
        drop(store);
        let store = FileStore::open(dir.path(), cfg).unwrap();
        assert_eq!(store.recovery_report().truncated_bytes, 0);
        assert!(matches!(store.get(10).unwrap(), ReadOutcome::Data(_)));
    }

    #[test]
    fn a_flipped_byte_in_the_middle_is_detected_and_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogUnitConfig::default();
        let store = FileStore::open(dir.path(), cfg.clone()).unwrap();
        write_many(&store, 0..10);
        drop(store);
        let seg = last_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        // Flip a payload byte of the record of address 4.
        let mut at = 0;
        for _ in 0..4 {
            at += record::record_len(&bytes[at..], 1 << 20).unwrap();
        }
        let len = record::record_len(&bytes[at..], 1 << 20).unwrap();
        bytes[at + len - 2] ^= 0x40;
        fs::write(&seg, &bytes).unwrap();

        let store = FileStore::open(dir.path(), cfg).unwrap();
        assert_eq!(store.recovery_report().corrupt_records, 1);
        assert_eq!(store.recovery_report().truncated_bytes, 0);
        assert!(matches!(
            store.get(4),
            Err(StoreError::Corrupt { address: 4, .. })
        ));
        // Write-once holds: the corrupt address is not silently rewritten,
        // and a batch fails only there.
        assert_eq!(
            store.put(0, 4, &entry("replacement", &[])).unwrap(),
            Put::Corrupt
        );
        let out = store
            .put_batch(0, &[(4, Stored::Junk), (10, entry("ten", &[]))])
            .unwrap();
        assert_eq!(out[0], Put::Corrupt);
        assert!(matches!(out[1], Put::Written(_)), "{out:?}");
        for a in (0..11).filter(|a| *a != 4) {
            assert!(
                matches!(store.get(a).unwrap(), ReadOutcome::Data(_)),
                "address {a}"
            );
        }
        // A repair (the chain's value) replaces the copy, for good.
        let good = entry("value-4", &[(1, Some(3))]);
        assert!(matches!(
            store.repair(0, 4, &good).unwrap(),
            Put::Written(_)
        ));
        assert_eq!(
            store.repair(0, 4, &Stored::Junk).unwrap(),
            Put::Exists(good.clone())
        );
        drop(store);
        let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
        assert_eq!(store.recovery_report().corrupt_records, 1, "still on disk");
        let Stored::Data(good) = good else {
            unreachable!()
        };
        assert_eq!(store.get(4).unwrap(), ReadOutcome::Data(good));
    }

    #[test]
    fn a_record_whose_address_cannot_be_told_hides_no_intact_record() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogUnitConfig::default();
        let store = FileStore::open(dir.path(), cfg.clone()).unwrap();
        write_many(&store, 0..10);
        drop(store);
        let seg = last_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        let mut at = 0;
        for _ in 0..4 {
            at += record::record_len(&bytes[at..], 1 << 20).unwrap();
        }
        let len = record::record_len(&bytes[at..], 1 << 20).unwrap();
        // Record 4 names address 7 (held intact) and its payload is damaged
        // too: no correction, and the hint is disproved by record 7.
        bytes[at + HEADER_BYTES] ^= 0x03;
        bytes[at + len - 1] ^= 0x01;
        fs::write(&seg, &bytes).unwrap();
        let store = FileStore::open(dir.path(), cfg).unwrap();
        let report = store.recovery_report();
        assert_eq!((report.corrupt_records, report.corrupt_unknown), (1, 1));
        assert!(matches!(store.get(7).unwrap(), ReadOutcome::Data(_)));
        // The true address reads as a missing copy here (see
        // ARCHITECTURE.md: a chain completes it on a non-head member).
        assert_eq!(store.get(4).unwrap(), ReadOutcome::Unwritten);
    }

    #[test]
    fn file_store_repairs_corrupt_copies() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
        conformance::corrupt_and_repair(store, &|s, address| {
            // Damage the last byte of the record of `address`; the store
            // finds out on its next read.
            let seg = last_segment(s.dir());
            let mut bytes = fs::read(&seg).unwrap();
            let mut at = 0;
            loop {
                let (rec, len) = record::decode(&bytes[at..], 1 << 20).unwrap();
                if rec.address == address {
                    bytes[at + len - 1] ^= 0x01;
                    break;
                }
                at += len;
            }
            fs::write(&seg, &bytes).unwrap();
        });
    }

    #[test]
    fn a_segment_left_by_a_failed_directory_sync_does_not_block_later_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), small(SyncPolicy::Never)).unwrap();
        store.inner.fail_dir_syncs.store(1, Ordering::Release);
        let mut failed = None;
        for a in 0..200 {
            match store.put(0, a, &entry(&format!("value-{a}"), &[])) {
                Ok(Put::Written(_)) => {}
                Ok(other) => panic!("address {a}: {other:?}"),
                Err(e) => {
                    failed = Some((a, e));
                    break;
                }
            }
        }
        let (at, e) = failed.expect("a 4 KiB segment rolls over within 200 writes");
        assert!(e.to_string().contains("sync directory"), "{e}");
        assert!(
            segment_path(dir.path(), 2).exists(),
            "the roll left its file"
        );
        // The next roll succeeds, and the log goes on.
        for a in at..at + 200 {
            assert!(
                matches!(
                    store.put(0, a, &entry(&format!("value-{a}"), &[])).unwrap(),
                    Put::Written(_)
                ),
                "address {a}"
            );
        }
        drop(store);
        let store = FileStore::open(dir.path(), small(SyncPolicy::Never)).unwrap();
        assert_eq!(store.recovery_report().records, at + 200);
        assert!(matches!(store.get(at).unwrap(), ReadOutcome::Data(_)));
    }

    /// A copy found corrupt while running (a read error that does not
    /// recur: the record on disk is intact) and then repaired with the
    /// chain's value keeps the repaired value after a restart: recovery
    /// takes the repair record over the earlier record of its address.
    #[test]
    fn a_repair_of_a_copy_found_corrupt_at_runtime_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
        assert!(matches!(
            store.put(0, 5, &entry("A", &[(1, None)])).unwrap(),
            Put::Written(_)
        ));
        let loc = store.inner.lock().index.get(5).unwrap();
        store.inner.mark_corrupt(5, loc, "a transient read error");
        assert!(matches!(
            store.get(5),
            Err(StoreError::Corrupt { address: 5, .. })
        ));
        // The chain decided junk (its copy was never acknowledged).
        assert!(matches!(
            store.repair(0, 5, &Stored::Junk).unwrap(),
            Put::Written(_)
        ));
        assert_eq!(store.get(5).unwrap(), ReadOutcome::Junk);
        drop(store);
        let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
        assert_eq!(store.recovery_report().corrupt_records, 0);
        assert_eq!(
            store.get(5).unwrap(),
            ReadOutcome::Junk,
            "the repaired value, not the original record"
        );
        // Write-once again after the restart.
        assert_eq!(
            store.put(0, 5, &entry("B", &[])).unwrap(),
            Put::Exists(Stored::Junk)
        );
    }

    #[test]
    fn a_byte_flipped_while_running_is_caught_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
        write_many(&store, 0..3);
        let seg = last_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&seg, &bytes).unwrap();
        assert!(matches!(
            store.get(2),
            Err(StoreError::Corrupt { address: 2, .. })
        ));
        assert!(matches!(store.get(1).unwrap(), ReadOutcome::Data(_)));
    }

    #[test]
    fn concurrent_writers_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open(dir.path(), LogUnitConfig::default()).unwrap());
        let writes_per_thread = 200u64;
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut durable = store.durable();
                    for i in 0..writes_per_thread {
                        let Put::Written(ticket) =
                            store.put(0, t * 1000 + i, &entry("x", &[])).unwrap()
                        else {
                            panic!("fresh address not written");
                        };
                        // Wait like a unit does before acknowledging.
                        while *durable.borrow_and_update() < ticket {
                            std::thread::sleep(Duration::from_micros(50));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let writes = 8 * writes_per_thread;
        assert!(
            store.sync_count() < writes,
            "group commit: {} syncs for {writes} acknowledged writes",
            store.sync_count()
        );
        assert!(store.sync_count() > 0);
    }

    #[test]
    fn file_store_fail_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
        conformance::fail_stop(store, &|s| {
            s.fail_syncs();
            // The next sync fails: the one for this write, if the suite's
            // own write was not still waiting for one (then this write is
            // refused already).
            if let Ok(Put::Written(ticket)) = s.put(0, 100, &entry("unsynced", &[])) {
                let started = std::time::Instant::now();
                while *s.durable().borrow() < ticket {
                    assert!(started.elapsed() < Duration::from_secs(10), "no answer");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
    }

    /// The error of a store that fail-stopped after a failed sync.
    fn is_stop(e: &StoreError) -> bool {
        let text = e.to_string();
        text.contains("stopped after a failed fdatasync of") && text.contains("restart the node")
    }

    #[test]
    fn a_failed_sync_stops_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let wait = |ticket: Ticket| {
            let mut durable = store.durable();
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), durable.wait_for(|d| *d >= ticket))
                    .await
                    .expect("the syncer answers every ticket")
                    .unwrap();
            });
        };
        let Put::Written(synced) = store.put(0, 1, &entry("synced", &[])).unwrap() else {
            panic!("fresh address not written");
        };
        wait(synced);
        store.health().unwrap();

        store.fail_syncs();
        let Put::Written(ticket) = store.put(0, 2, &entry("unsynced", &[])).unwrap() else {
            panic!("fresh address not written");
        };
        // The waiter is woken and learns that the sync failed.
        wait(ticket);
        let health = store.health().unwrap_err();
        // The entry is appended and indexed but was never synced: it must
        // not be served (a hole filler could copy it down the chain), and
        // neither may anything else the store holds.
        for address in [2, 1, 7] {
            let read = store.get(address);
            assert!(
                matches!(&read, Err(e) if is_stop(e)),
                "get({address}): {read:?}"
            );
        }
        let reads = store.get_many(&[1, 2]);
        assert!(matches!(&reads, Err(e) if is_stop(e)), "{reads:?}");
        let put = store.put(0, 3, &entry("later", &[]));
        assert!(matches!(&put, Err(e) if is_stop(e)), "{put:?}");
        let batch = store.put_batch(0, &[(4, Stored::Junk)]);
        assert!(matches!(&batch, Err(e) if is_stop(e)), "{batch:?}");
        let seal = store.seal(5);
        assert!(matches!(&seal, Err(e) if is_stop(e)), "{seal:?}");
        let trim = store.prefix_trim(1);
        assert!(matches!(&trim, Err(e) if is_stop(e)), "{trim:?}");
        assert!(is_stop(&health), "{health}");
        assert!(
            health.to_string().contains("seg-00000001.log"),
            "names the file: {health}"
        );
        assert_eq!(store.epoch(), 0, "the refused seal changed nothing");

        // A restart recovers from what is on disk. (The injected failure
        // lost nothing, so the unsynced entry happens to be there; after a
        // real one it may or may not be.)
        drop(store);
        let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
        store.health().unwrap();
        assert!(matches!(store.get(1).unwrap(), ReadOutcome::Data(_)));
        assert!(matches!(
            store.put(0, 3, &entry("after restart", &[])).unwrap(),
            Put::Written(_)
        ));
    }

    #[test]
    fn a_failed_sync_at_rollover_stops_the_store() {
        let dir = tempfile::tempdir().unwrap();
        // `batch` with a long interval: the only sync is the rollover's.
        let config = LogUnitConfig {
            batch_sync_interval_ms: 3_600_000,
            ..small(SyncPolicy::Batch)
        };
        let store = FileStore::open(dir.path(), config).unwrap();
        store.fail_syncs();
        let mut stopped = None;
        for a in 0..1000 {
            match store.put(0, a, &entry(&format!("value-{a}"), &[])) {
                Ok(Put::Written(_)) => {}
                Ok(other) => panic!("address {a}: {other:?}"),
                Err(e) => {
                    stopped = Some((a, e));
                    break;
                }
            }
        }
        let (at, e) = stopped.expect("a 4 KiB segment rolls over within 1000 writes");
        assert!(is_stop(&e), "{e}");
        // Everything appended to the segment whose sync failed is unsynced.
        let read = store.get(0);
        assert!(matches!(&read, Err(e) if is_stop(e)), "{read:?}");
        let put = store.put(0, at, &entry("retry", &[]));
        assert!(matches!(&put, Err(e) if is_stop(e)), "{put:?}");
        assert!(store.health().is_err());
        // Waiters are woken (to find the store stopped), not left hanging.
        assert_eq!(*store.durable().borrow(), Ticket::MAX);
    }

    #[test]
    fn always_acknowledges_after_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open(dir.path(), LogUnitConfig::default()).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut tickets = Vec::new();
            for a in 0..100 {
                match store.put(0, a, &entry("x", &[])).unwrap() {
                    Put::Written(t) => tickets.push(t),
                    other => panic!("{other:?}"),
                }
            }
            assert!(tickets.windows(2).all(|w| w[0] < w[1]), "tickets grow");
            let mut durable = store.durable();
            let last = *tickets.last().unwrap();
            tokio::time::timeout(Duration::from_secs(10), durable.wait_for(|d| *d >= last))
                .await
                .expect("the syncer makes every ticket durable")
                .unwrap();
            store.health().unwrap();
        });
    }
}
