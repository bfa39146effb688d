//! ServiceAccount tokens: what the TokenRequest API issues and what the
//! authenticator accepts.
//!
//! Upstream issues JWTs signed with the service-account key, with the
//! claims `iss`, `sub` (`system:serviceaccount:<ns>:<name>`), `aud`,
//! `exp`, `iat`, `nbf` and `kubernetes.io` (the namespace, the
//! ServiceAccount's name and uid, and the pod's when the token is bound to
//! one). The sandbox issues the same claims, signed with HMAC-SHA256 under
//! a key made for each sandbox: clients treat the token as opaque, and the
//! sandbox is the only verifier. A token is valid while its signature
//! checks, it has not expired, and the objects it names still exist with
//! the uids it names: a ServiceAccount deleted (or deleted and recreated)
//! since, or the pod it is bound to gone, makes it invalid, as upstream's
//! validator decides.
//!
//! A token carries the audiences it was requested for (the API server's
//! when none are named); the API server accepts only tokens whose `aud`
//! includes [`API_AUDIENCE`], so a token made for another audience
//! (`kubectl create token --audience=vault`) cannot be replayed against
//! it, as upstream's authenticator refuses it.
//!
//! How long a token is valid is [`lifetime`]'s answer: what was asked,
//! except that a pod-bound token asked for exactly 3607 seconds (what the
//! ServiceAccount admission puts in every pod's token volume) is valid for
//! a year and carries `warnafter` at the hour, as kube-apiserver does with
//! `--service-account-extend-token-expiration` (on by default). The kubelet
//! renews a pod's token before it expires; the sandbox issues it once, at
//! the pod's start, so this is what keeps a long-running pod's client
//! authenticated.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde_json::{Value, json};

/// The issuer and audience upstream uses by default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audience the API server identifies itself with (upstream's
/// `--api-audiences`, which defaults to the issuer): a token is accepted
/// only when its `aud` includes it.
pub const API_AUDIENCE: &str = ISSUER;

/// The duration the ServiceAccount admission asks for a pod's token
/// (upstream's `WarnOnlyBoundTokenExpirationSeconds`).
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
/// How long such a token is valid instead (upstream's
/// `ExpirationExtensionSeconds`): a year.
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;

/// How long a token is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Seconds from issue until it expires.
    pub valid_seconds: i64,
    /// Seconds from issue after which upstream's authenticator warns that
    /// a client uses a stale token (`kubernetes.io.warnafter`), for an
    /// extended token.
    pub warn_after_seconds: Option<i64>,
}

/// Upstream's TokenRequest with `--service-account-extend-token-expiration`:
/// a token bound to a pod and requested for exactly
/// [`WARN_ONLY_EXPIRATION_SECONDS`] is valid for
/// [`EXTENDED_EXPIRATION_SECONDS`], warning after what was requested; any
/// other, or one for audiences other than the API server's, is valid for
/// what was requested.
pub fn lifetime(requested_seconds: i64, bound_to_pod: bool, audiences: &[String]) -> Lifetime {
    let for_the_api_server = audiences.iter().all(|a| a == API_AUDIENCE);
    if bound_to_pod && requested_seconds == WARN_ONLY_EXPIRATION_SECONDS && for_the_api_server {
        Lifetime {
            valid_seconds: EXTENDED_EXPIRATION_SECONDS,
            warn_after_seconds: Some(requested_seconds),
        }
    } else {
        Lifetime {
            valid_seconds: requested_seconds,
            warn_after_seconds: None,
        }
    }
}

/// What a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    /// The pod (name, uid) the token is bound to.
    pub pod: Option<(String, String)>,
    /// Who the token is for (`aud`).
    pub audiences: Vec<String>,
    pub expires: i64,
    /// When a client still using it is warned about (`warnafter`).
    pub warn_after: Option<i64>,
}

/// Why a token is not accepted (the client only ever sees 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a JWT, or one this sandbox did not sign.
    Malformed,
    Expired,
    /// Its audiences do not include the API server's.
    WrongAudience,
}

