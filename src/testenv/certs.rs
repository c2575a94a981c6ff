//! The control plane's PKI: one CA, the API server's serving certificate, client certificates
//! (CN = user, O = group) and the ServiceAccount token signing key. ECDSA P-256 throughout.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A PEM certificate and its PKCS#8 PEM private key.
#[derive(Clone)]
pub struct CertPair {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// Everything the control plane needs to serve TLS and authenticate users.
pub struct Pki {
    /// The CA that signs every certificate below and that clients trust.
    pub ca: CertPair,
    /// kube-apiserver's serving certificate (SANs: 127.0.0.1, localhost, the service IP).
    pub apiserver: CertPair,
    /// The admin user (`system:masters`).
    pub admin: CertPair,
    /// kube-controller-manager's identity.
    pub controller_manager: CertPair,
    /// ServiceAccount token signing key (private, PKCS#8 PEM).
    pub sa_signing_key_pem: String,
    /// ServiceAccount token verification key (public, SPKI PEM).
    pub sa_public_key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// Generates a fresh PKI.
    pub fn generate() -> Result<Self> {
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kube-sentinel-testenv-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the CA")?;
        let ca = CertPair {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);

        let apiserver = leaf(
            &issuer,
            "kube-apiserver",
            None,
            &[
                "127.0.0.1",
                "localhost",
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let sa_key = KeyPair::generate().context("generating the ServiceAccount signing key")?;
        let mut pki = Self {
            ca,
            apiserver,
            admin: CertPair {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            controller_manager: CertPair {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            sa_signing_key_pem: sa_key.serialize_pem(),
            sa_public_key_pem: sa_key.public_key_pem(),
            issuer,
        };
        pki.admin = pki.client("kube-sentinel-admin", Some("system:masters"))?;
        // The controller manager acts for many controllers; masters keeps the test plane simple.
        pki.controller_manager =
            pki.client("system:kube-controller-manager", Some("system:masters"))?;
        Ok(pki)
    }

    /// A client certificate for user `user` in group `group` (one group: rcgen keeps one `O`).
    pub fn client(&self, user: &str, group: Option<&str>) -> Result<CertPair> {
        leaf(
            &self.issuer,
            user,
            group,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertPair> {
    let key = KeyPair::generate().context("generating a key")?;
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .with_context(|| format!("certificate parameters for {common_name}"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing the certificate for {common_name}"))?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_distinct_pems() {
        let pki = Pki::generate().expect("pki");
        assert!(pki.ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.admin.key_pem.contains("PRIVATE KEY"));
        assert!(pki.sa_public_key_pem.contains("PUBLIC KEY"));
        assert_ne!(pki.admin.cert_pem, pki.controller_manager.cert_pem);
        assert_ne!(pki.apiserver.key_pem, pki.admin.key_pem);
    }
}
