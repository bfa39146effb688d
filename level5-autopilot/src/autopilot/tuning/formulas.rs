//! The tuning formulas: postgresql.conf's memory and parallelism
//! parameters from the container's memory limit and CPU limit.
//!
//! They follow PGTune (le0pard/pgtune, `configurationSlice.js`) for a
//! "mixed" workload on Linux with SSD storage, the total memory being the
//! container's memory limit (what the kernel lets the server's processes
//! use, shared memory included), and PostgreSQL's documentation of each
//! parameter (chapter 20, "Server Configuration"):
//!
//! | parameter | formula | why |
//! |---|---|---|
//! | `shared_buffers` | memory / 4 | PGTune; the docs: "a reasonable starting value is 25% of the memory" |
//! | `effective_cache_size` | memory × 3 / 4 | PGTune: what the kernel's page cache and shared buffers together can hold; a planner estimate, nothing is allocated |
//! | `maintenance_work_mem` | memory / 16, at most 8 GB | PGTune; used by VACUUM, CREATE INDEX, one per autovacuum worker |
//! | `wal_buffers` | 3% of shared_buffers, at most 16 MB (14–16 MB rounded up to 16 MB), at least 32 kB | PGTune, which follows the server's own `-1` rule (1/32 of shared_buffers, 64 kB to one WAL segment) |
//! | `max_connections` | memory in MiB / 5, between 20 and 100 | our choice, below |
//! | `work_mem` | (memory − shared_buffers) / ((max_connections + max_worker_processes) × 3) / 2, at least 4 MB | PGTune's mixed profile: a query may use several work_mem at once (sorts, hashes), so 3 per connection, halved for mixed workloads; 4 MB is PostgreSQL's default and PGTune's floor |
//! | `max_worker_processes` | max(8, CPUs) | PGTune sets the CPUs; 8 (PostgreSQL's default) is kept as a floor so background workers (the logical replication launcher, extensions) keep their slots |
//! | `max_parallel_workers` | CPUs | PGTune; the docs: the pool parallel queries share |
//! | `max_parallel_workers_per_gather`, `max_parallel_maintenance_workers` | ⌈CPUs / 2⌉, at most 4; 0 with one CPU | PGTune (no measured benefit beyond 4); with one CPU a worker only competes with its leader |
//!
//! `max_connections`: PGTune takes it from the workload (100 for mixed,
//! PostgreSQL's default too). A container's limit also caps it: each
//! connection is a server process with its own memory (catalogue caches,
//! buffers for the protocol, a few MB at rest, more under work_mem), so a
//! small container cannot hold 100 of them. About 5 MiB per connection,
//! between 20 (enough for an application pool, the operator and a
//! replica) and 100: a 512 MiB container gets 100, a 256 MiB one 51. Past
//! 100 a connection pooler serves better than more processes.
//!
//! The parallelism parameters are derived only with a CPU limit: without
//! one the server's defaults stay. CPUs are the limit rounded up to whole
//! cores ("500m" is one).
//!
//! Values are whole kB (blocks of 8 kB for the parameters counted in
//! blocks), written as MB when whole megabytes: units PostgreSQL accepts
//! (kB, MB, GB; "MB" is 1024 kB).
//!
//! Where it stops: the memory is the limit, not what the node has free;
//! the workload profile is fixed (mixed); storage parameters
//! (random_page_cost, effective_io_concurrency) and the WAL sizes are left
//! at their defaults, as the volume's kind is not known.

use std::collections::BTreeMap;

/// The resources the parameters are derived from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    /// The memory limit in bytes.
    pub memory_bytes: u64,
    /// The CPU limit in millicores, when one is set.
    pub cpu_millis: Option<u64>,
}

const KB_PER_MB: u64 = 1024;
/// The size of a block (buffers are counted in blocks).
const BLOCK_KB: u64 = 8;

/// A size in kB as PostgreSQL reads it: whole MB as `MB`, else `kB`.
pub fn size(kb: u64) -> String {
    if kb > 0 && kb.is_multiple_of(KB_PER_MB) {
        format!("{}MB", kb / KB_PER_MB)
    } else {
        format!("{kb}kB")
    }
}

/// Rounded down to whole blocks, at least one.
fn blocks(kb: u64) -> u64 {
    (kb / BLOCK_KB).max(1) * BLOCK_KB
}

/// `max_connections` for `memory_kb` (see the module's docs).
pub fn max_connections(memory_kb: u64) -> u64 {
    (memory_kb / KB_PER_MB / 5).clamp(20, 100)
}

/// The parameters derived from `resources`, by name.
pub fn derive(resources: Resources) -> BTreeMap<String, String> {
    let memory_kb = resources.memory_bytes / 1024;
    let shared_buffers = blocks(memory_kb / 4);
    let effective_cache_size = blocks(memory_kb * 3 / 4);
    let maintenance_work_mem = (memory_kb / 16).clamp(1024, 8 * 1024 * KB_PER_MB);
    let wal_buffers = {
        let three_percent = shared_buffers * 3 / 100;
        let max = 16 * KB_PER_MB;
        let near = 14 * KB_PER_MB;
        let value = if three_percent > near {
            max
        } else {
            three_percent
        };
        blocks(value.max(32))
    };
    let connections = max_connections(memory_kb);
    let cpus = resources.cpu_millis.map(|m| m.div_ceil(1000).max(1));
    let worker_processes = cpus.map_or(8, |n| n.max(8));
    let work_mem = {
        let per_connection =
            memory_kb.saturating_sub(shared_buffers) / ((connections + worker_processes) * 3) / 2;
        per_connection.max(4 * KB_PER_MB)
    };
    let mut parameters = BTreeMap::from([
        ("shared_buffers".to_string(), size(shared_buffers)),
        (
            "effective_cache_size".to_string(),
            size(effective_cache_size),
        ),
        (
            "maintenance_work_mem".to_string(),
            size(maintenance_work_mem),
        ),
        ("wal_buffers".to_string(), size(wal_buffers)),
        ("max_connections".to_string(), connections.to_string()),
        ("work_mem".to_string(), size(work_mem)),
    ]);
    if let Some(n) = cpus {
        let per_gather = if n < 2 { 0 } else { n.div_ceil(2).min(4) };
        parameters.extend([
            (
                "max_worker_processes".to_string(),
                worker_processes.to_string(),
            ),
            ("max_parallel_workers".to_string(), n.to_string()),
            (
                "max_parallel_workers_per_gather".to_string(),
                per_gather.to_string(),
            ),
            (
                "max_parallel_maintenance_workers".to_string(),
                per_gather.to_string(),
            ),
        ]);
    }
    parameters
}