/// Signs and verifies tokens with one sandbox's key.
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A token for `claims`, valid from now until `claims.expires`.
    pub fn issue(&self, claims: &Claims) -> String {
        let issued = now();
        let mut k8s = json!({
            "namespace": claims.namespace,
            "serviceaccount": {"name": claims.service_account, "uid": claims.service_account_uid},
        });
        if let Some((name, uid)) = &claims.pod {
            k8s["pod"] = json!({"name": name, "uid": uid});
        }
        if let Some(warn_after) = claims.warn_after {
            k8s["warnafter"] = json!(warn_after);
        }
        let payload = json!({
            "aud": claims.audiences,
            "exp": claims.expires,
            "iat": issued,
            "nbf": issued,
            "iss": ISSUER,
            "jti": crate::meta::uid(),
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
            "kubernetes.io": k8s,
        });
        let header = json!({"alg": "HS256", "kid": "sandbox", "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = hmac::sign(&self.key, signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// The claims of a token this signer issued and that has not expired;
    /// whether the objects it names still exist is the caller's question.
    pub fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        self.verify_at(token, now())
    }

    /// [`Signer::verify`] at `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, Rejection> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(Rejection::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Rejection::Malformed)?;
        hmac::verify(&self.key, signing_input.as_bytes(), &signature)
            .map_err(|_| Rejection::Malformed)?;
        let (_, payload) = signing_input.split_once('.').ok_or(Rejection::Malformed)?;
        let payload: Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Rejection::Malformed)?;
        let text = |p: &str| {
            payload
                .pointer(p)
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or(Rejection::Malformed)
        };
        let expires = payload
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(Rejection::Malformed)?;
        if expires <= now {
            return Err(Rejection::Expired);
        }
        // `aud` is a list, or one string (RFC 7519).
        let audiences: Vec<String> = match payload.get("aud") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => vec![],
        };
        if !audiences.iter().any(|a| a == API_AUDIENCE) {
            return Err(Rejection::WrongAudience);
        }
        let pod = match payload.pointer("/kubernetes.io/pod") {
            Some(_) => Some((
                text("/kubernetes.io/pod/name")?,
                text("/kubernetes.io/pod/uid")?,
            )),
            None => None,
        };
        Ok(Claims {
            namespace: text("/kubernetes.io/namespace")?,
            service_account: text("/kubernetes.io/serviceaccount/name")?,
            service_account_uid: text("/kubernetes.io/serviceaccount/uid")?,
            pod,
            audiences,
            expires,
            warn_after: payload
                .pointer("/kubernetes.io/warnafter")
                .and_then(Value::as_i64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires: i64) -> Claims {
        Claims {
            namespace: "ns".into(),
            service_account: "sa".into(),
            service_account_uid: "u1".into(),
            pod: Some(("p".into(), "u2".into())),
            audiences: vec![API_AUDIENCE.into()],
            expires,
            warn_after: None,
        }
    }

    #[test]
    fn a_token_verifies_with_its_claims_under_the_key_that_signed_it() {
        let s = Signer::new(b"key");
        let c = claims(now() + 60);
        assert_eq!(s.verify(&s.issue(&c)), Ok(c));
    }

    #[test]
    fn a_token_signed_under_another_key_or_altered_is_malformed() {
        let (a, b) = (Signer::new(b"a"), Signer::new(b"b"));
        let t = a.issue(&claims(now() + 60));
        assert_eq!(b.verify(&t), Err(Rejection::Malformed));
        let mut altered = t.clone();
        altered.insert(t.len() / 2, 'x');
        assert_eq!(a.verify(&altered), Err(Rejection::Malformed));
        assert_eq!(a.verify("not-a-jwt"), Err(Rejection::Malformed));
    }

    #[test]
    fn a_pod_bound_token_asked_for_3607_seconds_stays_valid_past_the_hour_and_others_do_not() {
        let s = Signer::new(b"key");
        let api = [API_AUDIENCE.to_string()];
        let issued = |requested: i64, bound_to_pod: bool| {
            let l = lifetime(requested, bound_to_pod, &api);
            let mut c = claims(now() + l.valid_seconds);
            c.warn_after = l.warn_after_seconds.map(|w| now() + w);
            s.issue(&c)
        };
        let two_hours_on = now() + 2 * 3600;
        let extended = s
            .verify_at(&issued(3607, true), two_hours_on)
            .expect("an operator's token still works after two hours");
        assert!(extended.expires >= now() + EXTENDED_EXPIRATION_SECONDS - 60);
        assert!(extended.warn_after.is_some_and(|w| w <= now() + 3607));
        assert_eq!(
            s.verify_at(
                &issued(3607, true),
                now() + EXTENDED_EXPIRATION_SECONDS + 60
            ),
            Err(Rejection::Expired)
        );
        assert_eq!(
            s.verify_at(&issued(600, true), two_hours_on),
            Err(Rejection::Expired)
        );
        assert_eq!(
            s.verify_at(&issued(3607, false), two_hours_on),
            Err(Rejection::Expired),
            "only a token bound to a pod is extended"
        );
    }

    #[test]
    fn a_token_whose_audiences_do_not_include_the_api_server_is_refused_and_not_extended() {
        let s = Signer::new(b"key");
        let mut c = claims(now() + 60);
        c.audiences = vec!["vault".into()];
        assert_eq!(s.verify(&s.issue(&c)), Err(Rejection::WrongAudience));
        c.audiences = vec!["vault".into(), API_AUDIENCE.into()];
        assert_eq!(s.verify(&s.issue(&c)), Ok(c));
        assert_eq!(
            lifetime(3607, true, &["vault".into()]).valid_seconds,
            3607,
            "only a token for the API server is extended"
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let s = Signer::new(b"key");
        assert_eq!(
            s.verify(&s.issue(&claims(now() - 1))),
            Err(Rejection::Expired)
        );
    }
}
