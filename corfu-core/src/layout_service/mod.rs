//! The layout service: Paxos acceptors on layout servers ([`acceptor`]),
//! their durable driver ([`service`]), and the client-side proposer
//! ([`proposer`]) that bootstraps a cluster and decides each next layout.

pub mod acceptor;
#[cfg(test)]
mod model;
pub mod proposer;
pub mod service;
