//! Deterministic simulation of garbage collection racing backups, forgets, clock jumps and
//! crashes, checking after every step the invariant of ARCHITECTURE.md §4: **no snapshot
//! that exists, or finishes later, ever references a missing blob.**
//!
//! Each seed builds an in-memory repository (a [`MemoryBackend`] whose clock the simulation
//! moves) and runs actors, each through its own [`FaultyBackend`] (its own "process"), in
//! a seeded random interleaving:
//!
//! - **writers**, phase by phase as the agent's backup does it: start (heartbeat, read GC
//!   plans, load the index, drop packs that do not exist, exclude condemned packs), add
//!   files (1 to 3 rounds; chunks from a small content pool shared by every writer and
//!   every round, so they deduplicate across writers and across time, plus new chunks; a
//!   pack that fills is uploaded at once), flush (trees, packs, index segment), commit
//!   ([`gc::commit_snapshot`]: the guard, the snapshot write, the guard again after a late
//!   write, the last heartbeat; a refused commit writes nothing, as in the agent). A
//!   quarter of the commits are suspended right before the snapshot write while the clock
//!   jumps 16 min or 25 h and a prune runs;
//! - **forgets** deleting a random snapshot;
//! - **prunes** in two steps, [`prune_plan`] then [`prune`] (other actors run in between),
//!   with a grace of 0, 1 h or 3 h and a tolerated unused share of 0, 5 or 30 %;
//! - **clock jumps** of 67 s to 25 h; during a jump each running writer is either awake
//!   (its heartbeat thread beats every 7 minutes) or asleep (a suspended laptop: no beat,
//!   so prune may take its session for dead and the writer later resumes);
//! - **crashes**: an actor's backend fails some calls at random or dies after a random
//!   number of calls; the step that hits the failure abandons the actor without ending its
//!   session (failed puts may or may not have landed). Actors are also killed at random
//!   between steps.
//!
//! After every step, with fault injection out of the way (a fault-free view of the same
//! storage), every snapshot must load; every tree and data blob reachable from it must be
//! in the index and read back, authenticated and re-hashed, from a pack that exists
//! ([`Repository::read_blob`] through `load_index`, what restore uses); each snapshot's
//! files must read back byte for byte as the writer wrote them; and no snapshot may
//! disappear except by a forget. A panic in the code under test fails the seed too. At the
//! end of a seed every actor is finished without faults, the clock moves past every
//! timeout and grace period, and fault-free prunes (until one finds nothing to do) must
//! leave no plan and no pack without a used blob (a liveness check).
//!
//! Environment:
//! - `BUNKER_SIM_SEEDS=N`: number of seeds (default [`DEFAULT_SEEDS`], about 30 s on two
//!   cores in the test profile; a seed costs about 0.2 s of one core). Long campaigns:
//!   `BUNKER_SIM_SEEDS=5000 cargo test -p bunker-repo-format --test gc_simulation
//!   gc_simulation -- --nocapture` (about 8 minutes).
//! - `BUNKER_SIM_FIRST_SEED=N`: first seed of the range (default 0).
//! - `BUNKER_SIM_SEED=N`: run only seed N (up to `BUNKER_SIM_REPEAT` times, default 20,
//!   until it fails) and print its whole step log.
//! - `BUNKER_SIM_STEPS=N`: steps per seed (default [`DEFAULT_STEPS`]).
//! - `BUNKER_SIM_THREADS=N`: worker threads (default 2).
//! - `BUNKER_SIM_AVOID=commit-pauses,concurrent-prunes,zero-grace`: leave scenarios out,
//!   to look for other bugs while known ones are open.
//!
//! A failing seed prints its seed and step log; the summary groups failures by kind. Runs
//! are deterministic in the order and kind of steps and in which backend calls fail;
//! object names still differ from run to run (keys, session ids and nonces are random),
//! which changes which of two copies of a blob the index names first and which object a
//! given failing call touches, so a failure may need a few replays to come back.
//!
//! The tests named `found_*` at the end are minimal reproductions of what the simulation
//! found, each documented with its status.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bunker_repo_format::backend::fault::{FaultRates, FaultyBackend};
use bunker_repo_format::backend::{Backend, MemoryBackend};
use bunker_repo_format::config::RepositoryParams;
use bunker_repo_format::crypto::SealingSession;
use bunker_repo_format::gc::{self, stored_packs};
use bunker_repo_format::index::{BlobLocation, Index};
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::prune::{PruneOptions, PrunePlan, prune, prune_plan};
use bunker_repo_format::session::{ActiveSession, SESSION_TIMEOUT};
use bunker_repo_format::snapshot::{Snapshot, Summary};
use bunker_repo_format::tree::{Entry, Extent, Metadata, Node, Timestamp, Tree};
use bunker_repo_format::{BlobId, BlobKind, BlobWriter, InitOptions, Repository, SnapshotId};

/// Seeds run by default: keeps the test well under a minute in the test profile.
const DEFAULT_SEEDS: u64 = 400;
/// Steps per seed by default.
const DEFAULT_STEPS: usize = 120;
/// Most fault-free prunes at the end of a seed, until one finds nothing to do.
const DRAIN_ROUNDS: usize = 8;
/// Writers a seed may start (slots in the arena).
const MAX_WRITER_RUNS: usize = 40;
/// Writers running at once.
const MAX_CONCURRENT_WRITERS: usize = 3;
/// Prunes running at once.
const MAX_CONCURRENT_PRUNES: usize = 2;
/// Chunks in the shared content pool.
const POOL_CHUNKS: u64 = 32;
const PASSWORD: &[u8] = b"simulated";
/// Longest gap between the beats of an awake writer during a clock jump: below half the
/// session timeout, so an awake writer's commit trusts its view.
const AWAKE_BEAT: Duration = Duration::from_secs(7 * 60);

type Faulty = FaultyBackend<Arc<MemoryBackend>>;

// ---------------------------------------------------------------------------------------
// Randomness and content
// ---------------------------------------------------------------------------------------

/// splitmix64: the simulation's only source of decisions.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0xA076_1D64_78BD_642F)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a.wrapping_mul(0x100_0000_01B3) ^ b.rotate_left(29)).next_u64()
}

/// `len` bytes from `seed`: random, or (one seed in four) compressible text-like bytes.
fn bytes_for(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let compressible = seed.is_multiple_of(4);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        let v = rng.next_u64();
        if compressible {
            out.extend_from_slice(format!("line {} of {seed}\n", v % 64).as_bytes());
        } else {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// A chunk of the shared pool: the same bytes for every writer of a seed.
fn pool_chunk(seed: u64, i: u64) -> Vec<u8> {
    let s = mix(seed, 1_000 + i);
    bytes_for(s, 4_096 + (s % (96 << 10)) as usize)
}

/// A chunk nobody else writes.
fn unique_chunk(seed: u64, writer: usize, n: u64) -> Vec<u8> {
    let s = mix(mix(seed, 2_000_000 + writer as u64), n);
    bytes_for(s, 4_096 + (s % (128 << 10)) as usize)
}

// ---------------------------------------------------------------------------------------
// Actors
// ---------------------------------------------------------------------------------------

/// What a writer "process" owns for its whole run; lives in the seed's arena so the
/// writer's [`BlobWriter`] can borrow it across steps.
struct WriterEnv {
    repo: Repository,
    index: Index,
    pausing: Arc<PausingBackend>,
}

/// A hook run inside a backend call.
type Hook = Box<dyn FnOnce() + Send>;

/// Runs a hook right before the next snapshot write goes to storage: the process was
/// suspended between its commit check and its snapshot write, and the world moved on.
struct PausingBackend {
    inner: Arc<dyn Backend>,
    hook: std::sync::Mutex<Option<Hook>>,
}

impl std::fmt::Debug for PausingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PausingBackend").finish_non_exhaustive()
    }
}

impl PausingBackend {
    fn arm(&self, hook: Hook) {
        *self.hook.lock().expect("hook") = Some(hook);
    }

    fn disarm(&self) -> bool {
        self.hook.lock().expect("hook").take().is_some()
    }

    fn is_armed(&self) -> bool {
        self.hook.lock().expect("hook").is_some()
    }
}

impl Backend for PausingBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> bunker_repo_format::Result<()> {
        if name.starts_with("snapshots/") {
            let hook = self.hook.lock().expect("hook").take();
            if let Some(hook) = hook {
                hook();
            }
        }
        self.inner.put_if_absent(name, bytes)
    }
    fn get(&self, name: &str) -> bunker_repo_format::Result<Vec<u8>> {
        self.inner.get(name)
    }
    fn get_range(
        &self,
        name: &str,
        offset: u64,
        length: u64,
    ) -> bunker_repo_format::Result<Vec<u8>> {
        self.inner.get_range(name, offset, length)
    }
    fn head(
        &self,
        name: &str,
    ) -> bunker_repo_format::Result<bunker_repo_format::backend::ObjectMeta> {
        self.inner.head(name)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> bunker_repo_format::Result<Vec<bunker_repo_format::backend::ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn delete(&self, name: &str) -> bunker_repo_format::Result<()> {
        self.inner.delete(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterPhase {
    Adding,
    Flush,
    Commit,
}

/// A file as the writer wrote it: its chunks, in order.
type FileChunks = Vec<(BlobId, Vec<u8>)>;

struct Writer<'a> {
    name: String,
    faulty: Arc<Faulty>,
    env: &'a WriterEnv,
    session: Option<ActiveSession>,
    blobs: BlobWriter<'a>,
    phase: WriterPhase,
    adds_left: u64,
    /// Path (`f3`, `sub/f7`, `common/c1`) to content.
    files: BTreeMap<String, FileChunks>,
    next_file: u64,
    tree: Option<BlobId>,
    /// Every tree blob of the snapshot.
    tree_blobs: Vec<BlobId>,
    sealing: Option<SealingSession>,
}

struct Pruner {
    name: String,
    faulty: Arc<Faulty>,
    repo: Repository,
    options: PruneOptions,
    plan: PrunePlan,
}

/// The files of a snapshot as written, by path.
type Expected = BTreeMap<String, Vec<u8>>;

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    steps: u64,
    writers_started: u64,
    snapshots_saved: u64,
    stale_aborts: u64,
    actors_crashed: u64,
    actors_killed: u64,
    organic_errors: u64,
    forgets: u64,
    prunes_planned: u64,
    prunes_done: u64,
    packs_deleted: u64,
    packs_recovered: u64,
    packs_repacked: u64,
    clock_jumps: u64,
    commits_suspended: u64,
    blobs_read: u64,
    check_micros: u64,
    step_micros: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.writers_started += o.writers_started;
        self.snapshots_saved += o.snapshots_saved;
        self.stale_aborts += o.stale_aborts;
        self.actors_crashed += o.actors_crashed;
        self.actors_killed += o.actors_killed;
        self.organic_errors += o.organic_errors;
        self.forgets += o.forgets;
        self.prunes_planned += o.prunes_planned;
        self.prunes_done += o.prunes_done;
        self.packs_deleted += o.packs_deleted;
        self.packs_recovered += o.packs_recovered;
        self.packs_repacked += o.packs_repacked;
        self.clock_jumps += o.clock_jumps;
        self.commits_suspended += o.commits_suspended;
        self.blobs_read += o.blobs_read;
        self.check_micros += o.check_micros;
        self.step_micros += o.step_micros;
    }
}

