//! A scraper asks the level's binary for `/metrics` while it runs a real
//! database: what does it learn?
//!
//! The binary is started as a learner starts it, with `--health-addr` on
//! a free local port and `--metrics-interval 1s` (the default is 30 s).
//! Level 4 answers with its own series (reconciles counted by level) and
//! the database's, labelled with its namespace, name and pod, as
//! docs/level4-insights.md lists them; lower levels serve only `/healthz`
//! and `/readyz`, and answer 404.

use std::fmt;
use std::time::Duration;

use level4_insights::insights::series;
use sandbox::SandboxConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::steps::{NAME, create_ready};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::connect::{Role, connect};
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct MetricsServed;

/// The series every measured database has while its server answers (and a
/// client is connected, so connections have a state), by sample name: the
/// contract's (`level4_insights::insights::series`) always present.
pub fn database_series() -> Vec<String> {
    series::sample_names()
        .into_iter()
        .filter(|(_, presence)| *presence == series::Presence::Always)
        .map(|(name, _)| name)
        .collect()
}

/// What a scrape of `/metrics` answered.
#[derive(Debug, PartialEq)]
pub struct Scrape {
    /// The HTTP status (`None`: nothing answered within the budget).
    pub status: Option<u16>,
    /// `pgdb_operator_reconciles_total` has a sample above 0.
    pub reconciles_counted: bool,
    /// `pgdb_database_up` of the database (a gauge: `1` and `1.0` alike).
    pub database_up: Option<f64>,
    /// The series of [`database_series`] with no sample labelled with the
    /// database's namespace and name (none are looked for without a 200).
    pub missing: Vec<String>,
}

impl fmt::Display for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(status) = self.status else {
            return write!(f, "/metrics never answered");
        };
        write!(f, "/metrics answers {status}")?;
        if status != 200 {
            return Ok(());
        }
        write!(
            f,
            ": reconciles {}counted; {NAME} up {}",
            if self.reconciles_counted { "" } else { "not " },
            self.database_up
                .map_or("absent".to_string(), |up| up.to_string())
        )?;
        if self.missing.is_empty() {
            write!(
                f,
                ", with all {} database series (namespace, postgresdb, pod labels)",
                database_series().len()
            )
        } else {
            write!(f, "; missing {}", self.missing.join(", "))
        }
    }
}

/// A local address no one listens on now.
fn free_address() -> Result<String, Failed> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").or_fail("bind a free port")?;
    let address = listener.local_addr().or_fail("read the port")?;
    Ok(address.to_string())
}

/// `GET path` at `address`: the status code and the body; `None` while
/// nothing listens there.
pub async fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head.to_lowercase().contains("transfer-encoding: chunked") {
        unchunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// A chunked HTTP/1.1 body, joined.
fn unchunk(mut body: &str) -> String {
    let mut joined = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        joined.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    joined
}

/// One sample of an exposition: name, labels (as written) and value.
pub fn samples(text: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = match line.rfind('}') {
                Some(end) => (&line[..=end], line[end + 1..].trim()),
                None => line.split_once(' ')?,
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let value = value.split_whitespace().next()?;
            Some((name, labels.trim_end_matches('}'), value))
        })
}

/// What an answer of `/metrics` says about the database in `namespace`.
fn read_scrape(status: u16, body: &str, namespace: &str) -> Scrape {
    if status != 200 {
        return Scrape {
            status: Some(status),
            reconciles_counted: false,
            database_up: None,
            missing: vec![],
        };
    }
    let ours = |labels: &str| {
        labels.contains(&format!("namespace=\"{namespace}\""))
            && labels.contains(&format!("postgresdb=\"{NAME}\""))
            && labels.contains("pod=\"")
    };
    let database: Vec<(&str, &str)> = samples(body)
        .filter(|(_, labels, _)| ours(labels))
        .map(|(name, _, value)| (name, value))
        .collect();
    Scrape {
        status: Some(status),
        reconciles_counted: samples(body).any(|(name, _, value)| {
            name == "pgdb_operator_reconciles_total" && value.parse::<f64>().is_ok_and(|v| v > 0.0)
        }),
        database_up: database
            .iter()
            .find(|(name, _)| *name == "pgdb_database_up")
            .and_then(|(_, value)| value.parse().ok()),
        missing: database_series()
            .into_iter()
            .filter(|series| !database.iter().any(|(name, _)| name == series))
            .collect(),
    }
}

impl Scenario for MetricsServed {
    type Observation = Scrape;
    const NAME: &'static str = "MetricsServed";
    const TITLE: &'static str =
        "A scraper asks the level's binary for `/metrics` (real PostgreSQL, a client connected)";

    fn expected(level: LevelId) -> Scrape {
        match level {
            LevelId::One | LevelId::Two | LevelId::Three => Scrape {
                status: Some(404),
                reconciles_counted: false,
                database_up: None,
                missing: vec![],
            },
            LevelId::Four | LevelId::Five => Scrape {
                status: Some(200),
                reconciles_counted: true,
                database_up: Some(1.0),
                missing: vec![],
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(90)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Scrape>, Failed> {
        let address = free_address()?;
        let operator = cluster
            .run_binary_with(
                level,
                &["--health-addr", &address, "--metrics-interval", "1s"],
            )
            .or_fail(format!("start the {} binary", level.name()))?;
        create_ready(cluster, DbBuilder::manifest(NAME).version("15").build()).await?;
        let client = connect(cluster, Role::Owner, NAME)
            .await
            .ok_or_else(|| Failed::new("the database has no Service or owner's Secret"))?;
        client
            .simple_query("SELECT 1")
            .await
            .or_fail("use the client connection")?;
        // Scrape until the answer is final: anything but a 200, or a 200
        // with every database series (the first measurement may not have
        // been taken yet); what the last scrape said otherwise.
        let deadline = tokio::time::Instant::now() + cluster.budget();
        let mut scrape = Scrape {
            status: None,
            reconciles_counted: false,
            database_up: None,
            missing: vec![],
        };
        loop {
            if let Some((status, body)) = get(&address, "/metrics").await {
                scrape = read_scrape(status, &body, cluster.namespace());
                let complete = scrape.missing.is_empty() && scrape.reconciles_counted;
                if status != 200 || complete {
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(client);
        operator.stop().await;
        Ok(Observed::Seen(scrape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_is_read_by_sample_name_and_the_databases_labels() {
        let body = "# TYPE pgdb_operator_reconciles counter\n\
                    pgdb_operator_reconciles_total{level=\"4\"} 3\n\
                    pgdb_database_up{namespace=\"ns\",postgresdb=\"orders\",pod=\"orders-0\"} 1.0\n\
                    pgdb_database_up{namespace=\"other\",postgresdb=\"orders\",pod=\"orders-0\"} 0\n\
                    pgdb_database_xid_age{namespace=\"ns\",postgresdb=\"orders\",pod=\"orders-0\"} 731\n\
                    # EOF\n";
        let scrape = read_scrape(200, body, "ns");
        assert!(scrape.reconciles_counted);
        assert_eq!(scrape.database_up, Some(1.0));
        assert!(
            scrape.to_string().contains("; orders up 1; missing"),
            "{scrape}"
        );
        assert!(
            !scrape
                .missing
                .contains(&"pgdb_database_xid_age".to_string())
        );
        assert!(
            scrape
                .missing
                .contains(&"pgdb_database_wal_bytes".to_string())
        );
        assert_eq!(
            read_scrape(404, "", "ns"),
            MetricsServed::expected(LevelId::One)
        );
    }

    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(
            unchunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
