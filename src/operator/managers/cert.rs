//! CertManager: a CA and a serving certificate for the cluster's Services, in Secrets.
//!
//! Every pass checks what is stored rather than trusting it: the CA must parse, be a CA, match
//! its key and be valid; the serving certificate must match its key, be signed by the CA, name
//! every Service DNS name (SANs) and not be within `rotateBeforeDays` of expiry; `ca.crt` must
//! be the CA. Anything that fails is issued again; the Secrets are then converged like any
//! other object, so an edited label or an extra key is removed and a deleted Secret re-created.
//! A Secret under a derived name that the resource does not control is never used to sign.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{Error, Names, ObjectChange, Result, check_controlled, converge, owned_meta};
use crate::operator::crd::{CertificateStatus, OwnedObject, StatefulCluster, TlsSpec};

/// Lifetime of the CA in days.
pub const CA_VALIDITY_DAYS: u64 = 3650;
const DAY: u64 = 86_400;

/// DNS names the serving certificate must carry.
pub fn expected_sans(names: &Names) -> Vec<String> {
    let ns = &names.namespace;
    let mut sans = Vec::new();
    for svc in [names.client_service(), names.headless_service()] {
        sans.push(svc.clone());
        sans.push(format!("{svc}.{ns}"));
        sans.push(format!("{svc}.{ns}.svc"));
        sans.push(format!("{svc}.{ns}.svc.cluster.local"));
    }
    sans.push(format!("*.{}.{ns}.svc", names.headless_service()));
    sans.push(format!(
        "*.{}.{ns}.svc.cluster.local",
        names.headless_service()
    ));
    sans
}

/// A PEM certificate and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// Certificate, PEM.
    pub cert: String,
    /// Private key, PEM (PKCS#8).
    pub key: String,
}

/// Why a stored certificate is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Missing Secret or key.
    Missing,
    /// Does not parse.
    Unparsable,
    /// The key does not belong to the certificate.
    KeyMismatch,
    /// Not a CA (for the CA) or not signed by the CA (for the serving certificate).
    WrongIssuer,
    /// Lacks a DNS name.
    MissingSan(String),
    /// Expired or due for rotation.
    Expiring,
}

fn unix(t: &x509_parser::time::ASN1Time) -> i64 {
    t.timestamp()
}

/// Validity window and checks of one certificate.
pub struct Checked {
    /// Expiry, seconds since the epoch.
    pub not_after: i64,
}

fn parse_pem(pem: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(pem.contents)
}

/// Checks a CA pair at time `now` (seconds since the epoch).
pub fn check_ca(pair: &Pair, now: i64) -> std::result::Result<Checked, Problem> {
    let der = parse_pem(&pair.cert).ok_or(Problem::Unparsable)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|_| Problem::Unparsable)?;
    let key = KeyPair::from_pem(&pair.key).map_err(|_| Problem::Unparsable)?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(Problem::KeyMismatch);
    }
    if !cert.is_ca() || cert.verify_signature(None).is_err() {
        return Err(Problem::WrongIssuer);
    }
    let not_after = unix(&cert.validity().not_after);
    // A CA is replaced a month before it expires; its serving certificate follows.
    if not_after - now < 30 * DAY as i64 || unix(&cert.validity().not_before) > now {
        return Err(Problem::Expiring);
    }
    Ok(Checked { not_after })
}

/// Checks a serving pair against its CA, the expected SANs and the rotation window.
pub fn check_serving(
    pair: &Pair,
    ca: &Pair,
    sans: &[String],
    tls: &TlsSpec,
    now: i64,
) -> std::result::Result<Checked, Problem> {
    let der = parse_pem(&pair.cert).ok_or(Problem::Unparsable)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|_| Problem::Unparsable)?;
    let key = KeyPair::from_pem(&pair.key).map_err(|_| Problem::Unparsable)?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(Problem::KeyMismatch);
    }
    let ca_der = parse_pem(&ca.cert).ok_or(Problem::WrongIssuer)?;
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).map_err(|_| Problem::WrongIssuer)?;
    if cert.verify_signature(Some(ca_cert.public_key())).is_err() {
        return Err(Problem::WrongIssuer);
    }
    let present: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(missing) = sans.iter().find(|s| !present.contains(s)) {
        return Err(Problem::MissingSan(missing.clone()));
    }
    let not_after = unix(&cert.validity().not_after);
    if not_after - now <= i64::from(tls.rotate_before_days) * DAY as i64
        || unix(&cert.validity().not_before) > now + 300
    {
        return Err(Problem::Expiring);
    }
    Ok(Checked { not_after })
}

