//! Integration tests of the real `tocsin` binary, one module per concern,
//! in one test binary so that it is compiled and linked once. `common`
//! holds the helpers: the binary, a dev push service, a server on a fresh
//! SQLite file or PostgreSQL database, a private PostgreSQL cluster and a
//! small disk for the outage tests.

#[macro_use]
mod common;

mod ab;
mod adversarial;
mod apps;
mod audience;
mod backup;
mod config;
mod declarative;
mod devpush;
mod engine;
mod interop;
mod outage;
mod rules;
mod send;
mod server;
mod trust;
mod webhooks;
