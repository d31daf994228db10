//! Message encryption for Web Push.
//!
//! - `aes128gcm`: RFC 8291 key derivation over the RFC 8188 content coding.
//!   The body carries its own header (salt, record size, the sender's
//!   ephemeral public key as key id).
//! - `aesgcm`: draft-ietf-webpush-encryption-04, still spoken by old clients;
//!   the salt and the sender's key travel in the `Encryption` and `Crypto-Key`
//!   headers.
//!
//! Each message gets a fresh ephemeral P-256 key pair and a random 16-byte
//! salt. HKDF is written out over HMAC-SHA256 here (a few lines) because every
//! output is at most one block long and the intermediate values must be
//! visible to the RFC test vectors; `aws-lc-rs` hides them.
//!
//! The receiving side ([`ReceiverKeys`]) decrypts both codings, for the
//! development push service and for tests.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, ECDH_P256};
use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{self, SecureRandom, SystemRandom};

use crate::b64;
use crate::subscription::{AuthSecret, UaPublicKey};

/// The largest push message body a push service must accept (RFC 8030
/// section 7.2 and RFC 8291 section 4).
pub const MAX_BODY: usize = 4096;
/// The size of the `aes128gcm` header Web Push uses: salt (16), record size
/// (4), key id length (1) and the 65-byte sender key as key id.
pub const AES128GCM_HEADER: usize = 16 + 4 + 1 + 65;
const TAG: usize = 16;

/// How a payload is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ContentEncoding {
    /// RFC 8291 / RFC 8188, the standard.
    #[default]
    Aes128Gcm,
    /// draft-ietf-webpush-encryption-04, for old clients.
    AesGcm,
}

impl ContentEncoding {
    /// The `Content-Encoding` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes128Gcm => "aes128gcm",
            Self::AesGcm => "aesgcm",
        }
    }

    /// The largest plaintext that fits one push message of [`MAX_BODY`]
    /// octets:
    /// - `aes128gcm`: 4096 − 86 (header) − 16 (tag) − 1 (padding delimiter)
    ///   = 3993, as RFC 8291 section 4 states;
    /// - `aesgcm`: 4096 − 16 (tag) − 2 (padding length) = 4078.
    pub const fn max_plaintext(self) -> usize {
        match self {
            Self::Aes128Gcm => MAX_BODY - AES128GCM_HEADER - TAG - 1,
            Self::AesGcm => MAX_BODY - TAG - 2,
        }
    }
}

impl fmt::Display for ContentEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContentEncoding {
    type Err = UnknownEncoding;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "aes128gcm" => Ok(Self::Aes128Gcm),
            "aesgcm" => Ok(Self::AesGcm),
            _ => Err(UnknownEncoding(s.to_owned())),
        }
    }
}

/// A content coding other than `aes128gcm` or `aesgcm`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown content encoding {0:?} (expected aes128gcm or aesgcm)")]
pub struct UnknownEncoding(pub String);

/// Why a payload could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    /// The plaintext does not fit one push message.
    #[error("payload is {len} bytes; at most {max} fit one {encoding} push message of 4096 octets")]
    TooLarge {
        /// The plaintext length.
        len: usize,
        /// The limit for this encoding.
        max: usize,
        /// The encoding asked for.
        encoding: ContentEncoding,
    },
    /// The crypto backend failed (no randomness, or a key it refused).
    #[error("encryption failed in the crypto backend")]
    Crypto,
}

/// Why a message could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The body or its headers are malformed.
    #[error("malformed encrypted content: {0}")]
    Malformed(&'static str),
    /// A record failed authentication: wrong key, or tampered data.
    #[error("decryption failed: the record did not authenticate (wrong keys or tampered data)")]
    Authentication,
    /// Padding or record delimiters are wrong.
    #[error("bad padding: {0}")]
    Padding(&'static str),
}

/// An encrypted payload, with what the request headers need to carry.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedPayload {
    /// The coding used.
    pub encoding: ContentEncoding,
    /// The request body.
    pub body: Vec<u8>,
    /// The salt (in the body for `aes128gcm`, in `Encryption` for `aesgcm`).
    pub salt: [u8; 16],
    /// The sender's ephemeral public key (in the body for `aes128gcm`, in
    /// `Crypto-Key: dh=` for `aesgcm`).
    pub sender_public: [u8; 65],
}

