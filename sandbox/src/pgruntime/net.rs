//! Networking: loopback addresses for pods and Services, a TCP proxy per
//! Service port, and the cluster DNS names resolved without DNS.
//!
//! All of 127.0.0.0/8 reaches the loopback interface on Linux, so each
//! sandbox takes one second octet `X` (recorded by its work directory
//! `127.X`, so concurrent sandboxes never share it) and gives pods
//! `127.X.1.1`, `127.X.1.2`, ... and ClusterIP Services `127.X.128.1`, ...
//! A server in a pod listens on its pod IP, port 5432, as in a cluster. Each
//! Service port gets a listener on its ClusterIP that forwards every new
//! connection to one of the Service's ready endpoints, read from its
//! Endpoints object at connect time (so readiness and selector changes are
//! followed; open connections stay where they are, as with kube-proxy).
//!
//! Names (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`, and
//! `host.subdomain.ns.svc` for pods) are resolved against the store by
//! [`resolve`]; the runtime substitutes the address where such a name
//! appears in a container's environment and arguments (see `rewrite`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::cluster::Cluster;
use crate::controllers::list_all;

/// Hands out this sandbox's addresses.
#[derive(Debug)]
pub struct AddressPlan {
    pub octet: u8,
    next_pod: AtomicU32,
    next_service: AtomicU32,
}

impl AddressPlan {
    pub fn new(octet: u8) -> AddressPlan {
        AddressPlan {
            octet,
            next_pod: AtomicU32::new(0),
            next_service: AtomicU32::new(0),
        }
    }

    fn nth(&self, base: u32, n: u32) -> Ipv4Addr {
        // 254 hosts per third octet; the pod and Service ranges each span
        // 127 third octets (over 32 000 addresses), then wrap around.
        let n = n % (127 * 254);
        Ipv4Addr::new(127, self.octet, (base + n / 254) as u8, (1 + n % 254) as u8)
    }

    pub fn pod(&self) -> Ipv4Addr {
        self.nth(1, self.next_pod.fetch_add(1, Ordering::Relaxed))
    }

    pub fn service(&self) -> Ipv4Addr {
        self.nth(128, self.next_service.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether a Service address is one of this plan's.
    pub fn is_service_ip(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>().is_ok_and(|a| {
            let o = a.octets();
            o[0] == 127 && o[1] == self.octet && o[2] >= 128
        })
    }
}

/// Splits a name into (service or pod part, namespace), following the
/// search path of a pod in `namespace`: `svc`, `svc.ns`, `svc.ns.svc`,
/// `svc.ns.svc.cluster.local`, `pod.subdomain.ns.svc[.cluster.local]`.
fn parse_name(host: &str, namespace: &str) -> Option<(Vec<String>, String)> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let h = h.strip_suffix(".cluster.local").unwrap_or(&h);
    let (qualified, h) = match h.strip_suffix(".svc") {
        Some(rest) => (true, rest),
        None => (false, h),
    };
    let parts: Vec<&str> = h.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    match (qualified, parts.as_slice()) {
        (false, [name]) => Some((vec![name.to_string()], namespace.to_string())),
        (_, [name, ns]) => Some((vec![name.to_string()], ns.to_string())),
        (true, [host, sub, ns]) => Some((vec![host.to_string(), sub.to_string()], ns.to_string())),
        _ => None,
    }
}

/// Resolves a cluster name (or an IP literal) as a pod in `namespace` would.
/// A Service resolves to its ClusterIP; a headless one to its first ready
/// endpoint; `pod.subdomain.ns.svc` to that pod's IP.
pub fn resolve(c: &Cluster, host: &str, namespace: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    let (parts, ns) = parse_name(host, namespace)?;
    match parts.as_slice() {
        [name] => {
            let svc = c.store.get("/services", &ns, name)?;
            match svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
                Some("None") | None => {
                    let ep = c.store.get("/endpoints", &ns, name)?;
                    let subsets = ep.get("subsets")?.as_array()?;
                    subsets
                        .iter()
                        .flat_map(|s| {
                            let ready = s["addresses"].as_array().cloned().unwrap_or_default();
                            let not_ready = s["notReadyAddresses"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default();
                            ready.into_iter().chain(not_ready)
                        })
                        .find_map(|a| a["ip"].as_str()?.parse().ok())
                }
                Some(ip) => ip.parse().ok(),
            }
        }
        [pod_host, subdomain] => list_all(c, "", "pods", Some(&ns))
            .into_iter()
            .find(|p| {
                p.pointer("/spec/hostname").and_then(Value::as_str) == Some(pod_host.as_str())
                    && p.pointer("/spec/subdomain").and_then(Value::as_str)
                        == Some(subdomain.as_str())
            })
            .and_then(|p| p.pointer("/status/podIP")?.as_str()?.parse().ok()),
        _ => None,
    }
}

/// The ready endpoints of a Service port: (ip, port).
fn ready_endpoints(c: &Cluster, ns: &str, name: &str, port_name: Option<&str>) -> Vec<SocketAddr> {
    let Some(ep) = c.store.get("/endpoints", ns, name) else {
        return vec![];
    };
    let mut out = vec![];
    for subset in ep["subsets"].as_array().into_iter().flatten() {
        let ports = subset["ports"].as_array().cloned().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| port_name.is_none() || p["name"].as_str() == port_name)
            .or(ports.first())
            .and_then(|p| p["port"].as_u64());
        let Some(port) = port else { continue };
        for a in subset["addresses"].as_array().into_iter().flatten() {
            if let Some(ip) = a["ip"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                out.push(SocketAddr::new(ip, port as u16));
            }
        }
    }
    out
}

