//! Rewriting what a container sees into what the host has.
//!
//! A container runs directly on the host, not in its own filesystem and
//! network namespaces, so two kinds of names in its environment, arguments
//! and mounted configuration files are translated before it starts:
//!
//! * Paths: a mount path (`/etc/postgresql`) at the start of a path is
//!   replaced by the host directory behind the volume
//!   (`<work>/pods/<n>/volumes/config`), longest mount first.
//! * Hosts: `localhost` and `127.0.0.1` become the pod's own IP; fully
//!   qualified Service names (`svc.ns.svc[.cluster.local]`) become their
//!   address wherever they appear as a host name; short names (`svc`,
//!   `svc.ns`) only where the text says it is a host (the whole value of
//!   an environment variable named `*HOST`, the argument after `-h` or
//!   `--host`, or after `-h `, `--host=`, `host=`, `@` or `://` inside a
//!   text), since a bare word like `orders` is as likely a database name.
//! * Wildcard addresses: `0.0.0.0:<port>` and `[::]:<port>` (listen on
//!   every address) become `<pod IP>:<port>`, since a pod's every address is
//!   its own one: two pods can then both listen on port 8080.
//!
//! Names or paths built at run time (by a script from pieces), and defaults
//! compiled into a program, are not seen.

use std::path::PathBuf;

