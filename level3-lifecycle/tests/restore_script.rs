//! The restore-and-verify script against real PostgreSQL: a backup folder
//! made by hand the way a backup makes one (pg_dumpall --globals-only, a
//! custom-format pg_dump per database, table_facts.sql in a manifest),
//! restored into a new data directory and verified; then the same folder
//! with one table's recorded facts tampered with, which must fail naming
//! the table.
//!
//! Servers run as the `postgres` OS user when the tests run as root (initdb
//! refuses root), with the binaries of `/usr/lib/postgresql/<major>/bin`;
//! without them the tests say so and pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use level3_lifecycle::lifecycle::manifest::{
    FORMAT, Manifest, ManifestDatabase, ManifestFile, ManifestTable,
};
use level3_lifecycle::lifecycle::restore::script::{RESTORE_SCRIPT, RestoreResult};

const TABLE_FACTS: &str = include_str!("../src/lifecycle/table_facts.sql");

fn bin_dir() -> Option<PathBuf> {
    let mut majors: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    majors.sort();
    majors.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A scratch directory the `postgres` user can use, removed on drop (after
/// stopping any server left in it).
struct Scratch {
    dir: PathBuf,
    bin: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Option<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!(
            "pgdb-restore-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creates the scratch directory");
        let scratch = Self { dir, bin };
        if is_root() {
            let chown = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&scratch.dir)
                .status()
                .expect("runs chown");
            assert!(chown.success());
        }
        Some(scratch)
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }

    /// Runs `script` with sh as the server's user, with `env`.
    fn sh(&self, script: &str, env: &[(&str, String)]) -> Output {
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", self.bin.display());
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "env"]);
            c
        } else {
            Command::new("env")
        };
        command.arg(format!("PATH={path}"));
        command.arg("LC_ALL=C.UTF-8");
        for (k, v) in env {
            command.arg(format!("{k}={v}"));
        }
        command.args(["sh", "-c", script]);
        command.current_dir(&self.dir);
        command.output().expect("runs sh")
    }

    fn ok(&self, script: &str, env: &[(&str, String)]) -> String {
        let out = self.sh(script, env);
        assert!(
            out.status.success(),
            "{script}\nfailed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for data in ["source/pgdata", "target/pgdata", "tampered/pgdata"] {
            let pgdata = self.dir.join(data);
            if pgdata.join("postmaster.pid").exists() {
                let _ = self.sh(
                    &format!(
                        "pg_ctl --pgdata='{}' --mode=immediate stop",
                        pgdata.display()
                    ),
                    &[],
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A source server with rows in two databases, on a socket in `source/`.
fn start_source(s: &Scratch) {
    s.ok(
        r#"set -e
mkdir -p source
printf 'source-secret\n' > source/pw
initdb --pgdata=source/pgdata --username=postgres --pwfile=source/pw >/dev/null
pg_ctl --pgdata=source/pgdata --wait --log=source/server.log --options="-c listen_addresses='' -c unix_socket_directories='$PWD/source'" start >/dev/null
export PGHOST="$PWD/source" PGUSER=postgres
psql -X -q -v ON_ERROR_STOP=1 -d postgres <<'SQL'
CREATE ROLE shop_owner LOGIN PASSWORD 'old-owner-password';
CREATE ROLE "odd ""role""" NOLOGIN;
CREATE DATABASE shop OWNER shop_owner;
CREATE TABLE public.settings (k text PRIMARY KEY, v text);
INSERT INTO public.settings VALUES ('a', '1'), ('b', NULL);
SQL
psql -X -q -v ON_ERROR_STOP=1 -d shop -U shop_owner <<'SQL'
CREATE SCHEMA sales;
CREATE TABLE public.items (id int PRIMARY KEY, name text, price numeric);
INSERT INTO public.items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 250) g;
CREATE TABLE sales.orders (id bigserial PRIMARY KEY, item int REFERENCES public.items, at timestamptz DEFAULT now());
INSERT INTO sales.orders (item) SELECT 1 + g % 250 FROM generate_series(1, 1000) g;
CREATE TABLE public.events (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO public.events SELECT g, DATE '2025-06-01' + g FROM generate_series(1, 400) g;
CREATE TABLE public.empty (x int);
SQL
"#,
        &[],
    );
}

/// The backup folder `backup/`, as a backup writes it: globals, a dump per
/// database, and the manifest with each table's facts (digests for tables
/// up to `digest_bytes`).
fn make_backup(s: &Scratch, digest_bytes: u64) -> Manifest {
    let facts = s.path("table_facts.sql");
    std::fs::write(&facts, TABLE_FACTS).expect("writes table_facts.sql");
    let env = [
        ("PGHOST", s.path("source")),
        ("PGUSER", "postgres".to_string()),
    ];
    s.ok(
        "set -e; mkdir -p backup; pg_dumpall --globals-only --file=backup/globals.sql",
        &env,
    );
    let names = s.ok(
        "psql -X -At -d postgres -c \"SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1\"",
        &env,
    );
    let mut databases = Vec::new();
    let mut files = Vec::new();
    for name in names.lines().filter(|l| !l.is_empty()) {
        let file = format!("{name}.dump");
        s.ok(
            &format!("pg_dump -Fc --dbname='{name}' --file='backup/{file}'"),
            &env,
        );
        let rows = s.ok(
            &format!(
                "psql -X -At -F \"$(printf '\\t')\" -v ON_ERROR_STOP=1 -v digest_bytes={digest_bytes} --dbname='{name}' -f '{facts}'"
            ),
            &env,
        );
        let tables = rows
            .lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let cols: Vec<&str> = line.split('\t').collect();
                assert_eq!(cols.len(), 4, "a table_facts line: {line:?}");
                ManifestTable {
                    schema: cols[0].into(),
                    name: cols[1].into(),
                    rows: cols[2].parse().expect("a row count"),
                    digest: (!cols[3].is_empty()).then(|| cols[3].to_string()),
                }
            })
            .collect();
        databases.push(ManifestDatabase {
            name: name.into(),
            file: file.clone(),
            tables,
        });
        files.push(file);
    }
    files.push("globals.sql".into());
    let files = files
        .into_iter()
        .map(|name| {
            let path = s.dir.join("backup").join(&name);
            let sum = s.ok(&format!("sha256sum '{}'", path.display()), &[]);
            ManifestFile {
                bytes: std::fs::metadata(&path).expect("the file exists").len(),
                sha256: sum.split_whitespace().next().unwrap_or_default().into(),
                name,
            }
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT,
        backup: "shop-manual".into(),
        database: "shop-db".into(),
        server_version: "15".into(),
        snapshot_at: "2026-12-01T00:00:00Z".into(),
        files,
        databases,
    };
    write_manifest(s, "backup", &manifest);
    manifest
}

fn write_manifest(s: &Scratch, folder: &str, manifest: &Manifest) {
    let path = s.dir.join(folder).join("manifest.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(manifest).expect("serialises"),
    )
    .expect("writes the manifest");
    if is_root() {
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(s.dir.join(folder))
            .status();
    }
}

/// Runs the script restoring `folder` into `<target>/pgdata`.
fn restore(s: &Scratch, folder: &str, target: &str) -> (bool, RestoreResult, String) {
    std::fs::create_dir_all(s.dir.join(target)).expect("creates the target");
    if is_root() {
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(s.dir.join(target))
            .status();
    }
    let out = s.sh(
        RESTORE_SCRIPT,
        &[
            ("BACKUP_DIR", s.path(folder)),
            ("BACKUP_NAME", "shop-manual".into()),
            ("PGDATA", s.path(&format!("{target}/pgdata"))),
            ("WORK_DIR", s.path(&format!("{target}-work"))),
            ("MARKER_DIR", s.path(target)),
            ("POSTGRES_PASSWORD", "new-superuser-password".into()),
            ("POSTGRES_INITDB_ARGS", "--data-checksums".into()),
            ("APP_OWNER", "shop_owner".into()),
            ("APP_PASSWORD", "new-owner-password".into()),
            ("APP_DATABASE", "shop".into()),
            ("TERMINATION_LOG", s.path(&format!("{target}.result"))),
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let message = std::fs::read_to_string(s.dir.join(format!("{target}.result")))
        .unwrap_or_else(|_| panic!("no termination message; log:\n{log}"));
    let result = RestoreResult::parse(&message)
        .unwrap_or_else(|| panic!("not a result: {message}\nlog:\n{log}"));
    (out.status.success(), result, log)
}

#[test]
fn a_backup_restores_into_a_new_data_directory_and_every_table_verifies() {
    let Some(s) = Scratch::new("verified") else {
        eprintln!("no PostgreSQL server binaries under /usr/lib/postgresql: skipped");
        return;
    };
    start_source(&s);
    let manifest = make_backup(&s, 1 << 30);
    let recorded: usize = manifest.databases.iter().map(|d| d.tables.len()).sum();
    assert!(recorded >= 5, "the manifest lists the tables: {manifest:?}");

    let (ok, result, log) = restore(&s, "backup", "target");
    assert!(ok && result.passed, "{result:?}\n{log}");
    assert_eq!(result.tables as usize, recorded);
    assert_eq!(result.rows, 2 + 250 + 1000 + 400);
    assert!(
        result
            .message
            .contains("every row count and digest matches")
    );

    // The new server keeps its own credentials, has the owner's new password
    // and the restored rows; the data directory is one the server container
    // starts as it is.
    let out = s.ok(
        r#"set -e
pg_ctl --pgdata=target/pgdata --wait --log=target/server.log --options="-c listen_addresses='' -c unix_socket_directories='$PWD/target'" start >/dev/null
export PGHOST="$PWD/target"
psql -X -At -U postgres -d shop -c "SELECT count(*) FROM sales.orders" -c "SELECT count(*) FROM public.events"
psql -X -At -U postgres -d postgres -c "SELECT rolpassword LIKE 'SCRAM-SHA-256%' FROM pg_authid WHERE rolname = 'shop_owner'"
pg_ctl --pgdata=target/pgdata --mode=fast --wait stop >/dev/null
"#,
        &[],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["1000", "400", "t"],
        "{out}"
    );
    // The passwords: the superuser's and the owner's are the new ones, not the backup's.
    let check = s.ok(
        r#"set -e
pg_ctl --pgdata=target/pgdata --wait --log=target/server2.log --options="-c listen_addresses='' -c unix_socket_directories='$PWD/target'" start >/dev/null
export PGHOST="$PWD/target"
psql -X -At -U postgres -d postgres <<'SQL'
SELECT rolname, rolpassword = (SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres') FROM pg_authid WHERE rolname = 'postgres';
SQL
pg_ctl --pgdata=target/pgdata --mode=fast --wait stop >/dev/null
"#,
        &[],
    );
    assert!(check.contains("postgres|t"), "{check}");
    let port = 40000 + std::process::id() % 20000;
    let scram = |password: &str, role: &str| {
        // A TCP login with each password tells which one is current (with
        // an hba_file of the operator's kind: SCRAM for every TCP login).
        s.sh(
            &format!(
                r#"set -e
printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n' > target/hba.conf
pg_ctl --pgdata=target/pgdata --wait --log=target/server3.log --options="-c listen_addresses=127.0.0.1 -c port={port} -c hba_file='$PWD/target/hba.conf' -c unix_socket_directories='$PWD/target'" start >/dev/null
trap 'pg_ctl --pgdata=target/pgdata --mode=fast --wait stop >/dev/null' EXIT
PGPASSWORD='{password}' psql -X -At -h 127.0.0.1 -p {port} -U {role} -d postgres -c 'SELECT 1'
"#
            ),
            &[],
        )
        .status
        .success()
    };
    assert!(scram("new-superuser-password", "postgres"));
    assert!(!scram("source-secret", "postgres"));
    assert!(scram("new-owner-password", "shop_owner"));
    assert!(!scram("old-owner-password", "shop_owner"));

    // A restarted pod finds the marker and does not restore again.
    let (ok, again, log) = restore(&s, "backup", "target");
    assert!(ok && again.passed, "{again:?}\n{log}");
    assert!(log.contains("completed earlier"), "{log}");
}

#[test]
fn a_table_that_differs_from_the_manifest_fails_the_verification_naming_it() {
    let Some(s) = Scratch::new("tampered") else {
        eprintln!("no PostgreSQL server binaries under /usr/lib/postgresql: skipped");
        return;
    };
    start_source(&s);
    // Only small tables get a digest: items (250 rows) does, orders does not.
    let manifest = make_backup(&s, 64 * 1024);
    let orders = manifest
        .databases
        .iter()
        .flat_map(|d| &d.tables)
        .find(|t| t.name == "orders");
    assert_eq!(orders.and_then(|t| t.digest.as_ref()), None, "{manifest:?}");

    // One row fewer recorded for sales.orders than the dump holds.
    let mut tampered = manifest.clone();
    for table in tampered
        .databases
        .iter_mut()
        .flat_map(|d| d.tables.iter_mut())
    {
        if table.name == "orders" {
            table.rows -= 1;
        }
    }
    write_manifest(&s, "backup", &tampered);
    let (ok, result, log) = restore(&s, "backup", "tampered");
    assert!(!ok && !result.passed, "{result:?}\n{log}");
    let mismatch = result.mismatch.expect("names the table");
    assert_eq!(
        (
            mismatch.database.as_str(),
            mismatch.schema.as_str(),
            mismatch.table.as_str()
        ),
        ("shop", "sales", "orders")
    );
    assert!(
        result.message.contains(
            "table sales.orders of database shop has 1000 rows restored, the backup recorded 999"
        ),
        "{}",
        result.message
    );
    // The failure is final for that data directory: a restart reports it again.
    let (ok, again, _) = restore(&s, "backup", "tampered");
    assert!(!ok && again.message == result.message, "{again:?}");

    // Same count, other contents: the digest tells.
    let mut tampered = manifest.clone();
    for table in tampered
        .databases
        .iter_mut()
        .flat_map(|d| d.tables.iter_mut())
    {
        if table.name == "items" {
            table.digest = Some("0123456789abcdef0123456789abcdef".into());
        }
    }
    write_manifest(&s, "backup", &tampered);
    let (ok, result, log) = restore(&s, "backup", "target");
    assert!(!ok && !result.passed, "{result:?}\n{log}");
    assert_eq!(result.mismatch.map(|m| m.table).as_deref(), Some("items"));
    assert!(
        result.message.contains("different contents"),
        "{}",
        result.message
    );

    // A damaged dump file is caught by its SHA-256 before anything is restored.
    write_manifest(&s, "backup", &manifest);
    s.ok("printf 'x' >> backup/shop.dump", &[]);
    let (ok, result, _) = restore(&s, "backup", "damaged");
    assert!(
        !ok && result.message.contains("damaged: the SHA-256 of shop.dump"),
        "{result:?}"
    );
}

#[test]
fn a_data_directory_no_restore_wrote_is_never_touched() {
    let Some(s) = Scratch::new("existing") else {
        eprintln!("no PostgreSQL server binaries under /usr/lib/postgresql: skipped");
        return;
    };
    s.ok(
        "set -e; mkdir -p backup target/pgdata; echo 15 > target/pgdata/PG_VERSION; echo '{}' > backup/manifest.json; echo '--' > backup/globals.sql",
        &[],
    );
    let (ok, result, _) = restore(&s, "backup", "target");
    assert!(!ok && !result.passed);
    assert!(
        result.message.contains("already holds data"),
        "{}",
        result.message
    );
    assert!(Path::new(&s.path("target/pgdata/PG_VERSION")).exists());
    assert!(!Path::new(&s.path("target/.pgdb-restore-failed")).exists());
}
