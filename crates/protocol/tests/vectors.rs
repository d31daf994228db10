//! The published test vectors, reproduced byte for byte.
//!
//! The files in `tests/vectors/` are copies of the team's shared vectors
//! (RFC 8291 Appendix A and RFC 8188 section 3); each names its source.

use aws_lc_rs::agreement::{PrivateKey, ECDH_P256};
use serde_json::Value;
use tocsin_protocol::b64;
use tocsin_protocol::ece::{self, ContentEncoding, ReceiverKeys};
use tocsin_protocol::{AuthSecret, UaPublicKey};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect("vector JSON")
}

fn bytes(v: &Value, field: &str) -> Vec<u8> {
    b64::decode(v[field].as_str().unwrap_or_else(|| panic!("{field} missing"))).expect(field)
}

#[test]
fn rfc8291_appendix_a_every_intermediate_value() {
    let v = load("rfc8291-appendix-a.json");
    let as_private = PrivateKey::from_private_key(&ECDH_P256, &bytes(&v, "as_private")).unwrap();
    assert_eq!(as_private.compute_public_key().unwrap().as_ref(), bytes(&v, "as_public"));
    let ua_public = UaPublicKey::from_bytes(&bytes(&v, "ua_public")).unwrap();
    let auth = AuthSecret::new(bytes(&v, "auth_secret").try_into().unwrap());
    let salt: [u8; 16] = bytes(&v, "salt").try_into().unwrap();
    let as_public: [u8; 65] = bytes(&v, "as_public").try_into().unwrap();

    // The ECDH secret, from both sides.
    let ecdh = aws_lc_rs::agreement::agree(
        &as_private,
        aws_lc_rs::agreement::UnparsedPublicKey::new(&ECDH_P256, ua_public.as_bytes()),
        (),
        |s| Ok(s.to_vec()),
    )
    .unwrap();
    assert_eq!(ecdh, bytes(&v, "ecdh_secret"));

    let ks = ece::key_schedule(&ecdh, auth.as_bytes(), ua_public.as_bytes(), &as_public, &salt);
    assert_eq!(ks.prk_key.to_vec(), bytes(&v, "prk_key"), "prk_key");
    assert_eq!(ks.key_info, bytes(&v, "key_info"), "key_info");
    assert_eq!(ks.ikm.to_vec(), bytes(&v, "ikm"), "ikm");
    assert_eq!(ks.prk.to_vec(), bytes(&v, "prk"), "prk");
    assert_eq!(ks.cek.to_vec(), bytes(&v, "cek"), "cek");
    assert_eq!(ks.nonce.to_vec(), bytes(&v, "nonce"), "nonce");
    assert_eq!(b"Content-Encoding: aes128gcm\0".to_vec(), bytes(&v, "cek_info"));
    assert_eq!(b"Content-Encoding: nonce\0".to_vec(), bytes(&v, "nonce_info"));

    let plaintext = bytes(&v, "plaintext");
    let enc = ece::encrypt_with(&ua_public, &auth, &plaintext, ContentEncoding::Aes128Gcm, &as_private, salt).unwrap();
    assert_eq!(b64::encode(&enc.body), v["body"].as_str().unwrap(), "body");

    // And the receiving side decrypts the published body.
    let receiver = ReceiverKeys::from_bytes(&bytes(&v, "ua_private"), *auth.as_bytes()).unwrap();
    assert_eq!(receiver.public_key(), ua_public);
    assert_eq!(receiver.decrypt_aes128gcm(&bytes(&v, "body")).unwrap(), plaintext);
}

#[test]
fn rfc8188_examples_decode() {
    let v = load("rfc8188-examples.json");
    let examples = v["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 2);
    for ex in examples {
        let encoded = bytes(ex, "encoded");
        let ikm = bytes(ex, "ikm");
        let plain = ece::decrypt_aes128gcm(&encoded, |header| {
            assert_eq!(header.record_size as u64, ex["record_size"].as_u64().unwrap());
            assert_eq!(header.key_id, ex["keyid"].as_str().unwrap().as_bytes());
            if let Some(salt) = ex.get("salt") {
                assert_eq!(header.salt.to_vec(), b64::decode(salt.as_str().unwrap()).unwrap());
            }
            Ok(ikm.clone())
        })
        .unwrap_or_else(|e| panic!("section {}: {e}", ex["section"]));
        assert_eq!(plain, ex["plaintext"].as_str().unwrap().as_bytes(), "section {}", ex["section"]);
    }
}

#[test]
fn rfc8188_truncation_is_detected() {
    // Dropping the last record of the multi-record example must not yield a
    // shorter "valid" message.
    let v = load("rfc8188-examples.json");
    let ex = &v["examples"][1];
    let encoded = bytes(ex, "encoded");
    let header_len = 21 + 2;
    let rs = ex["record_size"].as_u64().unwrap() as usize;
    let truncated = &encoded[..header_len + rs];
    let ikm = bytes(ex, "ikm");
    assert!(ece::decrypt_aes128gcm(truncated, |_| Ok(ikm.clone())).is_err());
}
