//! HTTPS: the simulator's certificate authorities, its serving certificate and client
//! certificates, laid out like RKE2's (`/var/lib/rancher/rke2/server/tls`): a `server-ca`
//! signs the serving certificate, a `client-ca` signs client certificates. The serving
//! certificate names what the real apiserver's does — `kubernetes`, `kubernetes.default`,
//! `kubernetes.default.svc`, `kubernetes.default.svc.cluster.local`, `localhost`,
//! `127.0.0.1`, `::1`, and the first address of Harvester's service CIDR, `10.53.0.1` — so
//! rustls clients (kube-rs) and Go clients (kubectl) verify it against the CA in the
//! kubeconfig.
//!
//! Client certificates are optional in the handshake (a request may carry a bearer token
//! instead) and, when sent, verified against the client CA. The identity is read from the
//! subject as the apiserver's x509 authenticator does (k8s.io/apiserver
//! `pkg/authentication/request/x509/x509.go` `CommonNameUserConversion`, v0.33.0): the
//! common name is the user, each organization a group.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::identity::Identity;

/// The DNS names of the serving certificate.
pub const SERVER_DNS_NAMES: [&str; 5] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
];

/// A client certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
}

/// The simulator's PKI: CAs, serving certificate, and a signer for client certificates.
pub struct Pki {
    server_ca: CertifiedIssuer<'static, KeyPair>,
    client_ca: CertifiedIssuer<'static, KeyPair>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn ca(common_name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

impl Pki {
    /// Generates fresh CAs and a serving certificate (ECDSA P-256, as RKE2's).
    pub fn generate() -> anyhow::Result<Pki> {
        let now = jiff::Timestamp::now().as_second();
        let server_ca = ca(&format!("rke2-server-ca@{now}"))?;
        let client_ca = ca(&format!("rke2-client-ca@{now}"))?;
        let mut params = CertificateParams::new(SERVER_DNS_NAMES.map(String::from).to_vec())?;
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(10, 53, 0, 1)),
        ] {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &server_ca)?;
        Ok(Pki {
            server_ca,
            client_ca,
            server_cert: cert.der().clone(),
            server_key: key.serialize_der(),
        })
    }

    /// The CA that signed the serving certificate (a kubeconfig's
    /// `certificate-authority-data`, a pod's `ca.crt`), PEM.
    pub fn ca_pem(&self) -> String {
        self.server_ca.pem()
    }

    /// A client certificate signed by the client CA: `CN=user`, one `O=` per group (at most
    /// two: rcgen keeps one value per attribute type, the second goes in under the same OID
    /// spelled as a custom type).
    pub fn client_cert(&self, user: &str, groups: &[String]) -> anyhow::Result<ClientCert> {
        if groups.len() > 2 {
            return Err(anyhow!(
                "a client certificate of the simulator carries at most two groups, not {groups:?}"
            ));
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        let types = [
            DnType::OrganizationName,
            DnType::CustomDnType(vec![2, 5, 4, 10]),
        ];
        for (g, t) in groups.iter().zip(types) {
            dn.push(t, g.as_str());
        }
        dn.push(DnType::CommonName, user);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.client_ca)?;
        Ok(ClientCert {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The rustls server configuration: the serving certificate, client certificates
    /// optional and verified against the client CA.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.client_ca.der().clone())
            .context("client CA")?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| anyhow!("client certificate verifier: {e}"))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.server_cert.clone(), self.server_ca.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone())),
            )
            .context("serving certificate")?;
        Ok(Arc::new(config))
    }
}

/// The identity a verified client certificate stands for (`None` without a common name).
pub fn identity_of(cert_der: &[u8]) -> Option<Identity> {
    let (user, groups) = subject_names(cert_der)?;
    if user.is_empty() {
        return None;
    }
    let mut groups = groups;
    groups.push("system:authenticated".into());
    Some(Identity {
        user,
        groups,
        service_account: None,
        extra: std::collections::BTreeMap::new(),
        manager: String::new(),
    })
}

/// One DER TLV: (tag, contents, rest).
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first & 0x80 == 0 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (content, after) = rest.split_at(len);
    Some((tag, content, after))
}

const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// The subject's common name and organizations of a DER certificate.
fn subject_names(cert: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, certificate, _) = tlv(cert)?;
    let (_, mut tbs, _) = tlv(certificate)?;
    // version [0] EXPLICIT (optional), serialNumber, signature, issuer, validity, subject
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = tlv(tbs)?.2;
    }
    let (_, mut name, _) = tlv(tbs)?;
    let mut cn = String::new();
    let mut orgs = Vec::new();
    while !name.is_empty() {
        let (_, mut set, rest) = tlv(name)?;
        name = rest;
        while !set.is_empty() {
            let (_, atv, rest) = tlv(set)?;
            set = rest;
            let (_, oid, after) = tlv(atv)?;
            let (_, value, _) = tlv(after)?;
            let value = String::from_utf8_lossy(value).into_owned();
            if oid == OID_COMMON_NAME {
                cn = value;
            } else if oid == OID_ORGANIZATION {
                orgs.push(value);
            }
        }
    }
    Some((cn, orgs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificates_carry_user_and_groups() {
        let pki = Pki::generate().unwrap_or_else(|e| panic!("{e:#}"));
        let two = pki
            .client_cert("system:node:n1", &["system:nodes".into(), "team".into()])
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            identity_of(&two.cert_der).map(|w| w.groups),
            Some(vec![
                "system:nodes".into(),
                "team".into(),
                "system:authenticated".into()
            ])
        );
        let c = pki
            .client_cert("system:admin", &["system:masters".into()])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let who = identity_of(&c.cert_der);
        assert_eq!(who.as_ref().map(|w| w.user.as_str()), Some("system:admin"));
        assert!(who.as_ref().is_some_and(
            |w| w.is_superuser() && w.groups.contains(&"system:authenticated".to_string())
        ));
        assert!(pki.server_config().is_ok());
        assert!(pki.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