impl fmt::Debug for EncryptedPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedPayload")
            .field("encoding", &self.encoding)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Every value RFC 8291's key derivation produces, in order. Exposed so that
/// the Appendix A test vector can check each one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchedule {
    /// `PRK_key = HKDF-Extract(auth_secret, ecdh_secret)`.
    pub prk_key: [u8; 32],
    /// `key_info = "WebPush: info" || 0x00 || ua_public || as_public`.
    pub key_info: Vec<u8>,
    /// `IKM = HKDF-Expand(PRK_key, key_info, 32)`.
    pub ikm: [u8; 32],
    /// `PRK = HKDF-Extract(salt, IKM)`.
    pub prk: [u8; 32],
    /// `CEK = HKDF-Expand(PRK, "Content-Encoding: aes128gcm" || 0x00, 16)`.
    pub cek: [u8; 16],
    /// `NONCE = HKDF-Expand(PRK, "Content-Encoding: nonce" || 0x00, 12)`.
    pub nonce: [u8; 12],
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// HKDF-Extract with SHA-256 (RFC 5869).
pub fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
    hmac_sha256(salt, &[ikm])
}

/// HKDF-Expand with SHA-256 for outputs of at most one block (N ≤ 32).
pub fn hkdf_expand<const N: usize>(prk: &[u8], info: &[u8]) -> [u8; N] {
    const { assert!(N <= 32) };
    let block = hmac_sha256(prk, &[info, &[1]]);
    let mut out = [0u8; N];
    out.copy_from_slice(&block[..N]);
    out
}

const CEK_INFO: &[u8] = b"Content-Encoding: aes128gcm\0";
const NONCE_INFO: &[u8] = b"Content-Encoding: nonce\0";

fn content_keys(salt: &[u8], ikm: &[u8]) -> ([u8; 32], [u8; 16], [u8; 12]) {
    let prk = hkdf_extract(salt, ikm);
    (prk, hkdf_expand(&prk, CEK_INFO), hkdf_expand(&prk, NONCE_INFO))
}

/// RFC 8291 section 3.4: from the ECDH secret to the content key and nonce.
pub fn key_schedule(
    ecdh_secret: &[u8],
    auth: &[u8; 16],
    ua_public: &[u8; 65],
    as_public: &[u8; 65],
    salt: &[u8; 16],
) -> KeySchedule {
    let prk_key = hkdf_extract(auth, ecdh_secret);
    let mut key_info = Vec::with_capacity(14 + 130);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let ikm = hkdf_expand(&prk_key, &key_info);
    let (prk, cek, nonce) = content_keys(salt, &ikm);
    KeySchedule { prk_key, key_info, ikm, prk, cek, nonce }
}

fn record_nonce(base: &[u8; 12], seq: u64) -> Nonce {
    let mut n = *base;
    for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
        *b ^= s;
    }
    Nonce::assume_unique_for_key(n)
}

fn gcm_key(cek: &[u8; 16]) -> Result<LessSafeKey, EncryptError> {
    Ok(LessSafeKey::new(UnboundKey::new(&AES_128_GCM, cek).map_err(|_| EncryptError::Crypto)?))
}

fn ecdh(private: &PrivateKey, peer: &[u8]) -> Result<[u8; 32], ()> {
    agreement::agree(private, UnparsedPublicKey::new(&ECDH_P256, peer), (), |secret| secret.try_into().map_err(|_| ()))
}

fn public_of(private: &PrivateKey) -> Result<[u8; 65], EncryptError> {
    let public = private.compute_public_key().map_err(|_| EncryptError::Crypto)?;
    public.as_ref().try_into().map_err(|_| EncryptError::Crypto)
}

