//! Every integration test of the workspace, in one test binary: each
//! module was a binary of its own, and each linked kube, sqlx and the
//! sandbox. Clusters are rationed across all of them
//! (`tests::harness::concurrent_clusters`), so the tests' budgets hold
//! however many run at once.
//!
//! - [`behaviour`]: every scenario against every level, and the matrix.
//! - [`chapters`]: the chapters' runnable blocks, run as written.
//! - [`companions`]: controllers the runner runs beside the reconcile.
//! - [`core_on_sandbox`]: the shared core and Level 1 beyond the matrix.
//! - [`level1_on_real_postgres`], [`level2_on_real_postgres`],
//!   [`level2_major_upgrade`], [`level3_backup`], [`level3_restore`]: the
//!   levels against real servers.
//! - [`level3_schedule`], [`level3_deletion`]: Level 3's schedule,
//!   retention and deletion policies.
//! - [`level4_collector`]: Level 4's database series, measured on real servers.
//! - [`safe_configuration`]: refused parameters and images, and a server's own reason, on real servers.
//! - [`level3_schedule`]: Level 3's backup schedule and retention, on objects.
//! - [`level4_metrics`]: the operator's own metrics at `/metrics`, and
//!   the readings' trigger of reconciles.
//! - [`level4_symptoms`]: Level 4's symptoms as conditions and Events, and
//!   its ServiceMonitor where the API is served.
//! - [`level4_alerts`]: Level 4's alerts under promtool, and the monitoring
//!   companion applying them and the dashboard.
//! - [`level5_failover`]: Level 5's failover, switchover and rebuilt
//!   instances on real servers, with a client writing throughout.
//! - [`rbac`]: what the deployed RBAC grants, against a whole life of Level 2.
//! - [`in_cluster`]: the operator deployed with `kubectl apply -k`, its
//!   RBAC enforced: two replicas, one leader, handover, the operator
//!   upgrade, and the install, drift, upgrade and backup scenarios.
//! - [`scale`]: a few hundred databases at once.
//! - [`level5_autoscaling`]: Level 5's replicas scaled on a pgbench read
//!   load and back after it, on real servers.
//! - [`level5_instances`]: Level 5's replicas, Services by role, scaling,
//!   the Level 4 → 5 swap and synchronous commits, on real servers.
//! - [`level5_storage`]: Level 5's storage auto-grow on a volume filled
//!   for real, its quota grown with the claims.
//! - [`level5_tuning`]: Level 5's auto-tuning: the parameters derived from
//!   the limits running on a real server.
//! - [`level5_anomaly`]: Level 5's anomaly detection on a real server: a
//!   baseline warmed up at rest, a pgbench load setting the `Anomaly`
//!   condition and `pgdb_database_anomaly`, its end clearing them.
//! - [`level4_prometheus`]: Level 4 against a real Prometheus: discovery,
//!   scrapes, the operator's alerts firing, the dashboard's queries.
//!
//! `cargo test -p tests --test suite <module>` runs one module.

mod behaviour;
mod chapters;
mod companions;
mod core_on_sandbox;
mod documented;
mod in_cluster;
mod leader;
mod level1_on_real_postgres;
mod level2_major_upgrade;
mod level2_on_real_postgres;
mod level3_backup;
mod level3_deletion;
mod level3_restore;
mod level3_schedule;
mod level4_alerts;
mod level4_collector;
mod level4_metrics;
mod level4_prometheus;
mod level4_symptoms;
mod level5_anomaly;
mod level5_autoscaling;
mod level5_failover;
mod level5_instances;
mod level5_self_healing;
mod level5_storage;
mod level5_tuning;
mod operator_binary;
mod passwords;
mod pruning;
mod rbac;
mod safe_configuration;
mod scale;
