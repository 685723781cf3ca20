//! Writer sessions and their heartbeats.
//!
//! Backups take no lock. Instead every writer (and prune) writes a heartbeat object under
//! `sessions/` when it starts and every [`HEARTBEAT_INTERVAL`] while it runs. Objects are
//! immutable, so each beat is a new object; the storage's clock (`modified`) says when it
//! was written. Prune reads them to know which sessions may still hold an older view of the
//! index: a session is *live* while its latest beat is younger than [`SESSION_TIMEOUT`].
//! A writer that was paused for longer than that (a laptop asleep) notices the gap at
//! commit time and re-validates what it depends on before writing its snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::backend::Backend;
use crate::codec::{DecodeError, Decoder, Encoder};
use crate::crypto::WriterKey;
use crate::error::{Error, Result};
use crate::id::content_hash;
use crate::object::{HEADER_LEN, ObjectKind};
use crate::tree::{Timestamp, decode_timestamp, encode_timestamp};

/// How often a running session writes a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// A session whose latest heartbeat is older than this (on the storage's clock) is dead.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

const BODY_VERSION: u8 = 1;

/// One heartbeat object's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Random id of the session.
    pub session: [u8; 16],
    /// 0 for the first beat, then 1, 2, ...
    pub sequence: u32,
    /// The writer's own clock (informational; liveness uses the storage's clock).
    pub client_time: Timestamp,
    /// Host running the session.
    pub host: String,
    /// What the session does (`backup`, `prune`, ...).
    pub purpose: String,
    /// The session's last beat: it has finished (committed or given up).
    pub ended: bool,
}

fn aad(header: &[u8]) -> Vec<u8> {
    let mut aad = b"bunker heartbeat".to_vec();
    aad.extend_from_slice(header);
    aad
}

impl Heartbeat {
    /// Seals the heartbeat (with the index key, which every writer holds) and names it.
    pub fn encode(&self, writer: &WriterKey) -> (String, Vec<u8>) {
        let mut body = Encoder::new();
        body.u8(BODY_VERSION).raw(&self.session).u32(self.sequence);
        encode_timestamp(&mut body, self.client_time);
        body.str(&self.host)
            .str(&self.purpose)
            .u8(u8::from(self.ended));
        let header = ObjectKind::Heartbeat.header();
        let mut out = header.to_vec();
        writer
            .index_key()
            .seal_into(&aad(&header), &body.finish(), &mut out);
        let name = ObjectKind::Heartbeat.name(&hex::encode(content_hash(&out)));
        (name, out)
    }

    /// Opens a heartbeat object.
    pub fn decode(bytes: &[u8], writer: &WriterKey, object: &str) -> Result<Self> {
        ObjectKind::Heartbeat.check_header(bytes, object)?;
        let body = writer
            .index_key()
            .open(&aad(&bytes[..HEADER_LEN]), &bytes[HEADER_LEN..])
            .map_err(|_| Error::corrupt(object, "heartbeat does not authenticate"))?;
        let corrupt = |e: DecodeError| Error::corrupt(object, e.to_string());
        let mut dec = Decoder::new(&body);
        dec.version("heartbeat version", BODY_VERSION)
            .map_err(|e| Error::decoding(object, e))?;
        let heartbeat = Heartbeat {
            session: dec.array("session id").map_err(corrupt)?,
            sequence: dec.u32("sequence").map_err(corrupt)?,
            client_time: decode_timestamp(&mut dec, "client time").map_err(corrupt)?,
            host: dec.string("host").map_err(corrupt)?,
            purpose: dec.string("purpose").map_err(corrupt)?,
            ended: match dec.u8("ended").map_err(corrupt)? {
                0 => false,
                1 => true,
                other => return Err(Error::corrupt(object, format!("ended flag {other}"))),
            },
        };
        dec.finish().map_err(corrupt)?;
        Ok(heartbeat)
    }
}

/// A session as seen through its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The session's id.
    pub session: [u8; 16],
    /// Host running it.
    pub host: String,
    /// What it does.
    pub purpose: String,
    /// Storage time of its first heartbeat seen.
    pub first: SystemTime,
    /// Storage time of its latest heartbeat.
    pub last: SystemTime,
    /// Names of its heartbeat objects.
    pub objects: Vec<String>,
    /// It wrote its final beat.
    pub ended: bool,
}