/// Encrypts `plaintext` for a subscription with a fresh ephemeral key and salt.
pub fn encrypt(
    p256dh: &UaPublicKey,
    auth: &AuthSecret,
    plaintext: &[u8],
    encoding: ContentEncoding,
) -> Result<EncryptedPayload, EncryptError> {
    check_size(plaintext, encoding)?;
    let private = PrivateKey::generate(&ECDH_P256).map_err(|_| EncryptError::Crypto)?;
    let mut salt = [0u8; 16];
    rand::fill(&mut salt).map_err(|_| EncryptError::Crypto)?;
    encrypt_with(p256dh, auth, plaintext, encoding, &private, salt)
}

fn check_size(plaintext: &[u8], encoding: ContentEncoding) -> Result<(), EncryptError> {
    let max = encoding.max_plaintext();
    if plaintext.len() > max {
        return Err(EncryptError::TooLarge { len: plaintext.len(), max, encoding });
    }
    Ok(())
}

/// Encrypts with a given sender key and salt. Deterministic: for test
/// vectors. Never reuse a key and salt pair for two messages.
pub fn encrypt_with(
    p256dh: &UaPublicKey,
    auth: &AuthSecret,
    plaintext: &[u8],
    encoding: ContentEncoding,
    sender_private: &PrivateKey,
    salt: [u8; 16],
) -> Result<EncryptedPayload, EncryptError> {
    check_size(plaintext, encoding)?;
    let sender_public = public_of(sender_private)?;
    let secret = ecdh(sender_private, p256dh.as_bytes()).map_err(|_| EncryptError::Crypto)?;
    let body = match encoding {
        ContentEncoding::Aes128Gcm => {
            let ks = key_schedule(&secret, auth.as_bytes(), p256dh.as_bytes(), &sender_public, &salt);
            let mut body = Vec::with_capacity(AES128GCM_HEADER + plaintext.len() + 1 + TAG);
            body.extend_from_slice(&salt);
            body.extend_from_slice(&(MAX_BODY as u32).to_be_bytes());
            body.push(65);
            body.extend_from_slice(&sender_public);
            let mut record = body.split_off(body.len());
            record.extend_from_slice(plaintext);
            record.push(2); // last-record delimiter, no further padding
            gcm_key(&ks.cek)?
                .seal_in_place_append_tag(record_nonce(&ks.nonce, 0), Aad::empty(), &mut record)
                .map_err(|_| EncryptError::Crypto)?;
            body.extend_from_slice(&record);
            body
        }
        ContentEncoding::AesGcm => {
            let (cek, nonce) = aesgcm_keys(&secret, auth.as_bytes(), p256dh.as_bytes(), &sender_public, &salt);
            let mut record = Vec::with_capacity(2 + plaintext.len() + TAG);
            record.extend_from_slice(&[0, 0]); // no padding
            record.extend_from_slice(plaintext);
            gcm_key(&cek)?
                .seal_in_place_append_tag(record_nonce(&nonce, 0), Aad::empty(), &mut record)
                .map_err(|_| EncryptError::Crypto)?;
            record
        }
    };
    Ok(EncryptedPayload { encoding, body, salt, sender_public })
}

/// draft-ietf-webpush-encryption-04 and draft-ietf-httpbis-encryption-encoding-03.
fn aesgcm_keys(
    secret: &[u8],
    auth: &[u8; 16],
    ua_public: &[u8; 65],
    as_public: &[u8; 65],
    salt: &[u8; 16],
) -> ([u8; 16], [u8; 12]) {
    let ikm: [u8; 32] = hkdf_expand(&hkdf_extract(auth, secret), b"Content-Encoding: auth\0");
    let mut context = Vec::with_capacity(6 + 2 * 67);
    context.extend_from_slice(b"P-256\0");
    context.extend_from_slice(&65u16.to_be_bytes());
    context.extend_from_slice(ua_public);
    context.extend_from_slice(&65u16.to_be_bytes());
    context.extend_from_slice(as_public);
    let prk = hkdf_extract(salt, &ikm);
    let cek = hkdf_expand(&prk, &[b"Content-Encoding: aesgcm\0".as_slice(), &context].concat());
    let nonce = hkdf_expand(&prk, &[NONCE_INFO, &context].concat());
    (cek, nonce)
}

