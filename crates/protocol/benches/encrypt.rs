//! Per-message CPU cost: encryption + headers, against the crypto floor of one
//! P-256 key generation plus one ECDH.

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::agreement::{agree, PrivateKey, UnparsedPublicKey, ECDH_P256};
use criterion::{criterion_group, criterion_main, Criterion};
use tocsin_protocol::ece::ReceiverKeys;
use tocsin_protocol::request::{self, PushOptions};
use tocsin_protocol::{ContentEncoding, Subscription, VapidKey, VapidSigner, VapidSubject};

fn bench(c: &mut Criterion) {
    let r = ReceiverKeys::generate().unwrap();
    let ua = *r.public_key().as_bytes();
    let sub = Subscription::new("https://push.example.net/p/1".parse().unwrap(), r.public_key(), r.auth()).unwrap();
    let signer =
        VapidSigner::new(Arc::new(VapidKey::generate().unwrap()), VapidSubject::new("mailto:b@example.com").unwrap());
    let payload = br#"{"title":"Hello","body":"A message of ordinary size for a notification."}"#;
    let now = SystemTime::now();

    c.bench_function("floor: p256 keygen + ecdh", |b| {
        b.iter(|| {
            let k = PrivateKey::generate(&ECDH_P256).unwrap();
            let _ = black_box(k.compute_public_key().unwrap());
            agree(&k, UnparsedPublicKey::new(&ECDH_P256, &ua), (), |s| Ok(black_box(s[0]))).unwrap()
        })
    });
    for encoding in [ContentEncoding::Aes128Gcm, ContentEncoding::AesGcm] {
        let opts = PushOptions { encoding, ..Default::default() };
        c.bench_function(&format!("message: {encoding} + headers, VAPID cached"), |b| {
            b.iter(|| request::build(&sub, Some(payload), &opts, Some(&signer), now).unwrap())
        });
    }
    let opts = PushOptions::default();
    c.bench_function("message: aes128gcm + headers, VAPID signed each time", |b| {
        b.iter(|| {
            let fresh = VapidSigner::new(
                Arc::new(VapidKey::from_base64url(None, &signer.key().private_key_base64url()).unwrap()),
                signer.subject().clone(),
            );
            request::build(&sub, Some(payload), &opts, Some(&fresh), now).unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