/// The listeners of every served Service port.
#[derive(Default)]
pub struct Proxies {
    listeners: Mutex<HashMap<(String, String, String, u16), AbortHandle>>,
    turn: AtomicU32,
}

impl Proxies {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String, String, u16), AbortHandle>> {
        // Plain map updated in single steps.
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens listeners for new Service ports and closes those of Services
    /// or ports that are gone.
    pub fn sync(self: &Arc<Self>, c: &Arc<Cluster>, plan: &AddressPlan) {
        let mut wanted = vec![];
        for svc in list_all(c, "", "services", None) {
            let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) else {
                continue;
            };
            if !plan.is_service_ip(ip) || crate::meta::is_deleting(&svc) {
                continue;
            }
            let ns = crate::meta::namespace_of(&svc).to_string();
            let name = crate::meta::name_of(&svc).to_string();
            for p in svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if p["protocol"].as_str().is_some_and(|pr| pr != "TCP") {
                    continue;
                }
                if let Some(port) = p["port"].as_u64() {
                    let port_name = p["name"].as_str().map(str::to_string);
                    wanted.push((
                        (ns.clone(), name.clone(), ip.to_string(), port as u16),
                        port_name,
                    ));
                }
            }
        }
        let mut listeners = self.lock();
        listeners.retain(|k, h| {
            let keep = wanted.iter().any(|(w, _)| w == k);
            if !keep {
                h.abort();
            }
            keep
        });
        for (key, port_name) in wanted {
            if listeners.contains_key(&key) {
                continue;
            }
            let (ns, name, ip, port) = key.clone();
            let addr = format!("{ip}:{port}");
            let std_listener = match std::net::TcpListener::bind(&addr) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(service = %format!("{ns}/{name}"), %addr, error = %e, "cannot listen for the Service");
                    continue;
                }
            };
            let _ = std_listener.set_nonblocking(true);
            let Ok(listener) = TcpListener::from_std(std_listener) else {
                continue;
            };
            let weak = Arc::downgrade(c);
            let me = Arc::downgrade(self);
            let task = tokio::spawn(accept_loop(listener, weak, me, ns, name, port_name));
            listeners.insert(key, task.abort_handle());
        }
    }

    /// Closes every listener.
    pub fn close_all(&self) {
        for (_, h) in self.lock().drain() {
            h.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    cluster: Weak<Cluster>,
    proxies: Weak<Proxies>,
    ns: String,
    name: String,
    port_name: Option<String>,
) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let (Some(c), Some(p)) = (cluster.upgrade(), proxies.upgrade()) else {
            return;
        };
        let targets = ready_endpoints(&c, &ns, &name, port_name.as_deref());
        drop(c);
        if targets.is_empty() {
            // No ready endpoint: the connection is refused, as kube-proxy's
            // REJECT rule does.
            continue;
        }
        let target = targets[p.turn.fetch_add(1, Ordering::Relaxed) as usize % targets.len()];
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pod_search_path() {
        let p = |h: &str| parse_name(h, "default");
        assert_eq!(p("orders"), Some((vec!["orders".into()], "default".into())));
        assert_eq!(
            p("orders.shop"),
            Some((vec!["orders".into()], "shop".into()))
        );
        assert_eq!(
            p("orders.shop.svc"),
            Some((vec!["orders".into()], "shop".into()))
        );
        assert_eq!(
            p("orders.shop.svc.cluster.local"),
            Some((vec!["orders".into()], "shop".into()))
        );
        assert_eq!(
            p("orders-0.orders-headless.shop.svc.cluster.local"),
            Some((
                vec!["orders-0".into(), "orders-headless".into()],
                "shop".into()
            ))
        );
        assert_eq!(p("a.b.c"), None);
    }

    #[test]
    fn pods_and_services_get_addresses_in_separate_loopback_ranges() {
        let plan = AddressPlan::new(42);
        assert_eq!(plan.pod(), Ipv4Addr::new(127, 42, 1, 1));
        assert_eq!(plan.pod(), Ipv4Addr::new(127, 42, 1, 2));
        let s = plan.service();
        assert_eq!(s, Ipv4Addr::new(127, 42, 128, 1));
        assert!(plan.is_service_ip(&s.to_string()));
        assert!(!plan.is_service_ip("127.42.1.1"));
        assert!(!plan.is_service_ip("10.96.0.1"));
    }
}
