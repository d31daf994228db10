//! Runs one kind of per-message work N times, for instruction counting under
//! `valgrind --tool=callgrind` (steady on a shared machine, unlike wall time):
//!
//! ```sh
//! cargo build --release -p tocsin-protocol --example per_message
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/per_message floor 2000
//! ```
//!
//! Run it with two values of N; the difference divided by the difference in N
//! is the cost of one message without the set-up.

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::agreement::{agree, PrivateKey, UnparsedPublicKey, ECDH_P256};
use aws_lc_rs::error::Unspecified;
use tocsin_protocol::ece::ReceiverKeys;
use tocsin_protocol::request::{self, PushOptions};
use tocsin_protocol::{ContentEncoding, Subscription, VapidKey, VapidSigner, VapidSubject};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).cloned().unwrap_or_else(|| "aes128gcm".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);

    let r = ReceiverKeys::generate()?;
    let ua = *r.public_key().as_bytes();
    let sub = Subscription::new("https://push.example.net/p/1".parse()?, r.public_key(), r.auth())?;
    let key = Arc::new(VapidKey::generate()?);
    let subject = VapidSubject::new("mailto:b@example.com")?;
    let signer = VapidSigner::new(key.clone(), subject.clone());
    let payload = br#"{"title":"Hello","body":"A message of ordinary size for a notification."}"#;
    let now = SystemTime::now();
    let aes128gcm = PushOptions::default();
    let aesgcm = PushOptions { encoding: ContentEncoding::AesGcm, ..Default::default() };

    for _ in 0..n {
        match kind.as_str() {
            "floor" => {
                let k = PrivateKey::generate(&ECDH_P256)?;
                black_box(k.compute_public_key()?);
                agree(&k, UnparsedPublicKey::new(&ECDH_P256, &ua), Unspecified, |s| Ok(black_box(s[0])))?;
            }
            "aes128gcm" => drop(black_box(request::build(&sub, Some(payload), &aes128gcm, Some(&signer), now))),
            "aesgcm" => drop(black_box(request::build(&sub, Some(payload), &aesgcm, Some(&signer), now))),
            "sign-each" => {
                let fresh = VapidSigner::new(key.clone(), subject.clone());
                drop(black_box(request::build(&sub, Some(payload), &aes128gcm, Some(&fresh), now)));
            }
            other => return Err(format!("unknown kind {other}: floor, aes128gcm, aesgcm, sign-each").into()),
        }
    }
    Ok(())
}