impl SessionView {
    /// True unless the session ended or its latest beat is [`SESSION_TIMEOUT`] old at
    /// storage time `now`.
    pub fn is_live(&self, now: SystemTime) -> bool {
        !self.ended && now.duration_since(self.last).unwrap_or_default() < SESSION_TIMEOUT
    }
}

/// Every session with at least one readable heartbeat. Unreadable heartbeat objects are
/// skipped (and left for prune to report).
pub fn list_sessions(backend: &dyn Backend, writer: &WriterKey) -> Result<Vec<SessionView>> {
    let mut sessions: HashMap<[u8; 16], SessionView> = HashMap::new();
    crate::repository::fan_out::read_listed(
        backend,
        ObjectKind::Heartbeat.prefix(),
        |meta, read| {
            let Ok(beat) = Heartbeat::decode(&read?, writer, &meta.name) else {
                return Ok(());
            };
            let view = sessions.entry(beat.session).or_insert_with(|| SessionView {
                session: beat.session,
                host: beat.host.clone(),
                purpose: beat.purpose.clone(),
                first: meta.modified,
                last: meta.modified,
                objects: Vec::new(),
                ended: false,
            });
            view.ended |= beat.ended;
            view.first = view.first.min(meta.modified);
            view.last = view.last.max(meta.modified);
            view.objects.push(meta.name.clone());
            Ok(())
        },
    )?;
    Ok(sessions.into_values().collect())
}

struct Shared {
    backend: Arc<dyn Backend>,
    writer: WriterKey,
    session: [u8; 16],
    host: String,
    purpose: String,
    sequence: AtomicU32,
    /// Storage time of the latest heartbeat written.
    last_beat: Mutex<SystemTime>,
    /// Longest gap seen between two consecutive heartbeats, on the storage clock.
    longest_gap: Mutex<Duration>,
    stop: AtomicBool,
    wake: (Mutex<()>, Condvar),
}

impl Shared {
    fn beat(&self, ended: bool) -> Result<SystemTime> {
        let beat = Heartbeat {
            ended,
            session: self.session,
            sequence: self.sequence.fetch_add(1, Ordering::SeqCst),
            client_time: Timestamp::now(),
            host: self.host.clone(),
            purpose: self.purpose.clone(),
        };
        let (name, bytes) = beat.encode(&self.writer);
        match self.backend.put_if_absent(&name, &bytes) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let modified = self.backend.head(&name)?.modified;
        let mut last = self
            .last_beat
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let gap = modified.duration_since(*last).unwrap_or_default();
        let mut longest = self
            .longest_gap
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *longest = (*longest).max(gap);
        *last = modified;
        Ok(modified)
    }
}

/// A running session: writes its first heartbeat on start and, with a background thread,
/// one every [`HEARTBEAT_INTERVAL`] until dropped.
pub struct ActiveSession {
    shared: Arc<Shared>,
    started: SystemTime,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ActiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveSession")
            .field("session", &hex::encode(self.shared.session))
            .field("purpose", &self.shared.purpose)
            .finish_non_exhaustive()
    }
}