/// How a seed ended badly.
#[derive(Debug)]
struct Failure {
    seed: u64,
    step: u64,
    message: String,
    log: Vec<String>,
}

/// Options of one seed's run (tests of specific scenarios change them).
#[derive(Debug, Clone, Copy)]
struct SimOptions {
    steps: usize,
    faults: bool,
    /// Writers are sometimes suspended inside their commit, right before the snapshot
    /// write, while the clock jumps and a prune runs (`BUNKER_SIM_AVOID=commit-pauses`
    /// turns that off).
    pauses: bool,
    /// At most one prune at a time (`BUNKER_SIM_AVOID=concurrent-prunes`).
    single_prune: bool,
    /// Only grace periods above zero (`BUNKER_SIM_AVOID=zero-grace`).
    no_zero_grace: bool,
}

impl SimOptions {
    fn from_env() -> Self {
        let avoid = std::env::var("BUNKER_SIM_AVOID").unwrap_or_default();
        let avoid: Vec<&str> = avoid
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        for a in &avoid {
            assert!(
                ["commit-pauses", "concurrent-prunes", "zero-grace"].contains(a),
                "BUNKER_SIM_AVOID: unknown {a:?} (commit-pauses, concurrent-prunes, zero-grace)"
            );
        }
        Self {
            steps: env_u64("BUNKER_SIM_STEPS").map_or(DEFAULT_STEPS, |s| s as usize),
            faults: true,
            pauses: !avoid.contains(&"commit-pauses"),
            single_prune: avoid.contains(&"concurrent-prunes"),
            no_zero_grace: avoid.contains(&"zero-grace"),
        }
    }
}

struct Sim<'a> {
    seed: u64,
    options: SimOptions,
    rng: Rng,
    mem: Arc<MemoryBackend>,
    /// A fault-free view of the storage, for checking.
    checker: Repository,
    arena: &'a [OnceCell<WriterEnv>],
    writer_runs: usize,
    actor_serial: u64,
    writers: Vec<Writer<'a>>,
    pruners: Vec<Pruner>,
    /// Expected files, by root tree.
    expected: HashMap<BlobId, Arc<Expected>>,
    /// Snapshots seen at the last check.
    known_snapshots: BTreeSet<SnapshotId>,
    /// Snapshots a forget of this step may have removed.
    forgotten: BTreeSet<SnapshotId>,
    /// Blob locations already read back and verified (packs are immutable).
    verified: HashMap<BlobId, BlobLocation>,
    /// Decoded trees.
    trees: HashMap<BlobId, Tree>,
    /// Snapshots whose content was compared byte for byte.
    content_checked: HashSet<SnapshotId>,
    log: Vec<String>,
    stats: Stats,
    /// Errors that no injected fault explains, by kind and actor step.
    organic: BTreeMap<String, u64>,
    snapshot_clock: i64,
    pool: Vec<Arc<Vec<u8>>>,
}

/// A step's outcome for logging.
type StepResult = std::result::Result<String, String>;

fn error_text(e: &bunker_repo_format::Error) -> String {
    e.to_string()
}