/// The parsed header of an RFC 8188 `aes128gcm` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aes128GcmHeader {
    /// The random salt the content key and nonce are derived with.
    pub salt: [u8; 16],
    /// The record size.
    pub record_size: u32,
    /// The key id (for Web Push, the sender's public key).
    pub key_id: Vec<u8>,
}

/// Decodes an RFC 8188 `aes128gcm` body. `ikm_for` receives the header and
/// returns the input keying material (for Web Push, derived from the key id
/// and the receiver's keys).
pub fn decrypt_aes128gcm(
    body: &[u8],
    ikm_for: impl FnOnce(&Aes128GcmHeader) -> Result<Vec<u8>, DecryptError>,
) -> Result<Vec<u8>, DecryptError> {
    if body.len() < 21 {
        return Err(DecryptError::Malformed("shorter than the aes128gcm header"));
    }
    let idlen = body[20] as usize;
    if body.len() < 21 + idlen {
        return Err(DecryptError::Malformed("shorter than the aes128gcm header and key id"));
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&body[..16]);
    let header = Aes128GcmHeader {
        salt,
        record_size: u32::from_be_bytes([body[16], body[17], body[18], body[19]]),
        key_id: body[21..21 + idlen].to_vec(),
    };
    let rs = header.record_size as usize;
    if rs < TAG + 2 {
        return Err(DecryptError::Malformed("record size below 18"));
    }
    let ikm = ikm_for(&header)?;
    let (_, cek, nonce) = content_keys(&header.salt, &ikm);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| DecryptError::Authentication)?);
    let records = &body[21 + idlen..];
    if records.is_empty() {
        return Err(DecryptError::Malformed("no records"));
    }
    let count = records.len().div_ceil(rs);
    let mut out = Vec::with_capacity(records.len());
    for (seq, chunk) in records.chunks(rs).enumerate() {
        if chunk.len() <= TAG {
            return Err(DecryptError::Malformed("record shorter than its tag"));
        }
        let mut buf = chunk.to_vec();
        let plain = key
            .open_in_place(record_nonce(&nonce, seq as u64), Aad::empty(), &mut buf)
            .map_err(|_| DecryptError::Authentication)?;
        let last = seq + 1 == count;
        let end = plain.iter().rposition(|&b| b != 0).ok_or(DecryptError::Padding("record has no delimiter"))?;
        match (plain[end], last) {
            (2, true) | (1, false) => {}
            (1, true) => return Err(DecryptError::Padding("message truncated: last record is not marked last")),
            _ => return Err(DecryptError::Padding("wrong record delimiter")),
        }
        out.extend_from_slice(&plain[..end]);
    }
    Ok(out)
}

/// A receiver's keys: what a browser holds for one subscription. The
/// development push service plays the browser's part with these.
pub struct ReceiverKeys {
    private: PrivateKey,
    public: [u8; 65],
    auth: [u8; 16],
}

impl fmt::Debug for ReceiverKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReceiverKeys({})", b64::encode(self.public))
    }
}

impl ReceiverKeys {
    /// Fresh keys and a random auth secret.
    pub fn generate() -> Result<Self, EncryptError> {
        let private = PrivateKey::generate(&ECDH_P256).map_err(|_| EncryptError::Crypto)?;
        let mut auth = [0u8; 16];
        SystemRandom::new().fill(&mut auth).map_err(|_| EncryptError::Crypto)?;
        Self::from_parts(private, auth)
    }

    /// Keys from a raw 32-byte private scalar and an auth secret.
    pub fn from_bytes(private: &[u8], auth: [u8; 16]) -> Result<Self, EncryptError> {
        let private = PrivateKey::from_private_key(&ECDH_P256, private).map_err(|_| EncryptError::Crypto)?;
        Self::from_parts(private, auth)
    }