/// Mount path → host path, longest mount path first.
#[derive(Debug, Clone, Default)]
pub struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    pub fn new(mut list: Vec<(String, PathBuf)>) -> Mounts {
        for (m, _) in list.iter_mut() {
            while m.len() > 1 && m.ends_with('/') {
                m.pop();
            }
        }
        list.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        Mounts(list)
    }

    /// The host path for a container path, if it is under a mount.
    pub fn map(&self, path: &str) -> Option<PathBuf> {
        self.0.iter().find_map(|(m, host)| {
            let rest = path.strip_prefix(m.as_str())?;
            if rest.is_empty() {
                Some(host.clone())
            } else {
                let rest = rest.strip_prefix('/')?;
                Some(host.join(rest))
            }
        })
    }

    pub fn list(&self) -> &[(String, PathBuf)] {
        &self.0
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// Replaces mount paths that start a path in `text`.
pub fn rewrite_paths(text: &str, mounts: &Mounts) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let bytes = text.as_bytes();
    'scan: while i < text.len() {
        let prev_ok = i == 0 || !is_path_char(text[..i].chars().next_back().unwrap_or(' '));
        if bytes[i] == b'/' && prev_ok {
            for (m, host) in mounts.list() {
                if text[i..].starts_with(m.as_str()) {
                    let end = i + m.len();
                    let next = text[end..].chars().next();
                    if next.is_none_or(|c| c == '/' || !is_path_char(c)) {
                        out.push_str(&host.to_string_lossy());
                        i = end;
                        continue 'scan;
                    }
                }
            }
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Replaces host names in `text`; `lookup(name)` answers a name's address.
/// `whole_is_host` says the whole text is a host (an env var named
/// `*HOST`, an argument after `-h`), so a short name alone is replaced too.
pub fn rewrite_hosts(
    text: &str,
    whole_is_host: bool,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0;
    while let Some(start) = rest.find(is_host_char) {
        out.push_str(&rest[..start]);
        let token_len = rest[start..]
            .find(|c: char| !is_host_char(c))
            .unwrap_or(rest.len() - start);
        let token = &rest[start..start + token_len];
        let before = &text[..consumed + start];
        let whole = whole_is_host && start == 0 && consumed == 0 && token_len == text.len();
        let lower = token.to_ascii_lowercase();
        let qualified = lower == "localhost"
            || lower == "127.0.0.1"
            || lower.ends_with(".svc")
            || lower.ends_with(".svc.cluster.local");
        let host_context = whole
            || before.ends_with("-h ")
            || before.ends_with("--host=")
            || before.ends_with("--host ")
            || before.ends_with("host=")
            || before.ends_with('@')
            || before.ends_with("://");
        let replacement = if (qualified || host_context)
            && token.chars().any(|c| c.is_ascii_alphabetic() || c == '.')
        {
            lookup(&lower)
        } else {
            None
        };
        match replacement {
            Some(ip) => out.push_str(&ip),
            None => out.push_str(token),
        }
        consumed += start + token_len;
        rest = &rest[start + token_len..];
    }
    out.push_str(rest);
    out
}

/// Replaces `0.0.0.0:<port>` and `[::]:<port>` by `<pod_ip>:<port>`.
pub fn rewrite_wildcards(text: &str, pod_ip: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let prev_ok = i == 0
            || !text[..i]
                .chars()
                .next_back()
                .is_some_and(|c| is_host_char(c) || c == ':' || c == '[');
        let wildcard = ["0.0.0.0:", "[::]:"].into_iter().find(|w| {
            rest.starts_with(w) && rest[w.len()..].starts_with(|c: char| c.is_ascii_digit())
        });
        match wildcard {
            Some(w) if prev_ok => {
                out.push_str(pod_ip);
                out.push(':');
                i += w.len();
            }
            _ => {
                let c = rest.chars().next().unwrap_or(' ');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> Mounts {
        Mounts::new(vec![
            ("/var/lib/postgresql/data".into(), PathBuf::from("/w/pvc-1")),
            ("/etc/postgresql/".into(), PathBuf::from("/w/pod/config")),
        ])
    }

    #[test]
    fn mount_paths_at_the_start_of_a_path_are_mapped() {
        let m = mounts();
        assert_eq!(
            rewrite_paths("config_file=/etc/postgresql/postgresql.conf", &m),
            "config_file=/w/pod/config/postgresql.conf"
        );
        assert_eq!(
            rewrite_paths("hba_file = '/etc/postgresql/pg_hba.conf'", &m),
            "hba_file = '/w/pod/config/pg_hba.conf'"
        );
        assert_eq!(
            rewrite_paths("/var/lib/postgresql/data/pgdata", &m),
            "/w/pvc-1/pgdata"
        );
        assert_eq!(
            rewrite_paths("/usr/etc/postgresql/x", &m),
            "/usr/etc/postgresql/x"
        );
        assert_eq!(rewrite_paths("/etc/postgresqlx", &m), "/etc/postgresqlx");
        assert_eq!(
            m.map("/etc/postgresql"),
            Some(PathBuf::from("/w/pod/config"))
        );
    }

    #[test]
    fn service_names_become_addresses_where_they_are_hosts() {
        let lookup = |name: &str| match name {
            "orders"
            | "orders.default"
            | "orders.default.svc"
            | "orders.default.svc.cluster.local" => Some("127.9.128.1".to_string()),
            "localhost" | "127.0.0.1" => Some("127.9.1.1".to_string()),
            _ => None,
        };
        let r = |s: &str| rewrite_hosts(s, false, &lookup);
        assert_eq!(rewrite_hosts("orders", true, &lookup), "127.9.128.1");
        assert_eq!(r("orders"), "orders");
        assert_eq!(
            r("postgresql://app:pw@orders.default.svc:5432/orders"),
            "postgresql://app:pw@127.9.128.1:5432/orders"
        );
        assert_eq!(
            r("pg_dump -h orders -d orders"),
            "pg_dump -h 127.9.128.1 -d orders"
        );
        assert_eq!(
            r("host=orders dbname=orders"),
            "host=127.9.128.1 dbname=orders"
        );
        assert_eq!(
            r("connect to orders.default.svc.cluster.local now"),
            "connect to 127.9.128.1 now"
        );
        assert_eq!(
            r("pg_isready -h 127.0.0.1 -p 5432"),
            "pg_isready -h 127.9.1.1 -p 5432"
        );
        assert_eq!(r("the orders table"), "the orders table");
    }

    #[test]
    fn listening_on_every_address_means_the_pod_s_own() {
        let r = |s: &str| rewrite_wildcards(s, "127.9.1.4");
        assert_eq!(r("0.0.0.0:8080"), "127.9.1.4:8080");
        assert_eq!(r("--health-addr=[::]:8080"), "--health-addr=127.9.1.4:8080");
        assert_eq!(r("http://0.0.0.0:80/x"), "http://127.9.1.4:80/x");
        assert_eq!(r("10.0.0.0:80"), "10.0.0.0:80");
        assert_eq!(r("0.0.0.0"), "0.0.0.0");
        assert_eq!(r("0.0.0.0:"), "0.0.0.0:");
    }
}