impl ActiveSession {
    /// Writes the first heartbeat. With `background`, a thread keeps beating; without, the
    /// caller calls [`ActiveSession::beat`] (deterministic tests).
    pub fn start(
        backend: Arc<dyn Backend>,
        writer: &WriterKey,
        host: &str,
        purpose: &str,
        background: bool,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            backend,
            writer: writer.clone(),
            session: crate::crypto::random_array(),
            host: host.to_owned(),
            purpose: purpose.to_owned(),
            sequence: AtomicU32::new(0),
            last_beat: Mutex::new(SystemTime::UNIX_EPOCH),
            longest_gap: Mutex::new(Duration::ZERO),
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
        });
        let started = shared.beat(false)?;
        *shared
            .longest_gap
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Duration::ZERO;
        let thread = background.then(|| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let (lock, condvar) = &shared.wake;
                let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
                // `stop` is set while holding `lock`, and checked here while holding it, so
                // a wake-up cannot be missed.
                while !shared.stop.load(Ordering::SeqCst) {
                    guard = condvar
                        .wait_timeout(guard, HEARTBEAT_INTERVAL)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    drop(guard);
                    // A failed beat is retried at the next interval; the commit-time
                    // check catches a session that could not beat for too long.
                    let _ = shared.beat(false);
                    guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
                }
            })
        });
        Ok(Self {
            shared,
            started,
            thread,
        })
    }

    /// Storage time of the first heartbeat: everything this session reads from the index
    /// was read after it.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The session's id.
    pub fn id(&self) -> [u8; 16] {
        self.shared.session
    }

    /// Writes a heartbeat now and returns its storage time.
    pub fn beat(&self) -> Result<SystemTime> {
        self.shared.beat(false)
    }

    /// Writes the final heartbeat: from now on prune no longer waits for this session.
    /// Call it only after the session's last write (the snapshot) is durable. Dropping the
    /// session without ending it leaves it live until it times out, which is the safe side.
    pub fn end(self) -> Result<()> {
        self.stop();
        self.shared.beat(true).map(|_| ())
    }

    fn stop(&self) {
        let (lock, condvar) = &self.shared.wake;
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.shared.stop.store(true, Ordering::SeqCst);
        condvar.notify_all();
    }

    /// Storage time of the latest heartbeat written.
    pub fn last_beat(&self) -> SystemTime {
        *self
            .shared
            .last_beat
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Longest gap between consecutive heartbeats so far (storage clock). A gap of
    /// [`SESSION_TIMEOUT`] or more means prune may have taken this session for dead.
    pub fn longest_gap(&self) -> Duration {
        *self
            .shared
            .longest_gap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::crypto::MasterKey;

    #[test]
    fn heartbeats_round_trip_and_sessions_are_grouped() {
        let master = MasterKey::generate();
        let backend = Arc::new(MemoryBackend::new());
        let session = ActiveSession::start(backend.clone(), master.writer(), "h", "backup", false)
            .expect("start");
        backend.advance_clock(Duration::from_secs(120));
        let second = session.beat().expect("beat");
        assert!(second >= session.started() + Duration::from_secs(120));
        assert!(session.longest_gap() >= Duration::from_secs(120));
        let sessions = list_sessions(backend.as_ref(), master.writer()).expect("list");
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].objects.len(), 2);
        assert_eq!(sessions[0].first, session.started());
        assert_eq!(sessions[0].last, second);
        assert!(sessions[0].is_live(second + Duration::from_secs(60)));
        assert!(!sessions[0].is_live(second + SESSION_TIMEOUT));
        session.end().expect("end");
        let sessions = list_sessions(backend.as_ref(), master.writer()).expect("list");
        assert!(sessions[0].ended);
        assert!(!sessions[0].is_live(second));

        let beat = Heartbeat {
            session: [7; 16],
            sequence: 3,
            client_time: Timestamp { sec: 5, nsec: 6 },
            host: "host".into(),
            purpose: "prune".into(),
            ended: true,
        };
        let (name, mut bytes) = beat.encode(master.writer());
        assert!(name.starts_with("sessions/"));
        assert_eq!(
            Heartbeat::decode(&bytes, master.writer(), &name).expect("decodes"),
            beat
        );
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(Heartbeat::decode(&bytes, master.writer(), &name).is_err());
    }

    #[test]
    fn a_heartbeat_with_a_second_of_nanoseconds_is_refused() {
        let master = MasterKey::from_parts([1; 32], [2; 32]);
        let beat = Heartbeat {
            session: [7; 16],
            sequence: 0,
            client_time: Timestamp {
                sec: 5,
                nsec: 1_000_000_000,
            },
            host: "host".into(),
            purpose: "backup".into(),
            ended: false,
        };
        let (name, bytes) = beat.encode(master.writer());
        let error = Heartbeat::decode(&bytes, master.writer(), &name).unwrap_err();
        assert!(
            error.to_string().contains("1000000000 nanoseconds"),
            "{error}"
        );
    }
}
