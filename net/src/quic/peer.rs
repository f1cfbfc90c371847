//! Who is on the other end of a connection: the role its certificate names
//! ([`ringkv_shared::roles`]). TLS has already checked that the CA signed the certificate; this
//! only reads what it says.

use ringkv_shared::roles::Role;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The role the peer's certificate names; [`Role::Client`] (the least a certificate of the
/// cluster may do) if it names none, several, or cannot be read.
pub fn peer_role(conn: &quinn::Connection) -> Role {
    conn.peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().map(|leaf| role_of_certificate(leaf)))
        .unwrap_or(Role::Client)
}

/// The role a DER certificate names in its URI subject alternative names.
pub fn role_of_certificate(der: &[u8]) -> Role {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Role::Client;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Role::Client;
    };
    Role::from_uris(
        san.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            }),
    )
}

/// When a DER certificate stops being valid (`None` if it cannot be read).
pub fn certificate_expiry(der: &[u8]) -> Option<std::time::SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}
