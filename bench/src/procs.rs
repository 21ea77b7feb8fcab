//! Resource use: the services' CPU seconds and peak resident memory from
//! `/proc/<pid>` (pids from the local stack's pid files), the load
//! generator's own CPU from `getrusage`, and a description of the machine.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A process whose use is measured.
#[derive(Debug, Clone, Serialize)]
pub struct Watched {
    /// What it is.
    pub name: String,
    /// Its pid, and for Postgres the postmaster whose children count too.
    pub pid: i32,
    /// Whether its children count (Postgres backends).
    pub with_children: bool,
}

/// One process's use during a workload.
#[derive(Debug, Clone, Serialize)]
pub struct ProcUse {
    /// What it is.
    pub name: String,
    /// CPU seconds (user + system) used during the workload.
    pub cpu_s: f64,
    /// Largest resident set seen during the workload, in MiB.
    pub peak_rss_mib: f64,
}

/// Resource use during one workload.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Resources {
    /// Wall time of the workload (warm-up included), seconds.
    pub wall_s: f64,
    /// The load generator's CPU seconds (user + system).
    pub loadgen_cpu_s: f64,
    /// The load generator's CPU as a share of one core, percent.
    pub loadgen_cpu_pct: f64,
    /// Each service.
    pub services: Vec<ProcUse>,
    /// Seconds the workload waited, before it started, for the relay, the
    /// projector and the reactors to catch up with earlier work (NaN: they
    /// did not within the patience).
    pub settle_s: f64,
    /// Postgres's transaction and WAL counters over the workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg: Option<PgCounters>,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A pid's parent, its own CPU seconds and those of its children it has
/// reaped (user + system), from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(i32, f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15,
    // cutime 16, cstime 17.
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = |i: usize| -> Option<f64> { f.get(i)?.parse().ok() };
    let own = ticks(11)? + ticks(12)?;
    let reaped = ticks(13)? + ticks(14)?;
    Some((ppid, own / clock_ticks(), reaped / clock_ticks()))
}

/// Resident set of a pid in KiB.
fn rss_kib(pid: i32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn children(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| stat(*p).is_some_and(|(pp, ..)| pp == parent))
        .collect()
}

/// CPU seconds and RSS (KiB) of a watched process (and its children: those
/// alive and those that exited, whose time the parent has reaped, so that a
/// Postgres backend ending mid-workload keeps its share).
fn sample(w: &Watched) -> (f64, f64) {
    let mut cpu = 0.0;
    let mut rss = rss_kib(w.pid).unwrap_or(0.0);
    if let Some((_, own, reaped)) = stat(w.pid) {
        cpu += own + if w.with_children { reaped } else { 0.0 };
    }
    if w.with_children {
        for p in children(w.pid) {
            cpu += stat(p).map_or(0.0, |s| s.1);
            rss += rss_kib(p).unwrap_or(0.0);
        }
    }
    (cpu, rss)
}

/// Whether a pid is alive.
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The load generator's own CPU seconds (user + system).
pub fn self_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Samples the watched processes until finished.
pub struct Probe {
    watched: Vec<Watched>,
    started: Instant,
    cpu0: f64,
    base: Vec<f64>,
    peaks: Arc<Mutex<Vec<f64>>>,
    stop: Arc<AtomicBool>,
    task: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    /// Starts sampling every 200 ms.
    pub fn start(watched: &[Watched]) -> Probe {
        let watched = watched.to_vec();
        let base: Vec<f64> = watched.iter().map(|w| sample(w).0).collect();
        let peaks = Arc::new(Mutex::new(vec![0.0f64; watched.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (watched, peaks, stop) = (watched.clone(), peaks.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (i, w) in watched.iter().enumerate() {
                        let rss = sample(w).1;
                        let mut p = peaks.lock().expect("peaks");
                        p[i] = p[i].max(rss);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        Probe {
            watched,
            started: Instant::now(),
            cpu0: self_cpu(),
            base,
            peaks,
            stop,
            task: Some(task),
        }
    }

    /// Stops sampling and returns what was used since the start.
    pub fn finish(mut self) -> Resources {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.join();
        }
        let wall = self.started.elapsed().as_secs_f64();
        let cpu = self_cpu() - self.cpu0;
        let peaks = self.peaks.lock().expect("peaks").clone();
        let services = self
            .watched
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let (cpu, rss) = sample(w);
                ProcUse {
                    name: w.name.clone(),
                    cpu_s: (cpu - self.base[i]).max(0.0),
                    peak_rss_mib: peaks[i].max(rss) / 1024.0,
                }
            })
            .collect();
        Resources {
            wall_s: wall,
            loadgen_cpu_s: cpu,
            loadgen_cpu_pct: 100.0 * cpu / wall.max(1e-9),
            services,
            settle_s: 0.0,
            pg: None,
        }
    }
}

/// Postgres's counters, or their growth over a workload.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct PgCounters {
    /// Transactions committed in the stack's database
    /// (`pg_stat_database.xact_commit`: every backend's, the projector's,
    /// relay's and reactors' included, and every autocommitted statement,
    /// a read-only one too).
    pub transactions: u64,
    /// Durable WAL flushes of the whole server (`pg_stat_wal.wal_sync`: a
    /// commit's flush, also for many commits at once, and the WAL
    /// writer's).
    pub wal_flushes: u64,
}

impl PgCounters {
    /// The growth from `before` to `self`.
    pub fn since(self, before: PgCounters) -> PgCounters {
        PgCounters {
            transactions: self.transactions.saturating_sub(before.transactions),
            wal_flushes: self.wal_flushes.saturating_sub(before.wal_flushes),
        }
    }
}

/// Whose CPU [`Resources::cpu_per_op_us`] counts.
#[derive(Debug, Clone, Copy)]
pub enum CpuOf<'a> {
    /// The load generator (this process) and every service.
    All,
    /// The load generator (this process) only.
    LoadGen,
    /// One service, by its name.
    Service(&'a str),
}

impl Resources {
    /// Microseconds of CPU per operation at `rate` operations per second
    /// (taken as steady over the whole wall time, warm-up included).
    pub fn cpu_per_op_us(&self, rate: f64, of: CpuOf) -> f64 {
        let services = |name: Option<&str>| -> f64 {
            self.services
                .iter()
                .filter(|s| name.is_none_or(|n| s.name == n))
                .map(|s| s.cpu_s)
                .sum()
        };
        let cpu = match of {
            CpuOf::All => self.loadgen_cpu_s + services(None),
            CpuOf::LoadGen => self.loadgen_cpu_s,
            CpuOf::Service(name) => services(Some(name)),
        };
        1e6 * cpu / (rate * self.wall_s).max(1e-9)
    }

    /// Postgres's counters per operation at `rate` operations per second
    /// (taken as steady over the whole wall time, like the CPU):
    /// transactions, WAL flushes.
    pub fn pg_per_op(&self, rate: f64) -> Option<(f64, f64)> {
        let pg = self.pg.as_ref()?;
        let ops = (rate * self.wall_s).max(1e-9);
        Some((pg.transactions as f64 / ops, pg.wal_flushes as f64 / ops))
    }
}

/// The machine the run is on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Postgres version string.
    pub postgres: String,
    /// Kafka bootstrap servers.
    pub broker: String,
}

impl Machine {
    /// Describes this machine.
    pub fn describe(postgres: String, broker: String) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".into(), |(_, v)| v.trim().to_string());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (mem / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            postgres,
            broker,
        }
    }
}
