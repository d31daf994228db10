//! Per-message CPU cost: encryption + headers, against the crypto floor of one
//! P-256 key generation plus one ECDH.

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::agreement::{agree, PrivateKey, UnparsedPublicKey, ECDH_P256};
use aws_lc_rs::error::Unspecified;
use criterion::{criterion_group, criterion_main, Criterion};
use tocsin_protocol::ece::ReceiverKeys;
use tocsin_protocol::request::{self, PushOptions};
use tocsin_protocol::{ContentEncoding, Subscription, VapidKey, VapidSigner, VapidSubject};

struct Fixtures {
    ua: [u8; 65],
    sub: Subscription,
    signer: VapidSigner,
}

fn fixtures() -> Result<Fixtures, Box<dyn std::error::Error>> {
    let r = ReceiverKeys::generate()?;
    let sub = Subscription::new("https://push.example.net/p/1".parse()?, r.public_key(), r.auth())?;
    let signer = VapidSigner::new(Arc::new(VapidKey::generate()?), VapidSubject::new("mailto:b@example.com")?);
    Ok(Fixtures { ua: *r.public_key().as_bytes(), sub, signer })
}

fn bench(c: &mut Criterion) {
    let Fixtures { ua, sub, signer } = match fixtures() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot set up the benchmark: {e}");
            return;
        }
    };
    let payload = br#"{"title":"Hello","body":"A message of ordinary size for a notification."}"#;
    let now = SystemTime::now();

    // Each iteration returns its Result: criterion keeps it from being
    // optimised away, and a failure costs no more than a success would.
    c.bench_function("floor: p256 keygen + ecdh", |b| {
        b.iter(|| -> Result<u8, Unspecified> {
            let k = PrivateKey::generate(&ECDH_P256)?;
            black_box(k.compute_public_key()?);
            agree(&k, UnparsedPublicKey::new(&ECDH_P256, &ua), Unspecified, |s| Ok(s[0]))
        })
    });
    for encoding in [ContentEncoding::Aes128Gcm, ContentEncoding::AesGcm] {
        let opts = PushOptions { encoding, ..Default::default() };
        c.bench_function(&format!("message: {encoding} + headers, VAPID cached"), |b| {
            b.iter(|| request::build(&sub, Some(payload), &opts, Some(&signer), now))
        });
    }
    let opts = PushOptions::default();
    let private = signer.key().private_key_base64url();
    c.bench_function("message: aes128gcm + headers, VAPID signed each time", |b| {
        b.iter(|| {
            VapidKey::from_base64url(None, &private).map(|key| {
                let fresh = VapidSigner::new(Arc::new(key), signer.subject().clone());
                request::build(&sub, Some(payload), &opts, Some(&fresh), now)
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
