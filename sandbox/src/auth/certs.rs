//! The sandbox's certificate authority and the API server's serving
//! certificate, made fresh for every sandbox.
//!
//! kube-apiserver serves HTTPS with a certificate its cluster CA signed;
//! pods trust that CA through `ca.crt` in their ServiceAccount volume and
//! the `kube-root-ca.crt` ConfigMap. The sandbox does the same: one CA per
//! sandbox (never written to disk by the sandbox itself), and one serving
//! certificate whose names are the ones in-cluster clients use
//! (`kubernetes.default.svc` and its variants) plus the loopback address
//! and `localhost` the listener really has. Client certificates are not
//! issued: clients authenticate with bearer tokens.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// The names the serving certificate is valid for (upstream's
/// `kubernetes`, `kubernetes.default`, ... plus where the sandbox listens).
pub const SERVING_NAMES: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// A CA certificate and the serving certificate it signed, in PEM and DER.
pub struct Certificates {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub serving_cert_der: Vec<u8>,
    pub serving_key_der: Vec<u8>,
}

fn failed(action: &'static str, e: rcgen::Error) -> Error {
    Error::Credentials {
        action,
        source: Box::new(e),
    }
}

/// Makes a new CA (`CN=sandbox-ca`) and a serving certificate for
/// [`SERVING_NAMES`] signed by it.
pub fn generate() -> Result<Certificates> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| failed("describe the CA certificate", e))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sandbox-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_key = KeyPair::generate().map_err(|e| failed("generate the CA key", e))?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| failed("sign the CA certificate", e))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let names: Vec<String> = SERVING_NAMES.iter().map(|s| s.to_string()).collect();
    let mut params =
        CertificateParams::new(names).map_err(|e| failed("describe the serving certificate", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(|e| failed("generate the serving key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| failed("sign the serving certificate", e))?;
    Ok(Certificates {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().to_vec(),
        serving_cert_der: cert.der().to_vec(),
        serving_key_der: key.serialize_der(),
    })
}