    fn from_parts(private: PrivateKey, auth: [u8; 16]) -> Result<Self, EncryptError> {
        let public = public_of(&private)?;
        Ok(Self { private, public, auth })
    }

    /// The public key, as a subscription's `p256dh`.
    pub fn public_key(&self) -> UaPublicKey {
        // A key computed by the backend is on the curve.
        UaPublicKey::from_bytes(&self.public).unwrap_or_else(|_| unreachable!("backend key off the curve"))
    }

    /// The auth secret.
    pub fn auth(&self) -> AuthSecret {
        AuthSecret::new(self.auth)
    }

    /// The raw private scalar.
    pub fn private_key_bytes(&self) -> Vec<u8> {
        AsBigEndian::<aws_lc_rs::encoding::EcPrivateKeyBin>::as_be_bytes(&self.private)
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// Decrypts an RFC 8291 `aes128gcm` body.
    pub fn decrypt_aes128gcm(&self, body: &[u8]) -> Result<Vec<u8>, DecryptError> {
        decrypt_aes128gcm(body, |header| {
            let as_public: [u8; 65] = header
                .key_id
                .as_slice()
                .try_into()
                .map_err(|_| DecryptError::Malformed("key id is not a 65-byte P-256 public key"))?;
            let secret = ecdh(&self.private, &as_public)
                .map_err(|_| DecryptError::Malformed("key id is not a valid P-256 public key"))?;
            let ks = key_schedule(&secret, &self.auth, &self.public, &as_public, &header.salt);
            Ok(ks.ikm.to_vec())
        })
    }

    /// Decrypts an `aesgcm` body with the values of its `Encryption` and
    /// `Crypto-Key` headers.
    pub fn decrypt_aesgcm(&self, body: &[u8], params: &AesGcmParams) -> Result<Vec<u8>, DecryptError> {
        let secret = ecdh(&self.private, &params.dh)
            .map_err(|_| DecryptError::Malformed("Crypto-Key dh is not a valid P-256 public key"))?;
        let (cek, nonce) = aesgcm_keys(&secret, &self.auth, &self.public, &params.dh, &params.salt);
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| DecryptError::Authentication)?);
        let chunk = params.record_size + TAG;
        if body.is_empty() {
            return Err(DecryptError::Malformed("empty body"));
        }
        let mut out = Vec::with_capacity(body.len());
        for (seq, record) in body.chunks(chunk).enumerate() {
            if record.len() < TAG + 2 {
                return Err(DecryptError::Malformed("record shorter than its tag and padding length"));
            }
            let mut buf = record.to_vec();
            let plain = key
                .open_in_place(record_nonce(&nonce, seq as u64), Aad::empty(), &mut buf)
                .map_err(|_| DecryptError::Authentication)?;
            let pad = u16::from_be_bytes([plain[0], plain[1]]) as usize;
            if 2 + pad > plain.len() || plain[2..2 + pad].iter().any(|&b| b != 0) {
                return Err(DecryptError::Padding("aesgcm padding length or bytes are wrong"));
            }
            out.extend_from_slice(&plain[2 + pad..]);
        }
        if body.len().is_multiple_of(chunk) {
            return Err(DecryptError::Padding("message truncated: ends on a record boundary"));
        }
        Ok(out)
    }
}

/// The `aesgcm` parameters carried in headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesGcmParams {
    /// `Encryption: salt=`.
    pub salt: [u8; 16],
    /// `Encryption: rs=` (default 4096).
    pub record_size: usize,
    /// `Crypto-Key: dh=`, the sender's public key.
    pub dh: [u8; 65],
}

/// Finds `name` among `a=b;c=d, e=f` style header parameters.
pub fn header_param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split([',', ';'])
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().trim_matches('"'))
}

