//! End-to-end tests: real `atoll` processes driven by clients we did not write (kubectl,
//! kube-rs). One test binary, a module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admission;
mod cluster;
mod dns;
mod durability;
mod eastwest;
mod gateway;
mod harness;
mod kubectl;
mod mcs_conformance;
mod peering;
mod placement;
mod python_client;
mod rbac;
mod registration;
mod sandbox;
mod services;
mod tour;
mod work;