fn at(unix_seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn cert_error(e: rcgen::Error) -> Error {
    Error::Certificate(e.to_string())
}

/// Issues a self-signed CA valid from `now` (allowing 5 minutes of clock skew).
pub fn issue_ca(names: &Names, now: i64) -> Result<Pair> {
    let key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{}.{} CA", names.name, names.namespace),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at(now - 300);
    params.not_after = at(now + (CA_VALIDITY_DAYS * DAY) as i64);
    let cert = params.self_signed(&key).map_err(cert_error)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Issues a serving certificate for `sans` signed by `ca`, valid `validity_days` from `now`.
pub fn issue_serving(ca: &Pair, sans: &[String], validity_days: u32, now: i64) -> Result<Pair> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(cert_error)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(cert_error)?;
    let key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::new(sans.to_vec()).map_err(cert_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        sans.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.not_before = at(now - 300);
    params.not_after = at(now + i64::from(validity_days) * DAY as i64);
    let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn read_pair(secret: Option<&Secret>, cert_key: &str, key_key: &str) -> Option<Pair> {
    let data = secret?.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    Some(Pair {
        cert: text(cert_key)?,
        key: text(key_key)?,
    })
}

/// Result of a CertManager pass.
#[derive(Clone, Debug)]
pub struct CertOutcome {
    /// What happened to each Secret.
    pub changes: Vec<ObjectChange>,
    /// The serving certificate now stored.
    pub status: CertificateStatus,
    /// Why certificates were issued, if they were.
    pub reissued: Vec<(String, Problem)>,
}

/// Keeps the TLS Secrets valid; see the module docs.
#[derive(Clone)]
pub struct CertManager {
    client: Client,
}

impl CertManager {
    /// A manager using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Checks and repairs the CA and serving Secrets at `now` (seconds since the epoch). Returns
    /// `None` when TLS is off. `only` narrows the convergence to the Secrets it names (checks
    /// always cover both, since the serving certificate depends on the CA).
    pub async fn reconcile(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        now: i64,
        only: &[OwnedObject],
    ) -> Result<Option<CertOutcome>> {
        let Some(tls) = cr.spec.tls.as_ref().filter(|t| t.enabled) else {
            return Ok(None);
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &names.namespace);
        let ca_secret = secrets
            .get_opt(&names.ca_secret())
            .await
            .map_err(Error::kube("reading the CA Secret"))?;
        let tls_secret = secrets
            .get_opt(&names.tls_secret())
            .await
            .map_err(Error::kube("reading the TLS Secret"))?;
        // A Secret under a derived name that the operator did not create is neither read (its
        // CA would sign the serving certificate) nor written.
        let uid = cr.metadata.uid.as_deref().ok_or(Error::Incomplete("uid"))?;
        for secret in ca_secret.iter().chain(&tls_secret) {
            check_controlled(&secret.metadata, uid, "Secret")?;
        }
        let mut reissued = Vec::new();
        let ca = valid_ca(ca_secret.as_ref(), names, now, &mut reissued)?;
        let (serving, checked) =
            valid_serving(tls_secret.as_ref(), &ca, names, tls, now, &mut reissued)?;
        for (secret, problem) in &reissued {
            tracing::info!(%secret, ?problem, "issuing a certificate");
        }
        let objects = tls_secrets(cr, names, &ca, &serving)?;
        let changes = self
            .converge_secrets(names, objects, only, &reissued)
            .await?;
        let previous = cr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .map(|c| c.issued)
            .unwrap_or(0);
        let issued = previous + u32::from(reissued.iter().any(|(n, _)| *n == names.tls_secret()));
        let not_after = jiff::Timestamp::from_second(checked.not_after)
            .ok()
            .map(Time);
        Ok(Some(CertOutcome {
            changes,
            status: CertificateStatus { not_after, issued },
            reissued,
        }))
    }

    /// Converges `objects`: all of them, unless `only` names one of the two Secrets; then
    /// those it names and those just reissued.
    async fn converge_secrets(
        &self,
        names: &Names,
        objects: [Secret; 2],
        only: &[OwnedObject],
        reissued: &[(String, Problem)],
    ) -> Result<Vec<ObjectChange>> {
        let resource = ApiResource::erase::<Secret>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &names.namespace, &resource);
        let targeted = only.iter().any(|o| {
            o.kind == "Secret" && (o.name == names.ca_secret() || o.name == names.tls_secret())
        });
        let mut changes = Vec::new();
        for object in objects {
            let name = object.metadata.name.clone().unwrap_or_default();
            let wanted = !targeted
                || reissued.iter().any(|(n, _)| *n == name)
                || only.iter().any(|o| o.kind == "Secret" && o.name == name);
            if !wanted {
                continue;
            }
            let mut value = serde_json::to_value(&object).map_err(|e| Error::Json("Secret", e))?;
            value["apiVersion"] = "v1".into();
            value["kind"] = "Secret".into();
            changes.push(converge(&api, "Secret", &value).await?);
        }
        Ok(changes)
    }
}

/// The stored CA if it passes [`check_ca`], else a new one (recorded in `reissued`).
fn valid_ca(
    stored: Option<&Secret>,
    names: &Names,
    now: i64,
    reissued: &mut Vec<(String, Problem)>,
) -> Result<Pair> {
    let stored = read_pair(stored, "tls.crt", "tls.key");
    match stored.as_ref().map(|p| check_ca(p, now)) {
        Some(Ok(_)) => stored.ok_or(Error::Incomplete("CA")),
        other => {
            let problem = match other {
                Some(Err(p)) => p,
                _ => Problem::Missing,
            };
            reissued.push((names.ca_secret(), problem));
            issue_ca(names, now)
        }
    }
}

/// The stored serving pair if it passes [`check_serving`] against `ca`, else a new one
/// (recorded in `reissued`), with its checks.
fn valid_serving(
    stored: Option<&Secret>,
    ca: &Pair,
    names: &Names,
    tls: &TlsSpec,
    now: i64,
    reissued: &mut Vec<(String, Problem)>,
) -> Result<(Pair, Checked)> {
    let sans = expected_sans(names);
    let stored = read_pair(stored, "tls.crt", "tls.key");
    match stored
        .as_ref()
        .map(|p| check_serving(p, ca, &sans, tls, now))
    {
        Some(Ok(checked)) => Ok((stored.ok_or(Error::Incomplete("certificate"))?, checked)),
        other => {
            let problem = match other {
                Some(Err(p)) => p,
                _ => Problem::Missing,
            };
            reissued.push((names.tls_secret(), problem));
            let pair = issue_serving(ca, &sans, tls.validity_days, now)?;
            let checked = check_serving(&pair, ca, &sans, tls, now).map_err(|p| {
                Error::Certificate(format!("a fresh certificate fails its check: {p:?}"))
            })?;
            Ok((pair, checked))
        }
    }
}

/// The CA Secret and the serving Secret (which also carries `ca.crt`), owned by `cr`.
fn tls_secrets(
    cr: &StatefulCluster,
    names: &Names,
    ca: &Pair,
    serving: &Pair,
) -> Result<[Secret; 2]> {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let ca_object = Secret {
        metadata: owned_meta(cr, names, names.ca_secret(), "tls")?,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".into(), bytes(&ca.cert)),
            ("tls.key".into(), bytes(&ca.key)),
        ])),
        ..Default::default()
    };
    let serving_object = Secret {
        metadata: owned_meta(cr, names, names.tls_secret(), "tls")?,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".into(), bytes(&serving.cert)),
            ("tls.key".into(), bytes(&serving.key)),
            ("ca.crt".into(), bytes(&ca.cert)),
        ])),
        ..Default::default()
    };
    Ok([ca_object, serving_object])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn names() -> Names {
        Names {
            name: "db".into(),
            namespace: "ns".into(),
        }
    }

    fn tls() -> TlsSpec {
        TlsSpec {
            enabled: true,
            validity_days: 90,
            rotate_before_days: 30,
        }
    }

    #[test]
    fn fresh_certificates_pass_their_checks() {
        let ca = issue_ca(&names(), NOW).expect("ca");
        assert!(check_ca(&ca, NOW).is_ok());
        let sans = expected_sans(&names());
        let serving = issue_serving(&ca, &sans, 90, NOW).expect("serving");
        let checked = check_serving(&serving, &ca, &sans, &tls(), NOW).expect("valid");
        assert_eq!(checked.not_after, NOW + 90 * DAY as i64);
    }

    #[test]
    fn rotation_is_due_within_rotate_before_days() {
        let ca = issue_ca(&names(), NOW).expect("ca");
        let sans = expected_sans(&names());
        let serving = issue_serving(&ca, &sans, 90, NOW).expect("serving");
        let day = DAY as i64;
        assert!(check_serving(&serving, &ca, &sans, &tls(), NOW + 59 * day).is_ok());
        assert_eq!(
            check_serving(&serving, &ca, &sans, &tls(), NOW + 60 * day).err(),
            Some(Problem::Expiring)
        );
    }

    #[test]
    fn edited_certificates_are_detected() {
        let ca = issue_ca(&names(), NOW).expect("ca");
        let other_ca = issue_ca(&names(), NOW).expect("ca");
        let sans = expected_sans(&names());
        let serving = issue_serving(&ca, &sans, 90, NOW).expect("serving");
        let foreign = issue_serving(&other_ca, &sans, 90, NOW).expect("serving");
        assert_eq!(
            check_serving(&foreign, &ca, &sans, &tls(), NOW).err(),
            Some(Problem::WrongIssuer)
        );
        let swapped = Pair {
            cert: serving.cert.clone(),
            key: foreign.key.clone(),
        };
        assert_eq!(
            check_serving(&swapped, &ca, &sans, &tls(), NOW).err(),
            Some(Problem::KeyMismatch)
        );
        let garbage = Pair {
            cert: "edited".into(),
            key: serving.key.clone(),
        };
        assert_eq!(
            check_serving(&garbage, &ca, &sans, &tls(), NOW).err(),
            Some(Problem::Unparsable)
        );
        let mut more = sans.clone();
        more.push("extra.example".into());
        assert_eq!(
            check_serving(&serving, &ca, &more, &tls(), NOW).err(),
            Some(Problem::MissingSan("extra.example".into()))
        );
        assert_eq!(check_ca(&serving, NOW).err(), Some(Problem::WrongIssuer));
    }
}