impl AesGcmParams {
    /// Reads the parameters from the `Encryption` and `Crypto-Key` headers.
    pub fn from_headers(encryption: &str, crypto_key: &str) -> Result<Self, DecryptError> {
        let salt = header_param(encryption, "salt").ok_or(DecryptError::Malformed("Encryption has no salt"))?;
        let salt = b64::decode(salt).map_err(|_| DecryptError::Malformed("Encryption salt is not base64url"))?;
        let salt = salt.try_into().map_err(|_| DecryptError::Malformed("Encryption salt is not 16 bytes"))?;
        let record_size = match header_param(encryption, "rs") {
            None => 4096,
            Some(rs) => rs.parse().map_err(|_| DecryptError::Malformed("Encryption rs is not a number"))?,
        };
        if record_size < 2 {
            return Err(DecryptError::Malformed("Encryption rs below 2"));
        }
        let dh = header_param(crypto_key, "dh").ok_or(DecryptError::Malformed("Crypto-Key has no dh"))?;
        let dh = b64::decode(dh).map_err(|_| DecryptError::Malformed("Crypto-Key dh is not base64url"))?;
        let dh = dh.try_into().map_err(|_| DecryptError::Malformed("Crypto-Key dh is not 65 bytes"))?;
        Ok(Self { salt, record_size, dh })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver() -> ReceiverKeys {
        ReceiverKeys::generate().unwrap()
    }

    #[test]
    fn limits_come_from_the_rfcs() {
        assert_eq!(ContentEncoding::Aes128Gcm.max_plaintext(), 3993);
        assert_eq!(ContentEncoding::AesGcm.max_plaintext(), 4078);
    }

    #[test]
    fn both_encodings_round_trip_at_their_limits() {
        let r = receiver();
        for encoding in [ContentEncoding::Aes128Gcm, ContentEncoding::AesGcm] {
            for len in [0, 1, 100, encoding.max_plaintext()] {
                let plain = vec![b'x'; len];
                let enc = encrypt(&r.public_key(), &r.auth(), &plain, encoding).unwrap();
                assert!(enc.body.len() <= MAX_BODY, "{encoding} {len}: {}", enc.body.len());
                let got = match encoding {
                    ContentEncoding::Aes128Gcm => r.decrypt_aes128gcm(&enc.body).unwrap(),
                    ContentEncoding::AesGcm => {
                        let params = AesGcmParams { salt: enc.salt, record_size: 4096, dh: enc.sender_public };
                        r.decrypt_aesgcm(&enc.body, &params).unwrap()
                    }
                };
                assert_eq!(got, plain);
            }
            let too_big = vec![0u8; encoding.max_plaintext() + 1];
            assert_eq!(
                encrypt(&r.public_key(), &r.auth(), &too_big, encoding).unwrap_err(),
                EncryptError::TooLarge { len: too_big.len(), max: encoding.max_plaintext(), encoding }
            );
        }
    }

    #[test]
    fn each_message_has_fresh_keys() {
        let r = receiver();
        let a = encrypt(&r.public_key(), &r.auth(), b"hi", ContentEncoding::Aes128Gcm).unwrap();
        let b = encrypt(&r.public_key(), &r.auth(), b"hi", ContentEncoding::Aes128Gcm).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.sender_public, b.sender_public);
    }

    #[test]
    fn tampering_and_wrong_keys_are_caught() {
        let r = receiver();
        let enc = encrypt(&r.public_key(), &r.auth(), b"secret", ContentEncoding::Aes128Gcm).unwrap();
        let mut bad = enc.body.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(r.decrypt_aes128gcm(&bad), Err(DecryptError::Authentication));
        assert_eq!(receiver().decrypt_aes128gcm(&enc.body), Err(DecryptError::Authentication));
        assert!(matches!(r.decrypt_aes128gcm(&enc.body[..30]), Err(DecryptError::Malformed(_))));
    }

    #[test]
    fn reads_aesgcm_header_parameters() {
        let p = AesGcmParams::from_headers(
            "salt=DGv6ra1nlYgDCS1FRnbzlw; rs=4096",
            "keyid=p256dh;dh=BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8, p256ecdsa=AAAA",
        )
        .unwrap();
        assert_eq!(p.record_size, 4096);
        assert_eq!(p.dh[0], 4);
        assert!(AesGcmParams::from_headers("rs=10", "dh=x").is_err());
    }
}
