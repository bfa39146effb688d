//! Conformance suite: the sandbox driven through kube-rs as a real client.
//! Each test names the upstream Kubernetes behaviour it pins; the helpers
//! are in `common`.

mod admission;
mod auth;
mod auth_rbac;
mod bad_input;
mod controllers;
mod crd;
mod deletion;
mod deployments;
mod dry_run;
mod endpoints;
mod faults;
mod informers;
mod kubelet;
mod node_proxy;
mod patch;
mod per_object;
mod portforward;
mod rest;
mod scheduler;
mod statefulset;
mod watch;