fn short(id: &impl std::fmt::Display) -> String {
    id.to_string().chars().take(8).collect()
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{}m{}s", s / 3600, s % 3600 / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl<'a> Sim<'a> {
    fn new(seed: u64, options: SimOptions, arena: &'a [OnceCell<WriterEnv>]) -> Self {
        let mem = Arc::new(MemoryBackend::new());
        let checker = Repository::init(
            mem.clone() as Arc<dyn Backend>,
            PASSWORD,
            InitOptions {
                kdf: KdfParams::insecure_for_tests(),
                params: RepositoryParams {
                    pack_size: 1 << 20,
                    compression_level: 1,
                    ..RepositoryParams::default()
                },
                ..InitOptions::default()
            },
        )
        .expect("init");
        Self {
            seed,
            options,
            rng: Rng::new(seed),
            mem,
            checker,
            arena,
            writer_runs: 0,
            actor_serial: 0,
            writers: Vec::new(),
            pruners: Vec::new(),
            expected: HashMap::new(),
            known_snapshots: BTreeSet::new(),
            forgotten: BTreeSet::new(),
            verified: HashMap::new(),
            trees: HashMap::new(),
            content_checked: HashSet::new(),
            log: Vec::new(),
            stats: Stats::default(),
            organic: BTreeMap::new(),
            snapshot_clock: 1_700_000_000,
            pool: (0..POOL_CHUNKS)
                .map(|i| Arc::new(pool_chunk(seed, i)))
                .collect(),
        }
    }

    fn note(&mut self, text: impl Into<String>) {
        let line = format!("#{:<4} {}", self.stats.steps, text.into());
        self.log.push(line);
    }

    /// A new actor's backend: its own process, with its own faults.
    fn new_backend(&mut self) -> (Arc<Faulty>, String) {
        self.actor_serial += 1;
        let faulty = Arc::new(FaultyBackend::new(
            self.mem.clone(),
            mix(self.seed, self.actor_serial),
        ));
        let mut describe = "no faults".to_owned();
        if self.options.faults {
            let roll = self.rng.below(10);
            if roll < 2 {
                let rate = *self.rng.pick(&[0.01, 0.03, 0.08]);
                faulty.set_rates(FaultRates::uniform(rate));
                describe = format!("error rate {rate}");
            } else if roll < 4 {
                let n = self.rng.below(90);
                faulty.set_rates(FaultRates {
                    put_lands: 0.5,
                    delete_lands: 0.5,
                    ..FaultRates::NONE
                });
                faulty.crash_after(n);
                describe = format!("crash after {n} calls");
            }
        }
        (faulty, describe)
    }

    // ----- the step loop -----

    fn run(&mut self) -> Result<(), Failure> {
        for _ in 0..self.options.steps {
            self.stats.steps += 1;
            self.forgotten.clear();
            let t = Instant::now();
            self.guarded(Self::random_step)?;
            self.stats.step_micros += t.elapsed().as_micros() as u64;
            let t = Instant::now();
            self.check_or_fail()?;
            self.stats.check_micros += t.elapsed().as_micros() as u64;
        }
        self.drain()
    }

    /// Runs a step; a panic in the code under test fails the seed like a violation.
    fn guarded(&mut self, step: impl FnOnce(&mut Self)) -> Result<(), Failure> {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(self)));
        outcome.map_err(|payload| {
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "?".into());
            Failure {
                seed: self.seed,
                step: self.stats.steps,
                message: format!("PANIC in the code under test: {text}"),
                log: std::mem::take(&mut self.log),
            }
        })
    }

    fn check_or_fail(&mut self) -> Result<(), Failure> {
        match self.check() {
            Ok(()) => Ok(()),
            Err(message) => Err(Failure {
                seed: self.seed,
                step: self.stats.steps,
                message,
                log: std::mem::take(&mut self.log),
            }),
        }
    }

    fn random_step(&mut self) {
        let can_start_writer =
            self.writers.len() < MAX_CONCURRENT_WRITERS && self.writer_runs < self.arena.len();
        let mut choices: Vec<(u32, u8)> = Vec::new();
        if can_start_writer {
            choices.push((3, 0));
        }
        if !self.writers.is_empty() {
            choices.push((9, 1));
        }
        choices.push((2, 2)); // forget
        let max_prunes = if self.options.single_prune {
            1
        } else {
            MAX_CONCURRENT_PRUNES
        };
        if self.pruners.len() < max_prunes {
            choices.push((2, 3));
        }
        if !self.pruners.is_empty() {
            choices.push((3, 4));
        }
        choices.push((3, 5)); // clock
        if !self.writers.is_empty() || !self.pruners.is_empty() {
            choices.push((1, 6)); // kill
        }
        let total: u32 = choices.iter().map(|c| c.0).sum();
        let mut roll = self.rng.below(u64::from(total)) as u32;
        let mut action = choices[0].1;
        for (weight, a) in &choices {
            if roll < *weight {
                action = *a;
                break;
            }
            roll -= weight;
        }
        match action {
            0 => self.start_writer(),
            1 => {
                let i = self.rng.below(self.writers.len() as u64) as usize;
                self.step_writer(i);
            }
            2 => self.forget(),
            3 => self.plan_prune(),
            4 => {
                let i = self.rng.below(self.pruners.len() as u64) as usize;
                self.execute_prune(i);
            }
            5 => self.clock_jump(),
            _ => self.kill(),
        }
    }

    /// Logs a failed step: a crash when the actor's backend injected a fault during it,
    /// an "organic" error otherwise.
    fn failed(&mut self, who: &str, what: &str, faulty: &Faulty, injected_before: u64, e: &str) {
        if faulty.injected_faults() > injected_before {
            self.stats.actors_crashed += 1;
            self.note(format!(
                "{who} {what}: CRASHED ({e}); abandoned, session left open"
            ));
        } else {
            self.stats.organic_errors += 1;
            let kind = format!(
                "{} {what}: {}",
                who.trim_end_matches(|c: char| c.is_ascii_digit()),
                failure_kind(e)
            );
            *self.organic.entry(kind).or_default() += 1;
            self.note(format!(
                "{who} {what}: ERROR without injected fault: {e}; abandoned"
            ));
        }
    }

    // ----- writers -----

    fn start_writer(&mut self) {
        let slot = self.writer_runs;
        self.writer_runs += 1;
        self.stats.writers_started += 1;
        let name = format!("w{slot}");
        let (faulty, faults) = self.new_backend();
        let before = faulty.injected_faults();
        match self.open_writer(&name, &faulty, slot) {
            Ok(writer) => {
                let adds = writer.adds_left;
                let excluded = writer.env.index.len();
                self.note(format!(
                    "{name} start ({faults}): session {}, index {} blobs, {adds} add rounds",
                    writer
                        .session
                        .as_ref()
                        .map(|s| hex8(&s.id()))
                        .unwrap_or_default(),
                    excluded
                ));
                self.writers.push(writer);
            }
            Err(e) => self.failed(&name, "start", &faulty, before, &e),
        }
    }

    fn open_writer(
        &mut self,
        name: &str,
        faulty: &Arc<Faulty>,
        slot: usize,
    ) -> Result<Writer<'a>, String> {
        let pausing = Arc::new(PausingBackend {
            inner: faulty.clone(),
            hook: std::sync::Mutex::new(None),
        });
        let backend: Arc<dyn Backend> = pausing.clone();
        let repo = Repository::open(backend.clone(), PASSWORD).map_err(|e| error_text(&e))?;
        // The agent's order: heartbeat first, then plans, then the index.
        let session = ActiveSession::start(backend, repo.writer_key(), name, "backup", false)
            .map_err(|e| error_text(&e))?;
        let condemned = gc::condemned_packs(&repo).map_err(|e| error_text(&e))?;
        let mut loaded = repo.load_index().map_err(|e| error_text(&e))?;
        let stored = stored_packs(&repo).map_err(|e| error_text(&e))?;
        loaded.index.retain_packs(|pack| stored.contains_key(pack));
        let arena = self.arena;
        if arena[slot]
            .set(WriterEnv {
                repo,
                index: loaded.index,
                pausing,
            })
            .is_err()
        {
            panic!("arena slot {slot} used twice");
        }
        let env = arena[slot].get().expect("just set");
        let mut blobs = env.repo.blob_writer(&env.index);
        blobs.exclude_packs(condemned);
        Ok(Writer {
            name: name.to_owned(),
            faulty: faulty.clone(),
            env,
            session: Some(session),
            blobs,
            phase: WriterPhase::Adding,
            adds_left: self.rng.range(1, 3),
            files: BTreeMap::new(),
            next_file: 0,
            tree: None,
            tree_blobs: Vec::new(),
            sealing: None,
        })
    }

    fn step_writer(&mut self, i: usize) {
        let mut writer = self.writers.remove(i);
        let before = writer.faulty.injected_faults();
        let phase = writer.phase;
        let result = match phase {
            WriterPhase::Adding => self.writer_add(&mut writer),
            WriterPhase::Flush => self.writer_flush(&mut writer),
            WriterPhase::Commit => self.writer_commit(&mut writer),
        };
        let what = format!("{phase:?}").to_lowercase();
        match result {
            Ok(text) => {
                self.note(format!("{} {what}: {text}", writer.name));
                if writer.session.is_some() {
                    self.writers.insert(i, writer);
                }
            }
            Err(e) => {
                let name = writer.name.clone();
                let faulty = writer.faulty.clone();
                self.failed(&name, &what, &faulty, before, &e);
            }
        }
    }

    fn writer_add(&mut self, w: &mut Writer<'a>) -> StepResult {
        let files = self.rng.range(1, 4);
        let mut chunks_total = 0;
        let mut new_total = 0;
        let packs_before = w.blobs.stats().packs;
        for _ in 0..files {
            let n = w.next_file;
            w.next_file += 1;
            let path = match self.rng.below(4) {
                0 => format!("sub/f{n}"),
                1 if !w.files.keys().any(|p| p.starts_with("common/")) => {
                    // A directory every writer may have, with the same content: the same
                    // tree blob, deduplicated across writers.
                    let variant = self.rng.below(2);
                    for c in 0..3 {
                        let data = self.pool[(variant * 3 + c) as usize].to_vec();
                        let (id, new) = w
                            .blobs
                            .add(BlobKind::Data, &data)
                            .map_err(|e| error_text(&e))?;
                        chunks_total += 1;
                        new_total += u64::from(new);
                        w.files.insert(format!("common/c{c}"), vec![(id, data)]);
                    }
                    continue;
                }
                _ => format!("f{n}"),
            };
            let mut chunks = Vec::new();
            for _ in 0..self.rng.range(1, 4) {
                let data = if self.rng.chance(0.7) {
                    self.pool[self.rng.below(POOL_CHUNKS) as usize].to_vec()
                } else {
                    let k = self.rng.next_u64();
                    unique_chunk(self.seed, self.writer_runs, k)
                };
                let (id, new) = w
                    .blobs
                    .add(BlobKind::Data, &data)
                    .map_err(|e| error_text(&e))?;
                chunks_total += 1;
                new_total += u64::from(new);
                chunks.push((id, data));
            }
            w.files.insert(path, chunks);
        }
        w.adds_left -= 1;
        if w.adds_left == 0 {
            w.phase = WriterPhase::Flush;
        }
        Ok(format!(
            "{files} files, {chunks_total} chunks ({new_total} new), {} packs uploaded, {} dependencies",
            w.blobs.stats().packs - packs_before,
            w.blobs.dependencies().len()
        ))
    }

    fn writer_flush(&mut self, w: &mut Writer<'a>) -> StepResult {
        // Trees bottom-up, as the archiver writes them.
        let mut dirs: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for (path, chunks) in &w.files {
            let (dir, name) = match path.rsplit_once('/') {
                Some((dir, name)) => (dir.to_owned(), name),
                None => (String::new(), path.as_str()),
            };
            dirs.entry(dir).or_default().push(Entry {
                name: name.as_bytes().to_vec(),
                meta: Metadata::default(),
                node: Node::File {
                    extents: chunks
                        .iter()
                        .map(|(id, data)| Extent::Chunk {
                            id: *id,
                            length: data.len() as u32,
                        })
                        .collect(),
                },
            });
        }
        let mut root = dirs.remove("").unwrap_or_default();
        for (dir, entries) in dirs {
            let tree = Tree::new(entries).map_err(|e| e.to_string())?;
            let (subtree, _) = w
                .blobs
                .add(BlobKind::Tree, &tree.encode())
                .map_err(|e| error_text(&e))?;
            w.tree_blobs.push(subtree);
            root.push(Entry {
                name: dir.into_bytes(),
                meta: Metadata::default(),
                node: Node::Dir { subtree },
            });
        }
        let tree = Tree::new(root).map_err(|e| e.to_string())?;
        let (root_id, _) = w
            .blobs
            .add(BlobKind::Tree, &tree.encode())
            .map_err(|e| error_text(&e))?;
        w.tree = Some(root_id);
        w.tree_blobs.push(root_id);
        w.sealing = Some(w.blobs.session().clone());
        let expected: Expected = w
            .files
            .iter()
            .map(|(path, chunks)| {
                (
                    path.clone(),
                    chunks.iter().flat_map(|(_, d)| d.iter().copied()).collect(),
                )
            })
            .collect();
        self.expected
            .entry(root_id)
            .or_insert_with(|| Arc::new(expected));
        let packs_before = w.blobs.stats().packs;
        w.blobs.flush().map_err(|e| error_text(&e))?;
        w.phase = WriterPhase::Commit;
        Ok(format!(
            "root tree {}, {} packs uploaded ({} in all), {} dependencies",
            short(&root_id),
            w.blobs.stats().packs - packs_before,
            w.blobs.stats().packs,
            w.blobs.dependencies().len()
        ))
    }

    /// The agent's commit: [`gc::commit_snapshot`] (guard, snapshot write, guard again
    /// after a pause, final heartbeat). Sometimes the process is suspended inside it, right
    /// before the snapshot write, while the clock jumps and a prune runs.
    fn writer_commit(&mut self, w: &mut Writer<'a>) -> StepResult {
        self.snapshot_clock += 1;
        let snapshot = Snapshot {
            time: Timestamp {
                sec: self.snapshot_clock,
                nsec: 0,
            },
            host: w.name.clone(),
            username: "sim".into(),
            paths: vec![b"/sim".to_vec()],
            tags: vec![],
            parent: None,
            tree: w.tree.expect("flushed"),
            source_kind: Default::default(),
            consistency: Default::default(),
            consistency_detail: String::new(),
            excludes: vec![],
            summary: Summary::default(),
            errors: vec![],
            program_version: "gc-simulation".into(),
        };
        let pause_log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        if self.options.pauses && self.rng.chance(0.25) {
            let jump = *self
                .rng
                .pick(&[Duration::from_secs(961), Duration::from_secs(25 * 3600 + 3)]);
            let grace = if self.options.no_zero_grace {
                Duration::from_secs(1800)
            } else {
                *self.rng.pick(&[Duration::ZERO, Duration::from_secs(3600)])
            };
            let mem = self.mem.clone();
            let log = pause_log.clone();
            w.env.pausing.arm(Box::new(move || {
                mem.advance_clock(jump);
                let repo =
                    Repository::open(mem.clone() as Arc<dyn Backend>, PASSWORD).expect("open");
                let options = PruneOptions {
                    grace,
                    max_unused: 0.0,
                    ..PruneOptions::default()
                };
                let report = prune_plan(&repo, &options, false).and_then(|plan| prune(&repo, plan));
                log.lock().expect("log").push(format!(
                    "  (suspended before the snapshot write: clock +{}, prune grace {}: {})",
                    fmt_duration(jump),
                    fmt_duration(grace),
                    match report {
                        Ok(r) => format!(
                            "deleted {}, condemned {}, recovered {}",
                            r.deleted_packs, r.condemned_packs, r.recovered_packs
                        ),
                        Err(e) => format!("failed: {e}"),
                    }
                ));
            }));
        }
        // Known residual risk (see `found_a_late_snapshot_write_followed_by_a_crash_...`):
        // a process suspended between its commit check and its snapshot write for longer
        // than the grace period, that then dies or loses storage access before it can verify
        // and take back the snapshot, leaves a broken snapshot (`check` reports it, `repair
        // snapshots` fixes it). The default run does not combine the two; set
        // BUNKER_SIM_LATE_CRASH=1 to.
        let late_crash = std::env::var_os("BUNKER_SIM_LATE_CRASH").is_some();
        let paused_commit = w.env.pausing.is_armed();
        if paused_commit && !late_crash {
            w.faulty.set_enabled(false);
        }
        let session = w.session.take().expect("running writer has a session");
        let sealing = w.sealing.as_ref().expect("flushed");
        let result = gc::commit_snapshot(
            &w.env.repo,
            session,
            w.blobs.dependencies(),
            sealing,
            &snapshot,
        );
        if paused_commit && !late_crash {
            w.faulty.set_enabled(true);
        }
        let paused = !w.env.pausing.disarm() && self.options.pauses;
        let paused = paused && !pause_log.lock().expect("log").is_empty();
        if paused {
            self.stats.commits_suspended += 1;
        }
        let notes: Vec<String> = pause_log.lock().expect("log").drain(..).collect();
        for line in notes {
            self.note(line);
        }
        match result.map_err(|e| error_text(&e))? {
            Ok(id) => {
                self.stats.snapshots_saved += 1;
                Ok(format!(
                    "snapshot {} ({} dependencies)",
                    short(&id),
                    w.blobs.dependencies().len()
                ))
            }
            Err(refused) => {
                // As the agent does: no snapshot, and the session is left to time out.
                self.stats.stale_aborts += 1;
                Ok(format!(
                    "STALE: {} of {} dependencies lost after a {} pause; no snapshot",
                    refused.lost,
                    w.blobs.dependencies().len(),
                    fmt_duration(refused.paused)
                ))
            }
        }
    }

    // ----- forget -----

    fn forget(&mut self) {
        self.stats.forgets += 1;
        let (faulty, faults) = self.new_backend();
        let before = faulty.injected_faults();
        let result = (|| -> Result<Option<SnapshotId>, String> {
            let repo = Repository::open(faulty.clone() as Arc<dyn Backend>, PASSWORD)
                .map_err(|e| error_text(&e))?;
            let ids = repo.list_snapshot_ids().map_err(|e| error_text(&e))?;
            if ids.is_empty() {
                return Ok(None);
            }
            let mut sorted = ids.clone();
            sorted.sort();
            let id = sorted[self.rng.below(sorted.len() as u64) as usize];
            self.forgotten.insert(id);
            repo.delete_snapshot(&id).map_err(|e| error_text(&e))?;
            Ok(Some(id))
        })();
        match result {
            Ok(Some(id)) => self.note(format!("forget ({faults}): snapshot {}", short(&id))),
            Ok(None) => self.note("forget: no snapshot"),
            Err(e) => self.failed("forget", "delete", &faulty, before, &e),
        }
    }

    // ----- prune -----

    fn plan_prune(&mut self) {
        let (faulty, faults) = self.new_backend();
        let name = format!("p{}", self.actor_serial);
        let zero = if self.options.no_zero_grace {
            Duration::from_secs(1800)
        } else {
            Duration::ZERO
        };
        let grace = *self.rng.pick(&[
            zero,
            zero,
            Duration::from_secs(3600),
            Duration::from_secs(3 * 3600),
        ]);
        let max_unused = *self.rng.pick(&[0.0, 0.05, 0.3]);
        let options = PruneOptions {
            grace,
            max_unused,
            ..PruneOptions::default()
        };
        let before = faulty.injected_faults();
        let result = (|| -> Result<(Repository, PrunePlan), String> {
            let repo = Repository::open(faulty.clone() as Arc<dyn Backend>, PASSWORD)
                .map_err(|e| error_text(&e))?;
            let plan = prune_plan(&repo, &options, false).map_err(|e| error_text(&e))?;
            Ok((repo, plan))
        })();
        self.stats.prunes_planned += 1;
        match result {
            Ok((repo, plan)) => {
                let due: Vec<String> = plan
                    .due
                    .iter()
                    .map(|d| {
                        format!(
                            "{}: delete {} recover {}",
                            short(&d.name.trim_start_matches("gc/")),
                            d.delete.len(),
                            d.recovered.len()
                        )
                    })
                    .collect();
                let waiting: Vec<String> = plan
                    .waiting
                    .iter()
                    .map(|(n, why)| format!("{}: {why}", short(&n.trim_start_matches("gc/"))))
                    .collect();
                self.note(format!(
                    "{name} plan ({faults}, grace {}, max_unused {max_unused}): {} snapshots, {} used blobs, {} packs; condemn {}, repack {}, due [{}], waiting [{}]",
                    fmt_duration(grace),
                    plan.snapshots,
                    plan.used_blobs,
                    plan.packs.0,
                    plan.condemn.len(),
                    plan.repack.len(),
                    due.join("; "),
                    waiting.join("; ")
                ));
                self.pruners.push(Pruner {
                    name,
                    faulty,
                    repo,
                    options,
                    plan,
                });
            }
            Err(e) => self.failed(&name, "plan", &faulty, before, &e),
        }
    }

    fn execute_prune(&mut self, i: usize) {
        let pruner = self.pruners.remove(i);
        let before = pruner.faulty.injected_faults();
        let Pruner {
            name,
            faulty,
            repo,
            options,
            plan,
        } = pruner;
        match prune(&repo, plan) {
            Ok(report) => {
                self.stats.prunes_done += 1;
                self.stats.packs_deleted += report.deleted_packs as u64;
                self.stats.packs_recovered += report.recovered_packs as u64;
                self.stats.packs_repacked += report.repacked_packs as u64;
                self.note(format!(
                    "{name} execute (grace {}): deleted {}, recovered {}, condemned {} (repacked {}), plans executed {}, plan written {}, segments +{} -{}, heartbeats removed {}",
                    fmt_duration(options.grace),
                    report.deleted_packs,
                    report.recovered_packs,
                    report.condemned_packs,
                    report.repacked_packs,
                    report.plans_executed,
                    report.plan_written.as_deref().map(|p| short(&p.trim_start_matches("gc/"))).unwrap_or_else(|| "-".into()),
                    report.segments_written,
                    report.segments_removed,
                    report.heartbeats_removed
                ));
            }
            Err(e) => {
                let e = error_text(&e);
                self.failed(&name, "execute", &faulty, before, &e);
            }
        }
    }

    // ----- time and death -----

    fn clock_jump(&mut self) {
        self.stats.clock_jumps += 1;
        let jump = *self.rng.pick(&[
            Duration::from_secs(67),
            Duration::from_secs(433),
            Duration::from_secs(961),
            Duration::from_secs(961),
            Duration::from_secs(2 * 3600 + 7),
            Duration::from_secs(25 * 3600 + 3),
        ]);
        // Awake writers keep beating; asleep ones (a suspended laptop) do not. Nobody
        // stays awake through a day: that would take hundreds of heartbeats.
        let awake: Vec<bool> = (0..self.writers.len())
            .map(|_| jump <= Duration::from_secs(3 * 3600) && self.rng.chance(0.5))
            .collect();
        let mut left = jump;
        while !left.is_zero() {
            let sub = left.min(AWAKE_BEAT);
            self.mem.advance_clock(sub);
            left -= sub;
            for (writer, awake) in self.writers.iter().zip(&awake) {
                if *awake && let Some(session) = &writer.session {
                    // The heartbeat thread ignores a failed beat and tries again later.
                    let _ = session.beat();
                }
            }
        }
        let names: Vec<String> = self
            .writers
            .iter()
            .zip(&awake)
            .map(|(w, a)| format!("{}:{}", w.name, if *a { "awake" } else { "asleep" }))
            .collect();
        self.note(format!(
            "clock +{} [{}]",
            fmt_duration(jump),
            names.join(" ")
        ));
    }

    fn kill(&mut self) {
        let total = self.writers.len() + self.pruners.len();
        let i = self.rng.below(total as u64) as usize;
        self.stats.actors_killed += 1;
        if i < self.writers.len() {
            let writer = self.writers.remove(i);
            self.note(format!(
                "{} KILLED in phase {:?}",
                writer.name, writer.phase
            ));
        } else {
            let pruner = self.pruners.remove(i - self.writers.len());
            self.note(format!("{} KILLED between plan and execute", pruner.name));
        }
    }

    // ----- the end of a seed -----

    /// Finishes every actor without faults, lets every timeout and grace period pass,
    /// prunes twice, and checks that nothing is left but what snapshots use.
    fn drain(&mut self) -> Result<(), Failure> {
        self.note("--- drain: faults off, finish every actor ---");
        for w in &self.writers {
            w.faulty.set_enabled(false);
        }
        for p in &self.pruners {
            p.faulty.set_enabled(false);
        }
        while !self.writers.is_empty() {
            self.stats.steps += 1;
            self.guarded(|sim| sim.step_writer(0))?;
            self.check_or_fail()?;
        }
        while !self.pruners.is_empty() {
            self.stats.steps += 1;
            self.guarded(|sim| sim.execute_prune(0))?;
            self.check_or_fail()?;
        }
        self.options.faults = false;
        // With a grace period a plan is executed by the next round (the clock moves past
        // the grace period in between).
        let grace = if self.options.no_zero_grace {
            Duration::from_secs(1800)
        } else {
            Duration::ZERO
        };
        // Repacking may take a few rounds to settle (a repack that leaves a blob in a pack
        // another plan deletes gets that pack recovered, and repacked again next round).
        for round in 0..DRAIN_ROUNDS {
            self.stats.steps += 1;
            self.mem
                .advance_clock(2 * SESSION_TIMEOUT + Duration::from_secs(4 * 3600));
            self.note(format!(
                "drain prune {round} (grace {})",
                fmt_duration(grace)
            ));
            let options = PruneOptions {
                grace,
                max_unused: 0.0,
                ..PruneOptions::default()
            };
            let mut report = None;
            self.guarded(|sim| {
                let plan = prune_plan(&sim.checker, &options, false);
                if let Ok(plan) = &plan {
                    let line = describe_plan(&sim.checker, plan);
                    sim.note(line);
                }
                report = Some(plan.and_then(|plan| prune(&sim.checker, plan)));
            })?;
            let report = report.expect("ran");
            match report {
                Ok(r) => {
                    self.note(format!("  {r:?}"));
                    let quiet = r.deleted_packs == 0
                        && r.condemned_packs == 0
                        && r.plans_executed == 0
                        && r.segments_written == 0;
                    if quiet && round > 0 {
                        self.check_or_fail()?;
                        break;
                    }
                }
                Err(e) => {
                    return Err(Failure {
                        seed: self.seed,
                        step: self.stats.steps,
                        message: format!("fault-free prune failed at the end: {e}"),
                        log: std::mem::take(&mut self.log),
                    });
                }
            }
            self.check_or_fail()?;
        }
        match self.garbage_left() {
            Ok(()) => Ok(()),
            Err(message) => Err(Failure {
                seed: self.seed,
                step: self.stats.steps,
                message,
                log: std::mem::take(&mut self.log),
            }),
        }
    }

    /// After quiet prunes: no plan left, and every pack holds a blob some snapshot uses
    /// (a liveness check: failing it loses no data, but leaves garbage forever).
    fn garbage_left(&mut self) -> Result<(), String> {
        let repo = &self.checker;
        let plans = self
            .mem
            .object_names()
            .into_iter()
            .filter(|n| n.starts_with("gc/"))
            .count();
        let index = repo.load_index().map_err(|e| e.to_string())?.index;
        let stored = stored_packs(repo).map_err(|e| e.to_string())?;
        let stale = index
            .packs()
            .keys()
            .filter(|p| !stored.contains_key(*p))
            .count();
        if plans > 0 {
            return Err(format!(
                "{plans} GC plan(s) left after quiet prunes (the index names {stale} pack(s) that do not exist)"
            ));
        }
        let used = gc::used_blobs(repo, &index).map_err(|e| e.to_string())?;
        // A pack is used when any copy of a used blob is in it (duplicates included).
        let mut used_packs = HashSet::new();
        for segment in repo.list_index_ids().map_err(|e| e.to_string())? {
            let segment = repo
                .load_index_segment(&segment)
                .map_err(|e| e.to_string())?;
            for pack in &segment.packs {
                if pack.blobs.iter().any(|b| used.contains(&b.id)) {
                    used_packs.insert(pack.id);
                }
            }
        }
        let unused: Vec<String> = stored
            .keys()
            .filter(|p| !used_packs.contains(*p))
            .map(short)
            .collect();
        if !unused.is_empty() {
            return Err(format!(
                "{} pack(s) no snapshot uses survived quiet prunes: {unused:?}",
                unused.len()
            ));
        }
        Ok(())
    }

    // ----- the invariant -----

    fn check(&mut self) -> Result<(), String> {
        let ids: BTreeSet<SnapshotId> = self
            .checker
            .list_snapshot_ids()
            .map_err(|e| format!("listing snapshots: {e}"))?
            .into_iter()
            .collect();
        let vanished: Vec<String> = self
            .known_snapshots
            .difference(&ids)
            .filter(|id| !self.forgotten.contains(id))
            .map(short)
            .collect();
        if !vanished.is_empty() {
            return Err(format!(
                "snapshots disappeared without a forget: {vanished:?}"
            ));
        }
        self.known_snapshots = ids.clone();
        if ids.is_empty() {
            return Ok(());
        }
        let loaded = self
            .checker
            .load_index_for_reading()
            .map_err(|e| format!("loading the index: {e}"))?;
        if let Some((segment, e)) = loaded.damaged.first() {
            return Err(format!("index segment {segment} is damaged: {e}"));
        }
        let index = loaded.index;
        let stored = stored_packs(&self.checker).map_err(|e| format!("listing packs: {e}"))?;
        for id in &ids {
            let snapshot = self
                .checker
                .load_snapshot(id)
                .map_err(|e| format!("snapshot {} does not load: {e}", short(id)))?;
            let Some(expected) = self.expected.get(&snapshot.tree).cloned() else {
                return Err(format!(
                    "snapshot {} has root tree {} that no writer wrote",
                    short(id),
                    short(&snapshot.tree)
                ));
            };
            // Walk the trees; every blob must be indexed, in a stored pack, and readable.
            let mut files: BTreeMap<String, Vec<Extent>> = BTreeMap::new();
            let mut pending = vec![(String::new(), snapshot.tree)];
            while let Some((prefix, tree_id)) = pending.pop() {
                let what = format!(
                    "snapshot {} tree {} ({prefix:?})",
                    short(id),
                    short(&tree_id)
                );
                self.verify_blob(&index, &stored, &tree_id, &what)?;
                if !self.trees.contains_key(&tree_id) {
                    let tree = self
                        .checker
                        .load_tree(&index, &tree_id)
                        .map_err(|e| format!("{what}: does not decode: {e}"))?;
                    self.trees.insert(tree_id, tree);
                }
                let tree = &self.trees[&tree_id];
                let mut subtrees = Vec::new();
                for entry in tree.entries() {
                    let name = String::from_utf8_lossy(&entry.name).into_owned();
                    let path = if prefix.is_empty() {
                        name
                    } else {
                        format!("{prefix}/{name}")
                    };
                    match &entry.node {
                        Node::Dir { subtree } => subtrees.push((path, *subtree)),
                        Node::File { extents } => {
                            files.insert(path, extents.clone());
                        }
                        other => return Err(format!("{what}: unexpected {}", other.kind_name())),
                    }
                }
                pending.extend(subtrees);
            }
            for (path, extents) in &files {
                for extent in extents {
                    let Extent::Chunk { id: blob, .. } = extent else {
                        return Err(format!("snapshot {} {path}: unexpected hole", short(id)));
                    };
                    let what = format!("snapshot {} file {path} chunk {}", short(id), short(blob));
                    self.verify_blob(&index, &stored, blob, &what)?;
                }
            }
            if self.content_checked.insert(*id) {
                let paths: Vec<&String> = files.keys().collect();
                let want: Vec<&String> = expected.keys().collect();
                if paths != want {
                    return Err(format!(
                        "snapshot {}: files {paths:?}, expected {want:?}",
                        short(id)
                    ));
                }
                for (path, extents) in &files {
                    let mut content = Vec::new();
                    for extent in extents {
                        if let Extent::Chunk { id: blob, .. } = extent {
                            let bytes = self
                                .checker
                                .read_blob(&index, blob)
                                .map_err(|e| format!("snapshot {} file {path}: {e}", short(id)))?;
                            content.extend_from_slice(&bytes);
                        }
                    }
                    if content != expected[path] {
                        return Err(format!(
                            "snapshot {} file {path}: {} bytes read back differ from the {} written",
                            short(id),
                            content.len(),
                            expected[path].len()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The blob is indexed, its pack exists, and it reads back (once per location).
    fn verify_blob(
        &mut self,
        index: &Index,
        stored: &HashMap<bunker_repo_format::PackId, gc::StoredPack>,
        id: &BlobId,
        what: &str,
    ) -> Result<(), String> {
        let Some(location) = index.get(id) else {
            return Err(format!("{what}: not in the index"));
        };
        if !stored.contains_key(&location.pack) {
            let mut retained = index.clone();
            retained.retain_packs(|p| stored.contains_key(p));
            let fallback = match retained.get(id) {
                Some(l) => format!(
                    "another indexed copy exists in pack {}, but the index's first location is the missing one",
                    short(&l.pack)
                ),
                None => "no other copy is indexed".into(),
            };
            return Err(format!(
                "{what}: its pack {} is MISSING ({fallback})",
                short(&location.pack)
            ));
        }
        if self.verified.get(id) == Some(&location) {
            return Ok(());
        }
        self.stats.blobs_read += 1;
        self.checker.read_blob_at(id, &location).map_err(|e| {
            format!(
                "{what}: does not read back from pack {}: {e}",
                short(&location.pack)
            )
        })?;
        self.verified.insert(*id, location);
        Ok(())
    }
}

/// Every pack a plan touches, and for repacked and recovered packs which of their blobs
/// are used and where else those are stored.
fn describe_plan(repo: &Repository, plan: &PrunePlan) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "  plan: condemn {:?}; repack {:?}; due {:?}",
        plan.condemn.iter().map(|c| short(&c.0)).collect::<Vec<_>>(),
        plan.repack.iter().map(|c| short(&c.0)).collect::<Vec<_>>(),
        plan.due
            .iter()
            .map(|d| (
                d.delete.iter().map(|x| short(&x.0)).collect::<Vec<_>>(),
                d.recovered.iter().map(short).collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>()
    );
    let mut holders: HashMap<BlobId, Vec<String>> = HashMap::new();
    let stored = stored_packs(repo).unwrap_or_default();
    for id in repo.list_index_ids().unwrap_or_default() {
        if let Ok(segment) = repo.load_index_segment(&id) {
            for pack in &segment.packs {
                for blob in &pack.blobs {
                    holders.entry(blob.id).or_default().push(format!(
                        "{}{}@{}",
                        short(&pack.id),
                        if stored.contains_key(&pack.id) {
                            ""
                        } else {
                            "(gone)"
                        },
                        short(&id)
                    ));
                }
            }
        }
    }
    let index = repo.load_index().map(|l| l.index).unwrap_or_default();
    let used = gc::used_blobs(repo, &index).unwrap_or_default();
    let interesting: Vec<_> = plan
        .repack
        .iter()
        .map(|r| r.0)
        .chain(plan.due.iter().flat_map(|d| d.recovered.iter().copied()))
        .collect();
    for pack in interesting {
        for (blob, places) in &holders {
            if places.iter().any(|p| p.starts_with(&short(&pack))) {
                let _ = write!(
                    out,
                    "\n    pack {} blob {} used {} first {:?} holders {:?}",
                    short(&pack),
                    short(blob),
                    used.contains(blob),
                    index.get(blob).map(|l| short(&l.pack)),
                    places
                );
            }
        }
    }
    out
}

fn hex8(bytes: &[u8]) -> String {
    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Driving seeds
// ---------------------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

type Organic = BTreeMap<String, u64>;

fn run_seed(seed: u64, options: SimOptions) -> (Result<(), Failure>, Stats, Organic) {
    let arena: Vec<OnceCell<WriterEnv>> = (0..MAX_WRITER_RUNS).map(|_| OnceCell::new()).collect();
    let mut sim = Sim::new(seed, options, &arena);
    let result = sim.run();
    let stats = sim.stats;
    let organic = std::mem::take(&mut sim.organic);
    (result, stats, organic)
}

/// A failure message without its ids and paths, to group failures.
fn failure_kind(message: &str) -> String {
    message
        .split(' ')
        .map(|word| {
            let core = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            let hexish = core.len() >= 8 && core.bytes().all(|b| b.is_ascii_hexdigit());
            let pathish = word.starts_with("f") && word[1..].bytes().all(|b| b.is_ascii_digit())
                || word.contains('/');
            if hexish || pathish { "_" } else { word }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn report_failure(f: &Failure) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "=== INVARIANT VIOLATION: seed {} at step {} ===\n{}\n--- step log (replay: BUNKER_SIM_SEED={}) ---",
        f.seed, f.step, f.message, f.seed
    );
    for line in &f.log {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// One line per panic: the simulation catches panics of the code under test, and a
/// backtrace for each would bury the report.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        let text = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                info.payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
            })
            .unwrap_or_default();
        eprintln!("panicked{location}: {text}");
    }));
}

#[test]
fn gc_simulation() {
    quiet_panics();
    let options = SimOptions::from_env();
    let steps = options.steps;
    if let Some(seed) = env_u64("BUNKER_SIM_SEED") {
        // Object names are random, so a failure may need a few runs to come back.
        let repeat = env_u64("BUNKER_SIM_REPEAT").unwrap_or(20).max(1);
        for run in 1..=repeat {
            let (result, stats, _) = run_seed(seed, options);
            match result {
                Ok(()) if run == repeat => {
                    eprintln!("seed {seed}: ok in {repeat} runs; last run: {stats:?}");
                }
                Ok(()) => {}
                Err(f) => panic!("(run {run} of seed {seed})\n{}", report_failure(&f)),
            }
        }
        return;
    }
    let first = env_u64("BUNKER_SIM_FIRST_SEED").unwrap_or(0);
    let seeds = env_u64("BUNKER_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let threads = env_u64("BUNKER_SIM_THREADS").unwrap_or(2).max(1);
    let started = Instant::now();
    let results: Vec<(Vec<Failure>, Stats, Organic)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut stats = Stats::default();
                    let mut organic = Organic::new();
                    let mut seed = first + t;
                    while seed < first + seeds {
                        let (result, s, o) = run_seed(seed, options);
                        stats.add(&s);
                        for (kind, n) in o {
                            *organic.entry(kind).or_default() += n;
                        }
                        if let Err(f) = result {
                            eprintln!("seed {seed}: FAILED at step {}: {}", f.step, f.message);
                            failures.push(f);
                        }
                        seed += threads;
                    }
                    (failures, stats, organic)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("simulation thread"))
            .collect()
    });
    let mut failures: Vec<Failure> = Vec::new();
    let mut stats = Stats::default();
    let mut organic = Organic::new();
    for (f, s, o) in results {
        failures.extend(f);
        stats.add(&s);
        for (kind, n) in o {
            *organic.entry(kind).or_default() += n;
        }
    }
    for (kind, n) in &organic {
        eprintln!("{n} step(s) failed without an injected fault: {kind}");
    }
    failures.sort_by_key(|f| f.seed);
    let mut kinds: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for f in &failures {
        kinds
            .entry(failure_kind(&f.message))
            .or_default()
            .push(f.seed);
    }
    for (kind, seeds) in &kinds {
        eprintln!("{} seed(s): {kind}: {seeds:?}", seeds.len());
    }
    eprintln!(
        "gc simulation: seeds {first}..{} ({seeds} seeds x {steps} steps, {threads} threads) in {:.1} s; {} failed\n{stats:#?}",
        first + seeds,
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    if let Some(first_failure) = failures.first() {
        panic!(
            "{} of {} seeds violate the invariant: {failed:?}\n{}",
            failures.len(),
            seeds,
            report_failure(first_failure),
            failed = failures.iter().map(|f| f.seed).collect::<Vec<u64>>(),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Minimal reproductions of what the simulation found
// ---------------------------------------------------------------------------------------
//
// Each test below is a deterministic (or, where the index's choice between two copies of
// a blob decides, repeated) reproduction of one invariant violation the simulation found.
// They fail until the bug they describe is fixed in prune/gc/session/writer code.

mod found {
    use super::*;

    pub(super) fn repository() -> (Arc<MemoryBackend>, Repository) {
        let mem = Arc::new(MemoryBackend::new());
        let repo = Repository::init(
            mem.clone() as Arc<dyn Backend>,
            PASSWORD,
            InitOptions {
                kdf: KdfParams::insecure_for_tests(),
                params: RepositoryParams {
                    pack_size: 1 << 20,
                    compression_level: 1,
                    ..RepositoryParams::default()
                },
                ..InitOptions::default()
            },
        )
        .expect("init");
        (mem, repo)
    }

    /// A writer session as the agent runs it, stopped before its commit.
    pub(super) struct Session<'r> {
        pub(super) heartbeat: ActiveSession,
        pub(super) writer: BlobWriter<'r>,
        pub(super) tree: Option<BlobId>,
    }

    /// Starts a session the way the agent does (heartbeat, plans, index, stored packs).
    pub(super) fn start<'r>(repo: &'r Repository, index: &'r mut Index, host: &str) -> Session<'r> {
        let heartbeat = ActiveSession::start(
            Arc::clone(repo.backend()),
            repo.writer_key(),
            host,
            "backup",
            false,
        )
        .expect("session");
        let condemned = gc::condemned_packs(repo).expect("plans");
        *index = repo.load_index().expect("index").index;
        let stored = stored_packs(repo).expect("packs");
        index.retain_packs(|p| stored.contains_key(p));
        let mut writer = repo.blob_writer(index);
        writer.exclude_packs(condemned);
        Session {
            heartbeat,
            writer,
            tree: None,
        }
    }

    impl Session<'_> {
        /// Adds one file per content (`f0`, `f1`, ...), its tree, and flushes.
        pub(super) fn write(&mut self, contents: &[&[u8]]) {
            let mut entries = Vec::new();
            for (i, data) in contents.iter().enumerate() {
                let (id, _) = self.writer.add(BlobKind::Data, data).expect("add");
                entries.push(Entry {
                    name: format!("f{i}").into_bytes(),
                    meta: Metadata::default(),
                    node: Node::File {
                        extents: vec![Extent::Chunk {
                            id,
                            length: data.len() as u32,
                        }],
                    },
                });
            }
            let tree = Tree::new(entries).expect("tree");
            let (tree, _) = self
                .writer
                .add(BlobKind::Tree, &tree.encode())
                .expect("tree blob");
            self.tree = Some(tree);
            self.writer.flush().expect("flush");
        }

        /// Commits as the agent does ([`gc::commit_snapshot`]): the snapshot, or why the
        /// session refused to write it.
        pub(super) fn commit(self, repo: &Repository) -> Result<SnapshotId, gc::CommitRefused> {
            self.commit_result(repo).expect("commit")
        }

        /// [`Session::commit`], storage errors included.
        pub(super) fn commit_result(
            self,
            repo: &Repository,
        ) -> bunker_repo_format::Result<Result<SnapshotId, gc::CommitRefused>> {
            let snapshot = Snapshot {
                time: Timestamp::default(),
                host: "h".into(),
                username: "u".into(),
                paths: vec![b"/p".to_vec()],
                tags: vec![],
                parent: None,
                tree: self.tree.expect("written"),
                source_kind: Default::default(),
                consistency: Default::default(),
                consistency_detail: String::new(),
                excludes: vec![],
                summary: Summary::default(),
                errors: vec![],
                program_version: "t".into(),
            };
            gc::commit_snapshot(
                repo,
                self.heartbeat,
                self.writer.dependencies(),
                self.writer.session(),
                &snapshot,
            )
        }
    }

    /// A whole backup of `contents`.
    pub(super) fn backup(repo: &Repository, contents: &[&[u8]]) -> SnapshotId {
        let mut index = Index::new();
        let mut session = start(repo, &mut index, "h");
        session.write(contents);
        session
            .commit(repo)
            .expect("nothing can refuse this commit")
    }

    pub(super) fn prune_now(repo: &Repository, grace: Duration, max_unused: f64) {
        let options = PruneOptions {
            grace,
            max_unused,
            ..PruneOptions::default()
        };
        let plan = prune_plan(repo, &options, false).expect("plan");
        prune(repo, plan).expect("prune");
    }

    /// Every blob of every snapshot reads back through the index, as restore reads it.
    pub(super) fn unreadable_blobs(repo: &Repository) -> Vec<String> {
        let index = repo.load_index_for_reading().expect("index").index;
        let mut problems = Vec::new();
        for id in repo.list_snapshot_ids().expect("snapshots") {
            let snapshot = repo.load_snapshot(&id).expect("snapshot");
            let tree = match repo.load_tree(&index, &snapshot.tree) {
                Ok(tree) => tree,
                Err(e) => {
                    problems.push(format!("snapshot {}: root tree: {e}", short(&id)));
                    continue;
                }
            };
            for entry in tree.entries() {
                if let Node::File { extents } = &entry.node {
                    for extent in extents {
                        if let Extent::Chunk { id: blob, .. } = extent
                            && let Err(e) = repo.read_blob(&index, blob)
                        {
                            problems.push(format!(
                                "snapshot {} file {}: {e}",
                                short(&id),
                                String::from_utf8_lossy(&entry.name)
                            ));
                        }
                    }
                }
            }
        }
        problems
    }

    pub(super) const ZERO: Duration = Duration::ZERO;
    pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);
    pub(super) const HOUR: Duration = Duration::from_secs(3600);
    pub(super) const ASLEEP: Duration = Duration::from_secs(16 * 60);
}

/// Bug (simulation seeds 11, 26, 40, ... "tree not in the index"): the commit check
/// ([`gc::lost_dependencies`]) validates only the existing packs the session deduplicated
/// against, not the packs the session uploaded itself. A laptop that sleeps between
/// uploading its packs (and index segment) and writing its snapshot looks dead to prune,
/// whose packs are unreferenced, so prune condemns them and, once the grace period has
/// passed, deletes them. The laptop wakes up, the check passes (it reused nothing), and the
/// snapshot it writes points at deleted packs. With the default grace of 24 h it takes a
/// weekend of sleep; the same holds for packs uploaded before the session's first index
/// segment (condemned as "leftovers").
///
/// Status: fixed while the simulation was written (the writer's dependencies now include
/// the packs it uploaded); kept as a regression test.
#[test]
fn found_a_paused_writer_commits_a_snapshot_of_packs_prune_deleted_while_it_slept() {
    use found::*;
    let (mem, repo) = repository();
    let mut index = Index::new();
    let mut laptop = start(&repo, &mut index, "laptop");
    laptop.write(&[&bytes_for(1, 50_000)]);
    // Friday evening: the lid closes. Saturday's prune condemns the unreferenced packs,
    // Sunday's deletes them.
    mem.advance_clock(ASLEEP);
    prune_now(&repo, DAY, 0.05);
    mem.advance_clock(DAY + HOUR);
    prune_now(&repo, DAY, 0.05);
    // Monday: the backup resumes and commits as the agent does.
    if laptop.commit(&repo).is_err() {
        return; // refused: nothing broken was written
    }
    let problems = unreadable_blobs(&repo);
    assert!(
        problems.is_empty(),
        "the commit check passed after a weekend asleep, and the new snapshot is broken: {problems:?}"
    );
}

/// The same bug for a pack uploaded before the session's first index segment
/// (simulation seed 273: "its pack is MISSING, no other copy is indexed"): a long backup
/// uploads a full pack, the machine sleeps, prune condemns the unindexed pack as the
/// leftover of a dead session and deletes it; on waking the session indexes the deleted
/// pack, passes the commit check and commits a broken snapshot.
///
/// Status: fixed with the previous one; kept as a regression test.
#[test]
fn found_a_paused_writer_indexes_and_commits_a_pack_prune_deleted_as_a_leftover() {
    use found::*;
    let (mem, repo) = repository();
    let mut index = Index::new();
    let mut laptop = start(&repo, &mut index, "laptop");
    let big = bytes_for(3, 1_100_000);
    let (id, _) = laptop.writer.add(BlobKind::Data, &big).expect("add");
    assert_eq!(
        laptop.writer.stats().packs,
        1,
        "a full pack is uploaded, not yet indexed"
    );
    mem.advance_clock(ASLEEP);
    prune_now(&repo, ZERO, 0.05); // the leftover of a dead session: deleted
    let mut entries = vec![Entry {
        name: b"big".to_vec(),
        meta: Metadata::default(),
        node: Node::File {
            extents: vec![Extent::Chunk {
                id,
                length: big.len() as u32,
            }],
        },
    }];
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let tree = Tree::new(entries).expect("tree");
    let (tree, _) = laptop
        .writer
        .add(BlobKind::Tree, &tree.encode())
        .expect("tree");
    laptop.tree = Some(tree);
    laptop
        .writer
        .flush()
        .expect("flush: indexes the deleted pack");
    if laptop.commit(&repo).is_err() {
        return; // refused: nothing broken was written
    }
    let problems = unreadable_blobs(&repo);
    assert!(
        problems.is_empty(),
        "a backup that slept with an uploaded pack committed a broken snapshot: {problems:?}"
    );
}

/// Bug (simulation seeds 105, 150, ...): the commit check and the snapshot write are two
/// steps. A process suspended right after the check (laptop lid, SIGSTOP, a VM paused by
/// its host) for longer than the session timeout looks dead; a prune then deletes the
/// packs the check just validated, and the snapshot written on resume is broken. A check
/// before the write cannot close this; [`gc::commit_snapshot`] (added while this was
/// written) checks again after the write when the write came late, and removes the
/// snapshot. Here the suspension happens inside `commit_snapshot`, right before the
/// snapshot reaches storage.
///
/// Status: fixed by `gc::commit_snapshot`; kept as a regression test. A crash right after
/// the late write still leaves the broken snapshot: see
/// `found_a_late_snapshot_write_followed_by_a_crash_leaves_a_broken_snapshot`.
#[test]
fn found_a_pause_between_the_commit_check_and_the_snapshot_write_breaks_the_snapshot() {
    use found::*;
    let (mem, _) = repository();
    let pausing = Arc::new(PausingBackend {
        inner: mem.clone(),
        hook: std::sync::Mutex::new(None),
    });
    let repo = Repository::open(pausing.clone() as Arc<dyn Backend>, PASSWORD).expect("open");
    let mut index = Index::new();
    let mut writer = start(&repo, &mut index, "vm");
    writer.write(&[&bytes_for(2, 50_000)]);
    let world = mem.clone();
    pausing.arm(Box::new(move || {
        world.advance_clock(ASLEEP);
        let other = Repository::open(world.clone() as Arc<dyn Backend>, PASSWORD).expect("open");
        prune_now(&other, ZERO, 0.05);
    }));
    let committed = writer.commit(&repo);
    assert!(!pausing.disarm(), "the suspension happened");
    let problems = unreadable_blobs(&repo);
    assert!(
        problems.is_empty(),
        "a snapshot written after a suspension inside the commit is broken ({committed:?}): {problems:?}"
    );
}

/// Bug (simulation seeds 8, 50, 84, 124, ... "chunk not in the index", also single
/// fault-free prunes at the end of a seed): with a grace of zero, [`prune`] decides the
/// due plans and its own new plan separately, each treating the other's packs as
/// surviving, and its repack writer deduplicates against packs of the due plans. A used
/// blob X stored in a pack P1 condemned by an older (now due) plan and in a mostly unused
/// pack R that this run repacks: deciding the due plan, R still holds X, so P1 goes;
/// repacking R, the index's first copy of X is in P1 (not excluded), so X is not copied;
/// deciding the new plan, P1 still holds X, so R goes. Both go; X is lost.
///
/// Getting there takes two long backups overlapping a prune: one (W2) stores X anew in
/// R because it started before X existed; the other (W4) started before the plan and
/// deduplicates X against P1. Whether the index names P1 or R first depends on object
/// names, so this tries a few repositories.
///
/// Status: fixed in prune.rs while the simulation was written (the repack writer now
/// excludes every condemned pack); kept as a regression test.
#[test]
fn found_zero_grace_prune_deletes_both_copies_of_a_used_blob() {
    use found::*;
    for attempt in 0..12 {
        let (mem, repo) = repository();
        let x = bytes_for(10, 20_000);
        let filler = bytes_for(11, 400_000);
        let mut w2_index = Index::new();
        let mut w2 = start(&repo, &mut w2_index, "w2"); // knows nothing yet
        let first = backup(&repo, &[&x]); // X in P1
        repo.delete_snapshot(&first).expect("forget");
        let mut w4_index = Index::new();
        let mut w4 = start(&repo, &mut w4_index, "w4"); // knows X in P1
        prune_now(&repo, HOUR, 0.05); // G1 condemns P1; W2 and W4 hold it back
        w2.write(&[&x, &filler]); // X anew, in R, with what will be garbage
        let both = w2.commit(&repo).expect("commit");
        w4.write(&[&x]); // deduplicated against P1
        w4.commit(&repo).expect("commit");
        repo.delete_snapshot(&both).expect("forget");
        mem.advance_clock(2 * HOUR);
        prune_now(&repo, ZERO, 0.0); // G1 is due, R is mostly garbage: repacked
        let problems = unreadable_blobs(&repo);
        assert!(
            problems.is_empty(),
            "attempt {attempt}: one fault-free prune with grace 0 lost a used blob: {problems:?}"
        );
    }
}

/// Bug (simulation seeds 108, 137, ...: "its pack is MISSING, another indexed copy
/// exists"; fixed in prune.rs while the simulation was written: phase 2 now lists the
/// segments afresh; kept as a regression test): [`prune`] rewrote the index segments it
/// loaded when it *planned*. When another prune ran in between (cron runs overlapping, or
/// a prune paused between plan and execution), the rewrite worked from segments that no
/// longer existed and left, or brought back, index entries for packs that are deleted. Restore, check and later prunes trust
/// those entries: a blob whose first indexed copy is in a deleted pack cannot be restored
/// even though another copy exists, and pack listings appear twice (see the next test).
#[test]
fn found_overlapping_prunes_leave_index_entries_for_deleted_packs() {
    use found::*;
    let (mem, repo) = repository();
    // One session, one index segment S holding a pack Pa (only garbage) and the packs of
    // a snapshot: Pb (data) and T (tree).
    let mut index = Index::new();
    let mut session = start(&repo, &mut index, "h");
    session
        .writer
        .add(BlobKind::Data, &bytes_for(22, 1_100_000))
        .expect("fills and uploads Pa");
    session.write(&[&bytes_for(21, 30_000)]);
    let snapshot = session.commit(&repo).expect("commit");
    prune_now(&repo, HOUR, 0.05); // G0 condemns Pa
    mem.advance_clock(2 * HOUR);
    repo.delete_snapshot(&snapshot).expect("forget"); // Pb and T are garbage now
    // A backup starts; two prunes plan at the same time.
    let running = ActiveSession::start(
        Arc::clone(repo.backend()),
        repo.writer_key(),
        "b",
        "backup",
        false,
    )
    .expect("session");
    let options = PruneOptions {
        grace: ZERO,
        ..PruneOptions::default()
    };
    let first = prune_plan(&repo, &options, false).expect("plan 1");
    let second = prune_plan(&repo, &options, false).expect("plan 2");
    // The first deletes Pa (G0 is due) and rewrites S as {Pb, T}; its own plan for Pb and
    // T waits for the running backup.
    prune(&repo, first).expect("prune 1");
    running.end().expect("end");
    // The second deletes Pb and T, rewriting the S it loaded (already gone).
    prune(&repo, second).expect("prune 2");
    let stored = stored_packs(&repo).expect("packs");
    let index = repo.load_index().expect("index").index;
    let missing: Vec<String> = index
        .packs()
        .keys()
        .filter(|p| !stored.contains_key(*p))
        .map(short)
        .collect();
    assert!(
        missing.is_empty(),
        "after two overlapping prunes the index names deleted packs: {missing:?}"
    );
}

/// Bug (simulation seeds 66, 88, 209, 232, ...: "attempt to subtract with overflow" at
/// prune.rs `found.size - dead_bytes`): when a pack is listed in two index segments (a
/// prune killed after writing its new segments and before removing the old ones; or the
/// overlapping prunes above), [`prune_plan`] counts that pack's dead bytes twice. In a
/// debug build it panics; in a release build the live-byte count wraps and the repack
/// choice and "unused space" figures are garbage. Tried at every crash point of a prune.
///
/// Status: the panic is fixed in prune.rs (saturating arithmetic) while the simulation was
/// written; duplicate listings after such a crash remain possible. Kept as a regression
/// test.
#[test]
fn found_a_prune_killed_mid_rewrite_makes_the_next_prune_panic() {
    use found::*;
    quiet_panics();
    let mut failures = Vec::new();
    for crash_at in 0..80 {
        let (_mem, repo) = repository();
        let mut index = Index::new();
        let mut session = start(&repo, &mut index, "h");
        session
            .writer
            .add(BlobKind::Data, &bytes_for(33, 1_100_000))
            .expect("fills and uploads D, garbage");
        session
            .writer
            .add(BlobKind::Data, &bytes_for(35, 600_000))
            .expect("garbage in K");
        session.write(&[&bytes_for(34, 10_000)]); // the snapshot's file, also in K
        session.commit(&repo).expect("commit");
        // A prune, killed after `crash_at` calls.
        let faulty = Arc::new(FaultyBackend::new(repo.backend().clone(), crash_at));
        faulty.crash_after(crash_at);
        let killed = Repository::open(faulty.clone() as Arc<dyn Backend>, PASSWORD).and_then(|r| {
            let options = PruneOptions {
                grace: ZERO,
                max_unused: 1.0,
                ..PruneOptions::default()
            };
            prune(&r, prune_plan(&r, &options, false)?)
        });
        // The next prune, fault-free.
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            prune_now(&repo, ZERO, 1.0);
        }));
        if let Err(payload) = next {
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!(
                "killed after {crash_at} calls ({}): next prune panicked: {text}",
                if killed.is_ok() { "finished" } else { "died" }
            ));
            continue;
        }
        let problems = unreadable_blobs(&repo);
        if !problems.is_empty() {
            failures.push(format!("killed after {crash_at} calls: {problems:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Bug (the CLI race test `cli/tests/gc_concurrency.rs` fails about one race in five with
/// "tree ... of snapshot ... is unreadable (not in the index); refusing to collect
/// garbage"; the simulation counts these as errors without an injected fault): [`prune`]
/// repacks with `used_blobs` over the *current* snapshots but the index segments loaded at
/// planning time, so any backup that finishes between the two (on a real repository the
/// repack takes minutes) has trees that view does not know, and the prune fails. It fails
/// safely, but routinely: with backups running around the clock, prunes that repack rarely
/// finish. (`prune_plan` has the same, narrower, window between loading the segments and
/// listing the snapshots.) Listing the snapshots before loading the index closes both.
#[test]
fn found_a_backup_finishing_during_a_prune_makes_the_prune_fail() {
    use found::*;
    let (_mem, repo) = repository();
    let keep = bytes_for(41, 30_000);
    let all = backup(&repo, &[&keep, &bytes_for(42, 400_000)]);
    backup(&repo, &[&keep]);
    repo.delete_snapshot(&all).expect("forget");
    let options = PruneOptions {
        grace: ZERO,
        max_unused: 0.0,
        ..PruneOptions::default()
    };
    let plan = prune_plan(&repo, &options, false).expect("plan");
    assert!(
        !plan.repack.is_empty(),
        "the mostly unused pack is to be repacked"
    );
    backup(&repo, &[&bytes_for(43, 10_000)]); // a backup finishes meanwhile
    let result = prune(&repo, plan);
    assert!(
        result.is_ok(),
        "a prune failed because a backup finished while it ran: {}",
        result.err().map(|e| e.to_string()).unwrap_or_default()
    );
    assert!(unreadable_blobs(&repo).is_empty());
}

/// Bug (simulation seed 2: "tree not in the index"): [`gc::commit_snapshot`] writes the
/// snapshot and only then, if the write came late, checks again and deletes a snapshot
/// that lost its packs. A process suspended right before the write (long enough for a
/// prune to delete its packs) that dies or loses the storage right after the write (the
/// second check fails with an I/O error) leaves the broken snapshot in place.
///
/// Open: this is the residual risk of writing without locks. It needs a suspension longer
/// than the grace period (24 h by default) between two consecutive calls of the commit,
/// and then a crash before the write is verified. `check` names such a snapshot and
/// `repair snapshots` rewrites it. Run it with `--ignored`.
#[test]
#[ignore = "known residual risk, documented; see the comment"]
fn found_a_late_snapshot_write_followed_by_a_crash_leaves_a_broken_snapshot() {
    use found::*;
    let (mem, _) = repository();
    let faulty = Arc::new(FaultyBackend::new(mem.clone(), 7));
    let pausing = Arc::new(PausingBackend {
        inner: faulty.clone(),
        hook: std::sync::Mutex::new(None),
    });
    let repo = Repository::open(pausing.clone() as Arc<dyn Backend>, PASSWORD).expect("open");
    let mut index = Index::new();
    let mut writer = start(&repo, &mut index, "vm");
    writer.write(&[&bytes_for(5, 50_000)]);
    let (world, process) = (mem.clone(), faulty.clone());
    pausing.arm(Box::new(move || {
        world.advance_clock(ASLEEP);
        let other = Repository::open(world.clone() as Arc<dyn Backend>, PASSWORD).expect("open");
        prune_now(&other, ZERO, 0.05);
        // The snapshot write and its `head` go through; the process dies after them.
        process.crash_after(2);
    }));
    let committed = writer.commit_result(&repo);
    assert!(committed.is_err(), "the process died inside the commit");
    let checker = Repository::open(mem.clone() as Arc<dyn Backend>, PASSWORD).expect("open");
    let problems = unreadable_blobs(&checker);
    assert!(
        problems.is_empty(),
        "a suspension before the snapshot write and a crash after it left a broken snapshot: {problems:?}"
    );
}

/// Bug (simulation seeds 10, 24, 273, 314: "its pack is MISSING, another indexed copy
/// exists, but the index's first location is the missing one"): a backup that slept after
/// uploading a pack loses it to prune (an unindexed leftover), wakes up and writes its
/// index segment anyway, naming the deleted pack. Its own commit is then refused, but the
/// segment stays, and for every blob that pack held the index may now name the deleted pack
/// first: restoring *another*, healthy snapshot that shares such a blob fails (restore
/// reads through `load_index` without dropping missing packs; `check` drops them, so it
/// reports nothing). Which copy the index names first depends on object names, so this
/// tries a few repositories.
#[test]
fn found_a_writer_that_lost_its_pack_indexes_it_and_breaks_restores_of_other_snapshots() {
    use found::*;
    for attempt in 0..12 {
        let (mem, repo) = repository();
        let shared = bytes_for(6, 40_000);
        let mut index = Index::new();
        let mut laptop = start(&repo, &mut index, "laptop");
        laptop.writer.add(BlobKind::Data, &shared).expect("add");
        laptop
            .writer
            .add(BlobKind::Data, &bytes_for(7, 1_100_000))
            .expect("fills and uploads the pack holding the shared blob");
        mem.advance_clock(ASLEEP);
        prune_now(&repo, ZERO, 0.05); // the unindexed leftover of a dead session: deleted
        backup(&repo, &[&shared]); // a healthy snapshot with the same blob
        laptop.write(&[&shared]); // wakes up: indexes the deleted pack
        let _ = laptop.commit(&repo); // refused or not, the segment stays
        let problems = unreadable_blobs(&repo);
        assert!(
            problems.is_empty(),
            "attempt {attempt}: a healthy snapshot no longer restores: {problems:?}"
        );
    }
}
